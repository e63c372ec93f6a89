/**
 * Lines typed in a terminal, read the way the shell reads them: a line that leaves the command
 * unfinished (open quote, trailing `\` or `|`, an unclosed `if` or here-document…) is kept, and the
 * next line is read together with it, so `sh"ut` + Enter + `down"` is one word and a here-document
 * body fed to `sh` is checked with the command that reads it. Ctrl-C drops what was kept, as the
 * shell does. Lines of a here-document body are data until its delimiter: they are not re-read.
 *
 * Bounded: at most MAX_PENDING characters are kept; a longer command is read line by line and
 * marked uncertain.
 */
import { readShell, type ShellReading, type Uncertainty } from '../../../policies/shell.js';
import type { SubmittedLine } from './line-editor.js';

export const MAX_PENDING = 16_384;

export interface ShellLine {
  /** The text to check: the kept lines and this one. */
  text: string;
  shell: ShellReading;
  /** What the line editor could not follow. */
  uncertain: Uncertainty[];
  /** Call when the line was let through (a denied line never reached the shell). */
  accept(): void;
}

export class ShellLines {
  private pending = '';
  private heredoc: { delim: string; strip: boolean } | null = null;

  /** Whether the shell is waiting for more of a command. */
  get continuing(): boolean { return this.pending !== ''; }

  read(l: SubmittedLine): ShellLine {
    if (l.interrupted) { this.pending = ''; this.heredoc = null; }
    const uncertain: Uncertainty[] = [];
    if (l.truncated) uncertain.push({ what: 'a line longer than the gateway follows', scope: 'command' });
    else if (l.uncertain) uncertain.push({ what: 'editing keys the gateway does not follow (Tab, arrows, history search)', scope: 'command' });
    const h = this.heredoc;
    if (h && (h.strip ? l.line.replace(/^\t+/, '') : l.line) !== h.delim && this.pending.length + l.line.length < MAX_PENDING) {
      // A here-document body line: data until the delimiter line, which re-reads the whole command.
      const shell: ShellReading = { commands: [], uncertain: [], incomplete: true, heredoc: h };
      return { text: l.line, shell, uncertain, accept: () => { this.pending += `${l.line}\n`; } };
    }
    let full = `${this.pending}${l.line}\n`;
    if (full.length > MAX_PENDING) {
      uncertain.push({ what: 'a command spanning more lines than the gateway follows', scope: 'command' });
      full = `${l.line}\n`;
      this.pending = '';
      this.heredoc = null;
    }
    const shell = readShell(full, { interactive: true });
    return {
      text: full.slice(0, -1),
      shell,
      uncertain,
      accept: () => {
        this.pending = shell.incomplete ? full : '';
        this.heredoc = shell.incomplete ? shell.heredoc : null;
      },
    };
  }
}
