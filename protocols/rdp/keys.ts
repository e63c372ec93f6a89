/**
 * Keystrokes as text: RDP scancodes (set 1, US layout) and unicode events turned into what the
 * person typed, with modifiers (Ctrl/Alt/Win combinations as <C-c>, special keys as <Enter>...).
 */

const BASE: Record<number, [string, string]> = {
  0x02: ['1', '!'], 0x03: ['2', '@'], 0x04: ['3', '#'], 0x05: ['4', '$'], 0x06: ['5', '%'], 0x07: ['6', '^'], 0x08: ['7', '&'],
  0x09: ['8', '*'], 0x0a: ['9', '('], 0x0b: ['0', ')'], 0x0c: ['-', '_'], 0x0d: ['=', '+'],
  0x10: ['q', 'Q'], 0x11: ['w', 'W'], 0x12: ['e', 'E'], 0x13: ['r', 'R'], 0x14: ['t', 'T'], 0x15: ['y', 'Y'], 0x16: ['u', 'U'],
  0x17: ['i', 'I'], 0x18: ['o', 'O'], 0x19: ['p', 'P'], 0x1a: ['[', '{'], 0x1b: [']', '}'],
  0x1e: ['a', 'A'], 0x1f: ['s', 'S'], 0x20: ['d', 'D'], 0x21: ['f', 'F'], 0x22: ['g', 'G'], 0x23: ['h', 'H'], 0x24: ['j', 'J'],
  0x25: ['k', 'K'], 0x26: ['l', 'L'], 0x27: [';', ':'], 0x28: ["'", '"'], 0x29: ['`', '~'], 0x2b: ['\\', '|'],
  0x2c: ['z', 'Z'], 0x2d: ['x', 'X'], 0x2e: ['c', 'C'], 0x2f: ['v', 'V'], 0x30: ['b', 'B'], 0x31: ['n', 'N'], 0x32: ['m', 'M'],
  0x33: [',', '<'], 0x34: ['.', '>'], 0x35: ['/', '?'], 0x39: [' ', ' '],
};

const SPECIAL: Record<number, string> = {
  0x01: 'Esc', 0x0e: 'Backspace', 0x0f: 'Tab', 0x1c: 'Enter', 0x3b: 'F1', 0x3c: 'F2', 0x3d: 'F3', 0x3e: 'F4', 0x3f: 'F5',
  0x40: 'F6', 0x41: 'F7', 0x42: 'F8', 0x43: 'F9', 0x44: 'F10', 0x57: 'F11', 0x58: 'F12',
};
const EXTENDED: Record<number, string> = {
  0x1c: 'Enter', 0x48: 'Up', 0x50: 'Down', 0x4b: 'Left', 0x4d: 'Right', 0x47: 'Home', 0x4f: 'End', 0x49: 'PageUp',
  0x51: 'PageDown', 0x52: 'Insert', 0x53: 'Delete', 0x35: '/',
};

const MOD = { shiftL: 0x2a, shiftR: 0x36, ctrl: 0x1d, alt: 0x38, win: 0x5b, caps: 0x3a } as const;

/** Keeps modifier state across events and renders key presses as text. */
export class KeyTranslator {
  private shift = new Set<number>();
  private ctrl = false;
  private alt = false;
  private win = false;
  private caps = false;

  /** Text for one scancode event ('' for releases and modifiers). */
  scancode(code: number, release: boolean, extended: boolean): string {
    if (code === MOD.shiftL || code === MOD.shiftR) { if (release) this.shift.delete(code); else this.shift.add(code); return ''; }
    if (code === MOD.ctrl) { this.ctrl = !release; return ''; }
    if (code === MOD.alt) { this.alt = !release; return ''; }
    if (extended && (code === MOD.win || code === 0x5c)) { this.win = !release; return ''; }
    if (release) return '';
    if (code === MOD.caps) { this.caps = !this.caps; return ''; }
    const mods = `${this.ctrl ? 'C-' : ''}${this.alt ? 'A-' : ''}${this.win ? 'W-' : ''}`;
    if (extended) {
      const name = EXTENDED[code];
      if (!name) return `<${mods}0xe0${code.toString(16)}>`;
      return name.length === 1 && !mods ? name : `<${mods}${name}>`;
    }
    const special = SPECIAL[code];
    if (special) return `<${mods}${this.shift.size && !mods ? 'S-' : ''}${special}>`;
    const pair = BASE[code];
    if (!pair) return `<${mods}0x${code.toString(16)}>`;
    const letter = /[a-z]/.test(pair[0]);
    const shifted = this.shift.size > 0 !== (letter && this.caps);
    const ch = shifted ? pair[1] : pair[0];
    return mods ? `<${mods}${pair[0]}>` : ch;
  }

  unicode(code: number, release: boolean): string {
    if (release) return '';
    const s = String.fromCharCode(code);
    return this.ctrl || this.alt ? `<${this.ctrl ? 'C-' : ''}${this.alt ? 'A-' : ''}${s}>` : s;
  }
}
