/**
 * Follows the legacy scp protocol (`scp -O`, or old clients) in the data direction of an exec
 * channel running `scp -t` (upload: the client sends) or `scp -f` (download: the target sends):
 * control lines C<mode> <size> <name>, D.../E (directories), T... (times), then <size> bytes and a
 * status byte. Reports each file with its path (the name the scp protocol carries, below any
 * directories it sent; the command's own path argument is `base`), size and SHA-256.
 */
import { createHash, type Hash } from 'node:crypto';
import type { FileTransfer } from './sftp.js';

/** Parse the scp command an exec channel runs: null when it is not scp. */
export function scpMode(command: string): { direction: 'upload' | 'download'; path: string } | null {
  const argv = command.trim().split(/\s+/);
  if (!argv.length || !/(^|\/)scp$/.test(argv[0]!)) return null;
  let dir: 'upload' | 'download' | null = null;
  const rest: string[] = [];
  for (const a of argv.slice(1)) {
    if (a === '--') continue;
    if (/^-[A-Za-z]+$/.test(a)) { if (a.includes('t')) dir = 'upload'; if (a.includes('f')) dir = 'download'; continue; }
    rest.push(a);
  }
  if (!dir) return null;
  return { direction: dir, path: rest.join(' ').replace(/^'(.*)'$/, '$1') };
}

export class ScpInspector {
  private state: 'line' | 'data' | 'status' = 'line';
  private line: number[] = [];
  private dirs: string[] = [];
  private file: { name: string; size: number; left: number; hash: Hash } | null = null;
  broken = false;

  constructor(private readonly direction: 'upload' | 'download', readonly base: string, private readonly onTransfer: (t: FileTransfer) => void) {}

  feed(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && !this.broken) {
      if (this.state === 'data' && this.file) {
        const n = Math.min(this.file.left, chunk.length - i);
        this.file.hash.update(chunk.subarray(i, i + n));
        this.file.left -= n;
        i += n;
        if (this.file.left === 0) this.state = 'status';
        continue;
      }
      if (this.state === 'status') {
        i++; // the \0 that ends the file data
        const f = this.file!;
        const path = [...this.dirs, f.name].join('/');
        this.onTransfer({ path, direction: this.direction, size: f.size, sha256: f.hash.digest('hex'), complete: true });
        this.file = null;
        this.state = 'line';
        continue;
      }
      const b = chunk[i++]!;
      if (this.line.length === 0 && (b === 0 || b === 1 || b === 2)) {
        // An ack/error byte from the peer sharing this direction is not part of the stream we follow.
        if (b !== 0) { while (i < chunk.length && chunk[i] !== 0x0a) i++; i++; }
        continue;
      }
      if (b !== 0x0a) {
        if (this.line.length > 4096) { this.broken = true; return; }
        this.line.push(b);
        continue;
      }
      const text = Buffer.from(this.line).toString('utf8');
      this.line = [];
      this.control(text);
    }
  }

  private control(text: string): void {
    const m = /^C([0-7]{4}) (\d+) (.+)$/.exec(text);
    if (m) {
      const size = Number(m[2]);
      const name = m[3]!;
      this.file = { name, size, left: size, hash: createHash('sha256') };
      this.state = size === 0 ? 'status' : 'data';
      return;
    }
    const d = /^D([0-7]{4}) \d+ (.+)$/.exec(text);
    if (d) { this.dirs.push(d[2]!); return; }
    if (text === 'E') { this.dirs.pop(); return; }
    if (/^T\d+ \d+ \d+ \d+$/.test(text)) return;
    this.broken = true;
  }
}
