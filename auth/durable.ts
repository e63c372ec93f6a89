/**
 * Files whose loss cannot be undone (the gateway key, CA and host keys, a rotated password) are on
 * the disk, directory entry included, before anything relies on them. Without fsync a power cut, or
 * a file system the kernel turns read-only (ext4 errors=remount-ro), leaves them empty: what is
 * still only in the page cache then is never written.
 */
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname } from 'node:path';

/** fsync each path (a file or a directory). A directory some file system cannot sync is skipped. */
export function syncPaths(paths: string[]): void {
  for (const p of paths) {
    const fd = openSync(p, 'r');
    try {
      fsyncSync(fd);
    } catch (e) {
      if (!['EINVAL', 'EISDIR', 'EBADF'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * fsync one file off the event loop (libuv's thread pool), with group commit: at most one fsync is
 * in flight; every request made while it runs is served by the single next one, which starts when
 * it ends (an fsync only promises what was written before it started). So a burst of N requests
 * costs two fsyncs, not N, and never blocks the event loop.
 */
export class GroupSync {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;
  /** fsyncs done (tests read it). */
  syncs = 0;

  constructor(private readonly path: string) {}

  sync(): Promise<void> {
    if (!this.running) return (this.running = this.run());
    // One queued fsync for everyone who asked while this one runs.
    this.next ??= this.running.catch(() => undefined).then(() => {
      this.next = null;
      return (this.running = this.run());
    });
    return this.next;
  }

  private async run(): Promise<void> {
    try {
      const fh = await open(this.path, 'r');
      try { await fh.sync(); } finally { await fh.close(); }
      this.syncs++;
    } finally {
      this.running = null;
    }
  }
}

/**
 * Write `data` to `path`, synced, then sync its directory. `exclusive`: the file must not exist yet
 * (EEXIST otherwise; it is created with `mode`). Else the file is replaced atomically (a temp file
 * beside it, synced, renamed over it). A failed write leaves no partial file.
 */
export function writeFileDurable(path: string, data: string | Buffer, opts: { mode?: number; exclusive?: boolean } = {}): void {
  const mode = opts.mode ?? 0o600;
  const target = opts.exclusive ? path : `${path}.${process.pid}.tmp`;
  const fd = openSync(target, opts.exclusive ? 'wx' : 'w', mode);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(target); } catch { /* gone */ }
    throw e;
  }
  closeSync(fd);
  if (!opts.exclusive) renameSync(target, path);
  syncPaths([dirname(path)]);
}
