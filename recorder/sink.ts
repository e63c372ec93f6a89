/**
 * One recording file: created exclusively, appended incrementally (buffered in memory for at most
 * FLUSH_MS or FLUSH_BYTES, then written), hashed as it is written, and sealed at close: fsync,
 * read-only, SHA-256 and size recorded in the store. verify() re-hashes the file later.
 */
import { createHash, randomUUID, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../policies/clock.js';
import type { RecordingRecord, Store } from '../proxy/store/types.js';

export const FLUSH_MS = 1000;
export const FLUSH_BYTES = 64 * 1024;

const fsyncP = promisify(fs.fsync);
const closeP = promisify(fs.close);
const chmodP = promisify(fs.chmod);

export interface SinkContext {
  store: Store;
  clock: Clock;
  log: Logger;
  /** The recordings root (absolute). */
  root: string;
  /** A recording file cannot be created or written (disk full, directory or file gone, I/O error). */
  onFailure?: (f: RecordingFailure) => void;
  /** Sealed recordings whose index row could not be written (the store was unavailable): Recorder.reindex() retries. */
  unindexed?: Map<string, RecordingRecord>;
}

export interface RecordingFailure {
  sessionId: string;
  /** Null when the file could not even be created. */
  recordingId: string | null;
  kind: RecordingKind;
  /** errno code (ENOSPC, EROFS, ENOENT, EIO…) or a short description. */
  code: string;
  message: string;
}

function failure(ctx: SinkContext, f: RecordingFailure): void {
  try { ctx.onFailure?.(f); } catch (e) { ctx.log.error({ err: (e as Error).message }, 'recording failure handler threw'); }
}

function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException)?.code ?? 'EIO';
}

/**
 * Call a store method now (so its effect is visible at once with a synchronous store) and turn any
 * failure, thrown or rejected, into a log call: recording never crashes a session.
 */
export function callStore(fn: () => Promise<unknown>, onError: (message: string) => void): Promise<void> {
  const fail = (err: unknown) => onError(err instanceof Error ? err.message : String(err));
  try {
    return fn().then(() => undefined, fail);
  } catch (err) {
    fail(err);
    return Promise.resolve();
  }
}

export type RecordingKind = 'cast' | 'queries' | 'events' | 'screen';

export class FileSink {
  readonly record: RecordingRecord;
  readonly path: string;
  private fd: number | null = null;
  private chunks: Buffer[] = [];
  private pending = 0;
  private timer: TimerHandle | null = null;
  private hash: Hash = createHash('sha256');
  private written = 0;
  private broken = false;
  private sealing: Promise<void> | null = null;
  private inserted: Promise<void>;
  private indexed = false;

  /**
   * Creates the file (exclusively) in dirAbs under a name derived from baseName; returns null and
   * logs when the file cannot be created (the session goes on; the error is loud in the log).
   */
  static create(ctx: SinkContext, sessionId: string, kind: RecordingKind, dirAbs: string, baseName: string, ext: string, taken: Set<string>): FileSink | null {
    try {
      fs.mkdirSync(dirAbs, { recursive: true, mode: 0o750 });
    } catch (err) {
      ctx.log.error({ sessionId, kind, err: (err as Error).message }, 'recording directory cannot be created');
      failure(ctx, { sessionId, recordingId: null, kind, code: codeOf(err), message: `the recording directory cannot be created (${codeOf(err)})` });
      return null;
    }
    for (let i = 1; i < 1000; i++) {
      const name = `${baseName}${i === 1 ? '' : `-${i}`}${ext}`;
      if (taken.has(name)) continue;
      const path = join(dirAbs, name);
      try {
        const fd = fs.openSync(path, 'wx', 0o640);
        taken.add(name);
        return new FileSink(ctx, sessionId, kind, path, fd);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
        ctx.log.error({ sessionId, kind, err: (err as Error).message }, 'recording file cannot be created');
        failure(ctx, { sessionId, recordingId: null, kind, code: codeOf(err), message: `the recording file cannot be created (${codeOf(err)})` });
        return null;
      }
    }
    ctx.log.error({ sessionId, kind }, 'recording file cannot be created: no free name');
    return null;
  }

