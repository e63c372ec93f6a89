/**
 * Files whose loss cannot be undone (the gateway key, CA and host keys, a rotated password) are on
 * the disk, directory entry included, before anything relies on them. Without fsync a power cut, or
 * a file system the kernel turns read-only (ext4 errors=remount-ro), leaves them empty: what is
 * still only in the page cache then is never written.
 */
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
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
