/**
 * The recorder: what a session produced, written incrementally, sealed with SHA-256, indexed in
 * the store, and fanned out live.
 *
 *   const recorder = createRecorder({ store, dir, clock, log });
 *   const rec = recorder.open(sessionId, { identity, target, role, protocol, startedAt });
 *   const cast = rec.cast({ width: 80, height: 24, env: { TERM: 'xterm' } });
 *   cast.output(buf); cast.input(buf); cast.resize(100, 30); cast.marker('sudo');
 *   const h = rec.queries().statement({ statement: 'SELECT 1', kind: 'SELECT' }); h.finish({ rows: 1 });
 *   rec.events().event('file.upload', { path: '/tmp/x', bytes: 12 });
 *   await rec.close();                       // seals every file; live watchers get an 'end' frame
 *   await recorder.verify(recordingId);      // re-hashes the file against the seal
 *
 * Files: <dir>/<yyyy>/<mm>/<sessionId>/{<name>.cast, queries.ndjson, events.ndjson, screen.ndjson};
 * RecordingRecord.path is the file's absolute path (read()/verify() refuse paths outside dir).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, fsyncSync, mkdirSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { chmod, stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Clock } from '../policies/clock.js';
import type { RecordingRecord, Store } from '../proxy/store/types.js';
import type { LiveBus, SessionRecording } from './types.js';
import { createLiveBus, MemoryLiveBus } from './live.js';
import { Session, type SessionMeta } from './session.js';
import type { RecordingFailure } from './sink.js';

export type { RecordingFailure } from './sink.js';

export type * from './types.js';
export { replayCast, verifyCastText, castTime, type CastHeader, type CastEvent, type CastCheck } from './cast.js';
export { createLiveBus, MemoryLiveBus } from './live.js';
export { redactStatement } from './redact.js';
export type { SessionMeta } from './session.js';

export interface VerifyResult {
  ok: boolean;
  /** SHA-256 recorded at the seal (null: not sealed or unknown recording). */
  expected: string | null;
  /** SHA-256 of the file now (null: file missing or unreadable). */
  actual: string | null;
  detail: string;
}

export interface Recorder {
  /** Open (or return the still-open) recording of a session. Files are created on first use. */
  open(sessionId: string, meta: SessionMeta): SessionRecording;
  /** In-process live fan-out; callbacks are synchronous and must not block. */
  live: LiveBus;
  /** Re-hash a recording's file and compare with its seal. Never throws. */
  verify(recordingId: string): Promise<VerifyResult>;
  /** The recording's file as a stream (for replay / download). Rejects if unknown or missing. */
  read(recordingId: string): Promise<NodeJS.ReadableStream>;
  /** Absolute path of a recording's file (null if unknown or outside the recordings dir). */
  pathOf(recordingId: string): Promise<string | null>;
  /** Close every open session recording (gateway shutdown). */
  closeAll(): Promise<void>;
  /**
   * After a crash: seal, as they are on disk, the recordings the store still lists as 'open' whose
   * session is not open in this recorder and not live according to isLive (several gateways: say
   * which sessions are another gateway's). Files outside dir are left alone; missing files are
   * counted. Call at start-up, before new sessions.
   */
  sealOrphans(isLive?: (sessionId: string) => boolean | Promise<boolean>, opts?: { cut?: string }): Promise<{ sealed: number; missing: number; skipped: number }>;
  /**
   * Can a recording be written now? Creates, writes, syncs and removes a small file in the
   * recordings directory (synchronously; a few system calls). Never throws.
   */
  probe(): { ok: true } | { ok: false; code: string; message: string };
  /** Store the seals that could not be stored when their recordings were sealed; returns how many are still unstored. */
  reindex(): Promise<number>;
}

/** Parse an NDJSON recording (queries, events, screen); a last line torn by a crash is dropped. */
export function parseNdjson(text: string): Record<string, unknown>[] {
  const lines = text.split('\n');
  const last = lines.pop();
  const out: Record<string, unknown>[] = [];
  lines.forEach((l, i) => {
    try {
      out.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      throw new Error(`NDJSON line ${i + 1}: not valid JSON`);
    }
  });
  if (last) {
    try { out.push(JSON.parse(last) as Record<string, unknown>); } catch { /* torn */ }
  }
  return out;
}

