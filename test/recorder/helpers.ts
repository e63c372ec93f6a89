/** Shared set-up for recorder tests: a temp dir, a real SQLite store, a recorder. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { openSqliteStore } from '../../proxy/store/sqlite.js';
import type { Store } from '../../proxy/store/types.js';
import type { Clock } from '../../policies/clock.js';
import { ManualClock } from '../../policies/clock.js';
import { createRecorder, type Recorder } from '../../recorder/index.js';

export interface Rig {
  dir: string;
  store: Store;
  clock: Clock;
  recorder: Recorder;
  log: Logger;
  /** Every log line written so far (JSON text). */
  logs: string[];
}

interface Teardownable { teardown(fn: () => unknown): void }

export async function rig(t: Teardownable, clock: Clock = new ManualClock()): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-rec-'));
  const store = await openSqliteStore(join(dir, 'store.sqlite'));
  const logs: string[] = [];
  const sink = new Writable({ write(chunk, _enc, cb) { logs.push(String(chunk)); cb(); } });
  const log = pino({ level: 'debug' }, sink);
  const recorder = createRecorder({ store, dir: join(dir, 'recordings'), clock, log });
  t.teardown(async () => {
    await recorder.closeAll();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, store, clock, recorder, log, logs };
}

export const META = { identity: 'alice@example.com', target: 'db1', role: 'admin', protocol: 'ssh' };

/** A rig on a ManualClock at start, with one session recording opened at start. */
export async function opened(t: Teardownable, sessionId: string, start: number, protocol = META.protocol) {
  const clock = new ManualClock(start);
  const r = await rig(t, clock);
  const rec = r.recorder.open(sessionId, { ...META, protocol, startedAt: start });
  return { clock, r, rec };
}
