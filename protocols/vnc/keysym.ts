/** X11 keysyms (as RFB KeyEvents carry them) to text for the keystroke log. */

const NAMED: Record<number, string> = {
  0xff08: '<BackSpace>', 0xff09: '\t', 0xff0d: '\n', 0xff8d: '\n', 0xff1b: '<Esc>', 0xffff: '<Delete>',
  0xff50: '<Home>', 0xff51: '<Left>', 0xff52: '<Up>', 0xff53: '<Right>', 0xff54: '<Down>', 0xff55: '<PageUp>',
  0xff56: '<PageDown>', 0xff57: '<End>', 0xff63: '<Insert>',
};
for (let i = 1; i <= 12; i++) NAMED[0xffbd + i] = `<F${i}>`;

export const MODIFIERS: Record<number, 'Shift' | 'Ctrl' | 'Alt' | 'Super'> = {
  0xffe1: 'Shift', 0xffe2: 'Shift', 0xffe3: 'Ctrl', 0xffe4: 'Ctrl', 0xffe9: 'Alt', 0xffea: 'Alt',
  0xffe7: 'Alt', 0xffe8: 'Alt', 0xffeb: 'Super', 0xffec: 'Super', 0xfe03: 'Alt',
};

/** The character a keysym types, or null for keys without one. */
export function keysymChar(k: number): string | null {
  if ((k >= 0x20 && k <= 0x7e) || (k >= 0xa0 && k <= 0xff)) return String.fromCharCode(k);
  if (k >= 0x01000100 && k <= 0x0110ffff) {
    try { return String.fromCodePoint(k - 0x01000000); } catch { return null; }
  }
  if (k >= 0xffb0 && k <= 0xffb9) return String.fromCharCode(0x30 + k - 0xffb0);
  return null;
}

/** Tracks modifier state and turns key presses into log text ("ls\n", "<Ctrl+c>"). */
export class KeyLog {
  private held = new Set<string>();

  /** Text for one KeyEvent ('' for releases and bare modifiers). */
  key(down: boolean, keysym: number): string {
    const mod = MODIFIERS[keysym];
    if (mod) {
      if (down) this.held.add(mod); else this.held.delete(mod);
      return '';
    }
    if (!down) return '';
    const ch = keysymChar(keysym);
    const mods = ['Ctrl', 'Alt', 'Super'].filter((m) => this.held.has(m));
    if (ch !== null) return mods.length ? `<${mods.join('+')}+${ch}>` : ch;
    const named = NAMED[keysym];
    if (named) return mods.length ? `<${mods.join('+')}+${named.replace(/[<>]/g, '') || JSON.stringify(named)}>` : named;
    return `<0x${keysym.toString(16)}>`;
  }
}