export function createRecorder(opts: { store: Store; dir: string; clock: Clock; log: Logger; live?: MemoryLiveBus; onFailure?: (f: RecordingFailure) => void }): Recorder {
  const root = resolve(opts.dir);
  const log = opts.log;
  const live = opts.live ?? createLiveBus(log);
  const open = new Map<string, Session>();
  const unindexed = new Map<string, RecordingRecord>();
  const ctx = { store: opts.store, clock: opts.clock, log, root, live, onFailure: opts.onFailure, unindexed };

  async function locate(recordingId: string): Promise<{ rec: RecordingRecord | null; path: string | null }> {
    const rec = typeof recordingId === 'string' && recordingId ? await opts.store.getRecording(recordingId) : null;
    if (!rec) return { rec: null, path: null };
    const path = resolve(root, rec.path);
    const rel = relative(root, path);
    if (rel.startsWith('..') || isAbsolute(rel)) return { rec, path: null };
    return { rec, path };
  }

  async function hashFile(path: string): Promise<{ sha256: string; bytes: number }> {
    const h = createHash('sha256');
    let bytes = 0;
    for await (const chunk of createReadStream(path)) {
      h.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
    return { sha256: h.digest('hex'), bytes };
  }

  return {
    live,
    open(sessionId, meta) {
      const existing = open.get(sessionId);
      if (existing && !existing.closed) return existing;
      live.begin(sessionId);
      const s: Session = new Session(ctx, sessionId, meta, () => {
        if (open.get(sessionId) === s) open.delete(sessionId);
      });
      open.set(sessionId, s);
      return s;
    },
    async verify(recordingId) {
      let found: { rec: RecordingRecord | null; path: string | null };
      try {
        found = await locate(recordingId);
      } catch (err) {
        return { ok: false, expected: null, actual: null, detail: `store error: ${(err as Error).message}` };
      }
      const { rec, path } = found;
      if (!rec) return { ok: false, expected: null, actual: null, detail: 'no such recording' };
      if (!path) return { ok: false, expected: rec.sha256, actual: null, detail: 'recording path is outside the recordings directory' };
      let actual: { sha256: string; bytes: number };
      try {
        actual = await hashFile(path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        return { ok: false, expected: rec.sha256, actual: null, detail: code === 'ENOENT' ? 'recording file is missing' : `recording file unreadable (${code ?? 'error'})` };
      }
      if (rec.state !== 'sealed' || !rec.sha256) {
        return { ok: false, expected: null, actual: actual.sha256, detail: 'recording is not sealed yet' };
      }
      if (actual.sha256 !== rec.sha256) {
        return {
          ok: false, expected: rec.sha256, actual: actual.sha256,
          detail: `recording was modified after sealing (sealed ${rec.bytes} bytes, now ${actual.bytes} bytes)`,
        };
      }
      if (actual.bytes !== rec.bytes) {
        return { ok: false, expected: rec.sha256, actual: actual.sha256, detail: `size differs from the seal (${rec.bytes} vs ${actual.bytes})` };
      }
      return { ok: true, expected: rec.sha256, actual: actual.sha256, detail: `sealed ${rec.bytes} bytes intact` };
    },
    async read(recordingId) {
      const { rec, path } = await locate(recordingId);
      if (!rec) throw new Error('no such recording');
      if (!path) throw new Error('recording path is outside the recordings directory');
      try {
        await stat(path);
      } catch {
        throw new Error('recording file is missing');
      }
      return createReadStream(path);
    },
    async pathOf(recordingId) {
      return (await locate(recordingId)).path;
    },
    async closeAll() {
      await Promise.allSettled(Array.from(open.values()).map((s) => s.close()));
    },
    async reindex() {
      for (const [id, rec] of [...unindexed]) {
        try {
          if (await opts.store.getRecording(id)) await opts.store.updateRecording(rec);
          else await opts.store.insertRecording(rec);
          unindexed.delete(id);
        } catch (err) {
          log.warn({ recordingId: id, err: (err as Error).message }, 'recording seal still cannot be stored');
        }
      }
      return unindexed.size;
    },
    probe() {
      const file = resolve(root, `.probe-${randomBytes(6).toString('hex')}`);
      let fd: number | null = null;
      try {
        mkdirSync(root, { recursive: true, mode: 0o750 });
        fd = openSync(file, 'wx', 0o600);
        // As much as a busy second of a session's recording: a nearly full disk fails here too.
        const block = Buffer.alloc(64 * 1024, 0x20);
        writeSync(fd, block, 0, block.length);
        fsyncSync(fd);
        return { ok: true };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
        return { ok: false, code, message: `recordings cannot be written in ${root} (${code})` };
      } finally {
        if (fd !== null) try { closeSync(fd); } catch { /* gone */ }
        try { unlinkSync(file); } catch { /* never created */ }
      }
    },
    async sealOrphans(isLive, sealOpts = {}) {
      const result = { sealed: 0, missing: 0, skipped: 0 };
      for (const rec of await opts.store.listRecordings()) {
        if (rec.state !== 'open') continue;
        const mine = open.get(rec.sessionId);
        if ((mine && !mine.closed) || (isLive && (await isLive(rec.sessionId)))) {
          result.skipped++;
          continue;
        }
        const { path } = await locate(rec.id);
        if (!path) {
          result.skipped++;
          continue;
        }
        let h: { sha256: string; bytes: number };
        try {
          h = await hashFile(path);
        } catch {
          result.missing++;
          log.warn({ recordingId: rec.id, sessionId: rec.sessionId }, 'open recording has no file; left unsealed');
          continue;
        }
        await chmod(path, 0o440).catch(() => undefined);
        try {
          await opts.store.updateRecording({ ...rec, state: 'sealed', sha256: h.sha256, bytes: h.bytes, sealedAt: opts.clock.now(), cut: rec.cut ?? sealOpts.cut ?? null });
        } catch (err) {
          log.error({ recordingId: rec.id, err: (err as Error)?.message }, 'recovered recording seal cannot be stored');
          continue;
        }
        log.warn({ recordingId: rec.id, sessionId: rec.sessionId, bytes: h.bytes }, 'sealed a recording left open by a crash');
        result.sealed++;
      }
      return result;
    },
  };
}
