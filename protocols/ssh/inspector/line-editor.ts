/**
 * Reconstructs the command line a person types into a shell from the keystroke stream, so rules can
 * be checked before Enter reaches the target.
 *
 * Followed: printable characters (UTF-8), backspace/DEL, Ctrl-U (kill line), Ctrl-W (kill word),
 * Ctrl-C (abandon line), Enter (submit), bracketed paste markers.
 * Not followed (a documented limit): cursor movement, history recall, tab completion, Ctrl-R and
 * other editing keys. When one of those was used the line is marked `uncertain`: the text we know
 * is still checked, but the line the shell actually runs may differ.
 *
 * Bounded: every key costs O(1) amortised (Ctrl-W scans back over the one word it erases, DEL drops
 * one code point), and a line keeps at most its last MAX_LINE characters (code points, whatever
 * their UTF-8 length); a longer line is reported `truncated` (and uncertain), it does not grow.
 */
import { StringDecoder } from 'node:string_decoder';

/** Characters (code points) of one line the editor follows; beyond it the line is truncated. */
export const MAX_LINE = 16_384;

export interface SubmittedLine {
  line: string;
  uncertain: boolean;
  /** More than MAX_LINE characters were typed: `line` holds the last MAX_LINE of them. */
  truncated: boolean;
  /** Offset in the chunk of the Enter key that submitted it. */
  at: number;
  /** Offset just after the Enter (after the \n of a \r\n pair). */
  end: number;
  /** Ctrl-C was pressed since the previous line: the shell dropped what it had (continuation lines too). */
  interrupted: boolean;
}

/** What JavaScript's \s matches: the word separators of Ctrl-W. */
function isSpace(c: number): boolean {
  return (c >= 0x09 && c <= 0x0d) || c === 0x20 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a)
    || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

export class LineEditor {
  /**
   * Code points typed, oldest first; capacity doubles up to 2 × MAX_LINE, then the older half is
   * dropped in one move (so a key never copies the line).
   */
  private cps = new Uint32Array(64);
  private len = 0;
  /** Characters of this line were dropped (it was longer than the editor keeps). */
  private lost = false;
  private uncertain = false;
  private interrupted = false;
  private esc: 'none' | 'esc' | 'csi' | 'ss3' = 'none';
  private csi = '';
  private readonly utf8 = new StringDecoder('utf8');
  private utf8Pending = false;

  get current(): string {
    const from = Math.max(0, this.len - MAX_LINE);
    let s = '';
    for (let i = from; i < this.len; i += 4096) s += String.fromCodePoint(...this.cps.subarray(i, Math.min(this.len, i + 4096)));
    return s;
  }

  get isUncertain(): boolean { return this.uncertain; }
  get isTruncated(): boolean { return this.lost || this.len > MAX_LINE; }

  reset(): void {
    this.len = 0;
    this.lost = false;
    this.uncertain = false;
    if (this.cps.length > 64) this.cps = new Uint32Array(64);
  }

  /** Feed keystrokes; returns each line submitted in this chunk with the offset of its Enter. */
  feed(chunk: Buffer): SubmittedLine[] {
    const out: SubmittedLine[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (this.esc === 'esc') {
        if (b === 0x5b) { this.esc = 'csi'; this.csi = ''; continue; }
        if (b === 0x4f) { this.esc = 'ss3'; continue; }
        this.esc = 'none';
        this.uncertain = true; // Alt-key editing (Alt-B, Alt-D, ...)
        continue;
      }
      if (this.esc === 'csi') {
        if (b >= 0x40 && b <= 0x7e) {
          const seq = this.csi + String.fromCharCode(b);
          this.esc = 'none';
          if (seq === '200~' || seq === '201~') continue; // bracketed paste start/end
          this.uncertain = true; // arrows, Home/End, Delete...
        } else if (this.csi.length < 32) {
          this.csi += String.fromCharCode(b);
        } else {
          this.esc = 'none';
          this.uncertain = true;
        }
        continue;
      }
      if (this.esc === 'ss3') { this.esc = 'none'; this.uncertain = true; continue; }
      if (b >= 0x80) {
        // A run of UTF-8 bytes: decoded together (a character split across chunks waits in the decoder).
        let j = i + 1;
        while (j < chunk.length && chunk[j]! >= 0x80) j++;
        this.addText(this.utf8.write(chunk.subarray(i, j)));
        this.utf8Pending = true;
        i = j - 1;
        continue;
      }
      switch (b) {
        case 0x0d: case 0x0a:
          this.flushUtf8();
          {
            const at = i;
            // \r\n from some terminals: the \n is part of the same Enter.
            if (b === 0x0d && chunk[i + 1] === 0x0a) i++;
            out.push({ line: this.current, uncertain: this.uncertain, truncated: this.isTruncated, at, end: i + 1, interrupted: this.interrupted });
            this.interrupted = false;
          }
          this.reset();
          continue;
        case 0x7f: case 0x08: this.flushUtf8(); if (this.len > 0) this.len--; continue;
        case 0x15: this.dropUtf8(); this.len = 0; this.lost = false; continue; // Ctrl-U
        case 0x17: this.flushUtf8(); this.killWord(); continue; // Ctrl-W
        case 0x03: this.dropUtf8(); this.reset(); this.interrupted = true; continue; // Ctrl-C
        case 0x1b: this.flushUtf8(); this.esc = 'esc'; continue;
        case 0x09: this.uncertain = true; continue; // Tab completion
        default:
          if (b < 0x20) { if (b !== 0x04) this.uncertain = true; continue; } // Ctrl-A/E/K/R/Y...
          this.flushUtf8();
          this.add(b);
      }
    }
    return out;
  }

  /** Ctrl-W (unix-word-rubout): the blanks before the cursor, then the word before them. */
  private killWord(): void {
    while (this.len > 0 && isSpace(this.cps[this.len - 1]!)) this.len--;
    while (this.len > 0 && !isSpace(this.cps[this.len - 1]!)) this.len--;
  }

  private add(cp: number): void {
    if (this.len === this.cps.length) {
      if (this.len < 2 * MAX_LINE) {
        const bigger = new Uint32Array(Math.min(2 * MAX_LINE, this.len * 2));
        bigger.set(this.cps);
        this.cps = bigger;
      } else {
        // Keep the last MAX_LINE characters; the line is now known to be incomplete.
        this.cps.copyWithin(0, this.len - MAX_LINE, this.len);
        this.len = MAX_LINE;
        this.lost = true;
      }
    }
    this.cps[this.len++] = cp;
    if (this.len > MAX_LINE) this.uncertain = true;
  }

  private addText(s: string): void {
    for (const ch of s) this.add(ch.codePointAt(0)!);
  }

  /** A control key ends any partial UTF-8 character: it stands as U+FFFD, as before. */
  private flushUtf8(): void {
    if (!this.utf8Pending) return;
    this.utf8Pending = false;
    this.addText(this.utf8.end());
  }

  private dropUtf8(): void {
    if (!this.utf8Pending) return;
    this.utf8Pending = false;
    this.utf8.end();
  }
}
