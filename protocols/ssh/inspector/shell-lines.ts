/**
 * Lines typed in a terminal, read the way the shell reads them: a line that leaves the command
 * unfinished (open quote, trailing `\` or `|`, an unclosed `if` or here-document…) is kept, and the
 * next line is read together with it, so `sh"ut` + Enter + `down"` is one word and a here-document
 * body fed to `sh` is checked with the command that reads it. Ctrl-C drops what was kept, as the
 * shell does. Lines of a here-document body are data until its delimiter: they are not re-read.
 *
 * Bounded: at most MAX_PENDING characters are kept. Past that the gateway no longer knows where
 * the shell's command ends: every line is read on its own and marked uncertain until Ctrl-C (or
 * the delimiter of the here-document it was in).
 */
import { readShell, type ShellReading, type Uncertainty } from '../../../policies/shell.js';
import type { SubmittedLine } from './line-editor.js';

export const MAX_PENDING = 16_384;
const LOST: Uncertainty = { what: 'a command spanning more lines than the gateway follows (Ctrl-C starts afresh)', scope: 'command' };

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
  /** Lost track after a command longer than MAX_PENDING (and the here-document it was in, if any). */
  private lost: { heredoc: { delim: string; strip: boolean } | null } | null = null;

  /** Whether the shell is waiting for more of a command. */
  get continuing(): boolean { return this.pending !== ''; }

  read(l: SubmittedLine): ShellLine {
    if (l.interrupted) { this.pending = ''; this.heredoc = null; this.lost = null; }
    const uncertain: Uncertainty[] = [];
    if (l.truncated) uncertain.push({ what: 'a line longer than the gateway follows', scope: 'command' });
    else if (l.uncertain) uncertain.push({ what: 'editing keys the gateway does not follow (Tab, arrows, history search)', scope: 'command' });
    const isDelim = (h: { delim: string; strip: boolean }) => (h.strip ? l.line.replace(/^\t+/, '') : l.line) === h.delim;
    if (this.lost) {
      uncertain.push(LOST);
      const lost = this.lost;
      const shell = readShell(`${l.line}\n`, { interactive: true });
      return { text: l.line, shell, uncertain, accept: () => { if (lost.heredoc && isDelim(lost.heredoc)) this.lost = null; } };
    }
    const h = this.heredoc;
    if (h && !isDelim(h) && this.pending.length + l.line.length < MAX_PENDING) {
      // A here-document body line: data until the delimiter line, which re-reads the whole command.
      const shell: ShellReading = { commands: [], uncertain: [], incomplete: true, heredoc: h };
      return { text: l.line, shell, uncertain, accept: () => { this.pending += `${l.line}\n`; } };
    }
    const full = `${this.pending}${l.line}\n`;
    if (full.length > MAX_PENDING) {
      uncertain.push(LOST);
      const heredoc = h && !isDelim(h) ? h : null;
      const shell = readShell(`${l.line}\n`, { interactive: true });
      return {
        text: l.line, shell, uncertain,
        accept: () => { this.pending = ''; this.heredoc = null; this.lost = { heredoc }; },
      };
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