  private constructor(private ctx: SinkContext, sessionId: string, kind: RecordingKind, path: string, fd: number) {
    this.path = path;
    this.fd = fd;
    this.record = {
      id: randomUUID(),
      sessionId,
      kind,
      path,
      state: 'open',
      sha256: null,
      bytes: 0,
      createdAt: ctx.clock.now(),
      sealedAt: null,
      cut: null,
    };
    this.inserted = callStore(() => ctx.store.insertRecording({ ...this.record }).then(() => { this.indexed = true; }), (err) => {
      ctx.log.error({ sessionId, recordingId: this.record.id, err }, 'recording cannot be indexed');
    });
  }

  get sealed(): boolean {
    return this.sealing !== null;
  }

  /** Append one line (a newline is added). Ignored once sealed. */
  appendLine(line: string): void {
    if (this.sealing) return;
    const buf = Buffer.from(line + '\n', 'utf8');
    this.chunks.push(buf);
    this.pending += buf.length;
    if (this.pending >= FLUSH_BYTES) this.flush();
    else if (!this.timer) this.timer = this.ctx.clock.setTimer(FLUSH_MS, () => { this.timer = null; this.flush(); });
  }

  /** Write what is buffered to the file now. */
  flush(): void {
    if (this.timer) {
      this.timer.cancel();
      this.timer = null;
    }
    if (this.chunks.length === 0) return;
    const buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = [];
    this.pending = 0;
    if (this.fd === null || this.broken) return;
    try {
      let off = 0;
      while (off < buf.length) off += fs.writeSync(this.fd, buf, off, buf.length - off);
      this.hash.update(buf);
      this.written += buf.length;
      // The directory (or the file) was removed under us: the bytes would go to an unlinked inode.
      if (fs.fstatSync(this.fd).nlink === 0) throw Object.assign(new Error('the recording file was removed'), { code: 'ENOENT' });
    } catch (err) {
      // Disk full, file gone or similar: say so loudly, seal what was written, let the gateway decide (recordings.onFailure).
      this.broken = true;
      this.record.cut = 'write_failed';
      this.ctx.log.error({ sessionId: this.record.sessionId, recordingId: this.record.id, err: (err as Error).message }, 'recording write failed; later data is lost');
      failure(this.ctx, { sessionId: this.record.sessionId, recordingId: this.record.id, kind: this.record.kind as RecordingKind, code: codeOf(err), message: `a recording write failed (${codeOf(err)}: ${(err as Error).message})` });
    }
  }

  /** A write failed: this file no longer records what happens. */
  get failed(): boolean {
    return this.broken;
  }

  /** Flush, fsync, close, make read-only and record the SHA-256. Idempotent; never throws. */
  seal(): Promise<void> {
    if (!this.sealing) this.sealing = this.doSeal();
    return this.sealing;
  }

  private async doSeal(): Promise<void> {
    this.flush();
    const fd = this.fd;
    this.fd = null;
    if (fd !== null) {
      try { await fsyncP(fd); } catch (err) {
        this.ctx.log.warn({ recordingId: this.record.id, err: (err as Error).message }, 'recording fsync failed');
        if (!this.broken) {
          this.broken = true;
          this.record.cut = 'write_failed';
          failure(this.ctx, { sessionId: this.record.sessionId, recordingId: this.record.id, kind: this.record.kind as RecordingKind, code: codeOf(err), message: `the recording could not be synced to disk (${codeOf(err)})` });
        }
      }
      try { await closeP(fd); } catch { /* already closed */ }
      try { await chmodP(this.path, 0o440); } catch { /* best effort */ }
    }
    const sealed: RecordingRecord = {
      ...this.record,
      state: 'sealed',
      sha256: this.hash.digest('hex'),
      bytes: this.written,
      sealedAt: this.ctx.clock.now(),
    };
    Object.assign(this.record, sealed);
    await this.inserted;
    try {
      if (this.indexed) await this.ctx.store.updateRecording({ ...sealed });
      else await this.ctx.store.insertRecording({ ...sealed });
    } catch (err) {
      this.ctx.log.error({ recordingId: this.record.id, err: (err as Error)?.message }, 'recording seal cannot be stored');
      this.ctx.unindexed?.set(sealed.id, { ...sealed });
    }
  }
}
