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

  /**
   * Creates the file (exclusively) in dirAbs under a name derived from baseName; returns null and
   * logs when the file cannot be created (the session goes on; the error is loud in the log).
   */
  static create(ctx: SinkContext, sessionId: string, kind: RecordingKind, dirAbs: string, baseName: string, ext: string, taken: Set<string>): FileSink | null {
    try {
      fs.mkdirSync(dirAbs, { recursive: true, mode: 0o750 });
    } catch (err) {
      ctx.log.error({ sessionId, kind, err: (err as Error).message }, 'recording directory cannot be created');
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
    };
    this.inserted = callStore(() => ctx.store.insertRecording({ ...this.record }), (err) => {
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
    } catch (err) {
      // Disk full or similar: keep the session alive, say so loudly, and seal what was written.
      this.broken = true;
      this.ctx.log.error({ sessionId: this.record.sessionId, recordingId: this.record.id, err: (err as Error).message }, 'recording write failed; later data is lost');
    }
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
      await this.ctx.store.updateRecording({ ...sealed });
    } catch (err) {
      this.ctx.log.error({ recordingId: this.record.id, err: (err as Error)?.message }, 'recording seal cannot be stored');
    }
  }
}
