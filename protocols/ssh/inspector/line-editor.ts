/**
 * Reconstructs the command line a person types into a shell from the keystroke stream, so rules can
 * be checked before Enter reaches the target.
 *
 * Followed: printable characters (UTF-8), backspace/DEL, Ctrl-U (kill line), Ctrl-W (kill word),
 * Ctrl-C (abandon line), Enter (submit), bracketed paste markers.
 * Not followed (a documented limit): cursor movement, history recall, tab completion, Ctrl-R and
 * other editing keys. When one of those was used the line is marked `uncertain`: the text we know
 * is still checked, but the line the shell actually runs may differ.
 */

export interface SubmittedLine {
  line: string;
  uncertain: boolean;
  /** Offset in the chunk of the Enter key that submitted it. */
  at: number;
  /** Offset just after the Enter (after the \n of a \r\n pair). */
  end: number;
}

export class LineEditor {
  private buf = '';
  private uncertain = false;
  private esc: 'none' | 'esc' | 'csi' | 'ss3' = 'none';
  private csi = '';
  private utf8 = Buffer.alloc(0);

  get current(): string { return this.buf; }
  get isUncertain(): boolean { return this.uncertain; }

  reset(): void { this.buf = ''; this.uncertain = false; }

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
      switch (b) {
        case 0x0d: case 0x0a:
          this.flushUtf8();
          {
            const at = i;
            // \r\n from some terminals: the \n is part of the same Enter.
            if (b === 0x0d && chunk[i + 1] === 0x0a) i++;
            out.push({ line: this.buf, uncertain: this.uncertain, at, end: i + 1 });
          }
          this.reset();
          continue;
        case 0x7f: case 0x08: this.flushUtf8(); this.buf = [...this.buf].slice(0, -1).join(''); continue;
        case 0x15: this.utf8 = Buffer.alloc(0); this.buf = ''; continue; // Ctrl-U
        case 0x17: this.flushUtf8(); this.buf = this.buf.replace(/\S+\s*$/, ''); continue; // Ctrl-W
        case 0x03: this.utf8 = Buffer.alloc(0); this.reset(); continue; // Ctrl-C
        case 0x1b: this.flushUtf8(); this.esc = 'esc'; continue;
        case 0x09: this.uncertain = true; continue; // Tab completion
        default:
          if (b < 0x20) { if (b !== 0x04) this.uncertain = true; continue; } // Ctrl-A/E/K/R/Y...
          if (b >= 0x80) { this.utf8 = Buffer.concat([this.utf8, Buffer.from([b])]); this.tryUtf8(); continue; }
          this.flushUtf8();
          this.buf += String.fromCharCode(b);
          if (this.buf.length > 16_384) { this.buf = this.buf.slice(-16_384); this.uncertain = true; }
      }
    }
    return out;
  }

  private tryUtf8(): void {
    const s = this.utf8.toString('utf8');
    if (!s.includes('\ufffd')) { this.buf += s; this.utf8 = Buffer.alloc(0); }
    else if (this.utf8.length >= 4) this.flushUtf8();
  }

  private flushUtf8(): void {
    if (this.utf8.length) { this.buf += this.utf8.toString('utf8'); this.utf8 = Buffer.alloc(0); }
  }
}
