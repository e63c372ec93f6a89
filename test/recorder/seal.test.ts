import t from 'tap';
import { createHash } from 'node:crypto';
import { appendFileSync, chmodSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ManualClock } from '../../policies/clock.js';
import { createRecorder, parseNdjson, replayCast } from '../../recorder/index.js';
import { opened, rig, META } from './helpers.js';

const T0 = Date.UTC(2026, 0, 5, 8, 30, 0);

async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(Buffer.from(c as Buffer));
  return Buffer.concat(parts);
}

t.test('close seals every file: SHA-256, size, state, read-only; verify passes', async (t) => {
  const { clock, r, rec } = await opened(t, 'sess-seal', T0, 'postgres');
  const cast = rec.cast({ width: 80, height: 24 });
  cast.output('psql> ');
  rec.queries().statement({ statement: 'SELECT 1', kind: 'SELECT' }).finish({ rows: 1 });
  rec.events().event('copy.out', { bytes: 10 });
  const screen = rec.screen({ width: 1024, height: 768 });
  screen.write('keyframe', { png: 'iVBORw0KGgo=' });
  clock.advance(5000);
  const before = await r.store.listRecordings({ sessionId: 'sess-seal' });
  t.same(before.map((x) => x.state).sort(), ['open', 'open', 'open', 'open'], 'indexed as open when opened');
  await rec.close();
  const recs = await r.store.listRecordings({ sessionId: 'sess-seal' });
  t.same(recs.map((x) => x.kind).sort(), ['cast', 'events', 'queries', 'screen']);
  t.same(recs.map((x) => x.path.split('/').pop()).sort(), ['events.ndjson', 'queries.ndjson', 'screen.ndjson', 'shell.cast']);
  for (const x of recs) {
    t.equal(dirname(x.path), join(r.dir, 'recordings', '2026', '01', 'sess-seal'), `${x.kind} lives under yyyy/mm/sessionId`);
    const abs = x.path;
    const bytes = readFileSync(abs);
    t.equal(x.state, 'sealed');
    t.equal(x.sealedAt, T0 + 5000, 'sealedAt comes from the injected clock');
    t.equal(x.createdAt, T0);
    t.equal(x.bytes, bytes.length, `${x.kind} size recorded`);
    t.equal(x.sha256, createHash('sha256').update(bytes).digest('hex'), `${x.kind} hash recorded`);
    t.equal(statSync(abs).mode & 0o777, 0o440, 'sealed file is read-only');
    const v = await r.recorder.verify(x.id);
    t.same(v, { ok: true, expected: x.sha256, actual: x.sha256, detail: `sealed ${x.bytes} bytes intact` });
    t.same(await readAll(await r.recorder.read(x.id)), bytes, 'read() streams the file');
  }
  // close() is idempotent and recorders after close are harmless no-ops.
  await rec.close();
  await rec.close();
  cast.output('late');
  cast.close();
  screen.write('frame', { x: 1 });
  screen.close();
  rec.events().event('late', {});
  rec.queries().statement({ statement: 'SELECT 2' }).finish({ rows: 0 });
  rec.cast({ width: 80, height: 24 }).output('late');
  const after = await r.store.listRecordings({ sessionId: 'sess-seal' });
  t.same(after, recs, 'nothing changes after close');
  for (const x of after) t.ok((await r.recorder.verify(x.id)).ok, 'still intact');
  t.equal((await r.store.listQueries('sess-seal')).length, 1);
});

t.test('a cast closed before the session is sealed at once; a second close never throws', async (t) => {
  const { clock, r, rec } = await opened(t, 'sess-early', T0);
  const cast = rec.cast({ width: 80, height: 24, name: 'exec-1' });
  cast.output('done\n');
  cast.close();
  t.doesNotThrow(() => cast.close());
  const recs = await waitSealed(r.store, 'sess-early');
  t.equal(recs[0]!.state, 'sealed');
  t.ok((await r.recorder.verify(recs[0]!.id)).ok);
  await rec.close();
});

t.test('any later byte change is detected', async (t) => {
  const { clock, r, rec } = await opened(t, 'sess-tamper', T0);
  const cast = rec.cast({ width: 80, height: 24 });
  cast.output('rm -rf /important\r\n');
  rec.events().event('note', { a: 1 });
  rec.queries().statement({ statement: 'DROP TABLE x' }).finish({});
  await rec.close();
  const recs = await r.store.listRecordings({ sessionId: 'sess-tamper' });
  const byKind = Object.fromEntries(recs.map((x) => [x.kind, x]));
  const castRec = byKind.cast!;
  const castPath = castRec.path;
  const original = readFileSync(castPath);

  // Flip one byte in place (same size).
  chmodSync(castPath, 0o640);
  const flipped = Buffer.from(original);
  const at = flipped.indexOf('important');
  flipped[at] = 'I'.charCodeAt(0);
  writeFileSync(castPath, flipped);
  const v1 = await r.recorder.verify(castRec.id);
  t.equal(v1.ok, false);
  t.equal(v1.expected, castRec.sha256);
  t.equal(v1.actual, createHash('sha256').update(flipped).digest('hex'));
  t.match(v1.detail, /modified after sealing/);

  // Restore: intact again.
  writeFileSync(castPath, original);
  t.ok((await r.recorder.verify(castRec.id)).ok, 'the original bytes verify again');

  // Truncate one event off the end of the query log.
  const qPath = byKind.queries!.path;
  const q = readFileSync(qPath);
  chmodSync(qPath, 0o640);
  writeFileSync(qPath, q.subarray(0, q.length - 1));
  const v2 = await r.recorder.verify(byKind.queries!.id);
  t.equal(v2.ok, false);
  t.match(v2.detail, new RegExp(`sealed ${q.length} bytes, now ${q.length - 1} bytes`));

  // Append a forged event.
  const ePath = byKind.events!.path;
  chmodSync(ePath, 0o640);
  appendFileSync(ePath, '{"t":9,"type":"forged"}\n');
  t.equal((await r.recorder.verify(byKind.events!.id)).ok, false);

  // Delete a file.
  rmSync(castPath);
  t.same(await r.recorder.verify(castRec.id), { ok: false, expected: castRec.sha256, actual: null, detail: 'recording file is missing' });
  await t.rejects(r.recorder.read(castRec.id), /recording file is missing/);

  // Unknown ids and a record pointing outside the recordings directory.
  t.same(await r.recorder.verify('nope'), { ok: false, expected: null, actual: null, detail: 'no such recording' });
  await t.rejects(r.recorder.read('nope'), /no such recording/);
  await r.store.insertRecording({ ...castRec, id: 'evil', path: join(r.dir, 'store.sqlite') });
  t.match(await r.recorder.verify('evil'), { ok: false, actual: null, detail: /outside the recordings directory/ });
  await t.rejects(r.recorder.read('evil'), /outside/);
  t.equal(await r.recorder.pathOf('evil'), null);
  await r.store.insertRecording({ ...castRec, id: 'evil-rel', path: '../store.sqlite' });
  t.match(await r.recorder.verify('evil-rel'), { ok: false, detail: /outside the recordings directory/ });
});

t.test('an open recording does not verify; a recording survives a store that fails', async (t) => {
  const { clock, r, rec } = await opened(t, 'sess-open', T0);
  rec.cast({ width: 80, height: 24 }).output('x');
  clock.advance(1000);
  const [open] = await waitSealed(r.store, 'sess-open', 'open');
  const v = await r.recorder.verify(open!.id);
  t.equal(v.ok, false);
  t.equal(v.expected, null);
  t.match(v.detail, /not sealed yet/);
  t.ok(v.actual, 'the current hash is still reported');
  // The partial file can be read while recording (download of a live session).
  t.match((await readAll(await r.recorder.read(open!.id))).toString(), /"x"/);
  await rec.close();
  t.ok((await r.recorder.verify(open!.id)).ok);

  // A store that rejects writes: the session still records to disk and close() resolves.
  const failing = r.store;
  const orig = failing.insertRecording.bind(failing);
  failing.insertRecording = async () => { throw new Error('disk I/O error'); };
  t.teardown(() => { failing.insertRecording = orig; });
  const origQ = failing.insertQuery.bind(failing);
  failing.insertQuery = (() => { throw new Error('store is closed'); }) as typeof failing.insertQuery; // throws synchronously
  t.teardown(() => { failing.insertQuery = origQ; });
  const rec2 = r.recorder.open('sess-storefail', { ...META, startedAt: T0 });
  rec2.cast({ width: 80, height: 24 }).output('still recorded');
  t.doesNotThrow(() => rec2.queries().statement({ statement: 'SELECT 1' }).finish({ rows: 1 }));
  await rec2.close();
  t.ok(r.logs.some((l) => l.includes('recording cannot be indexed') && l.includes('disk I/O error')), 'the failure is logged');
  t.ok(r.logs.some((l) => l.includes('query log row cannot be stored') && l.includes('store is closed')));
  t.equal(readFileSync(join(r.dir, 'recordings', '2026', '01', 'sess-storefail', 'shell.cast'), 'utf8').includes('still recorded'), true);
});

t.test('reopening a session id while open returns the same recording', async (t) => {
  const r = await rig(t, new ManualClock(T0));
  const a = r.recorder.open('sess-same', { ...META, startedAt: T0 });
  const b = r.recorder.open('sess-same', { ...META, startedAt: T0 });
  t.equal(a, b);
  await a.close();
  const c = r.recorder.open('sess-same', { ...META, startedAt: T0 });
  t.not(c, a, 'a closed recording is not reused');
  c.cast({ width: 80, height: 24 }).output('second run');
  a.cast({ width: 80, height: 24 }).output('ignored');
  await c.close();
  const recs = await r.store.listRecordings({ sessionId: 'sess-same' });
  t.same(recs.map((x) => x.path.split('/').pop()), ['shell.cast'], 'only the second run wrote a cast');
});

async function waitSealed(store: import('../../proxy/store/types.js').Store, sessionId: string, state: 'open' | 'sealed' = 'sealed') {
  for (let i = 0; i < 200; i++) {
    const recs = await store.listRecordings({ sessionId });
    if (recs.length && recs.every((x) => x.state === state)) return recs;
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error(`recordings of ${sessionId} never became ${state}`);
}

t.test('after a crash: recordings left open are sealed as they are on disk and replay', async (t) => {
  const clock = new ManualClock(T0);
  const r = await rig(t, clock);
  // "Before the crash": a recorder whose sessions never close.
  const crashed = createRecorder({ store: r.store, dir: join(r.dir, 'recordings'), clock, log: r.log });
  const rec = crashed.open('sess-crash', { ...META, startedAt: T0 });
  const cast = rec.cast({ width: 80, height: 24 });
  cast.output('flushed before the crash\r\n');
  rec.events().event('exec', { command: 'id' });
  clock.advance(1000); // the 1 s flush
  cast.output('lost in the crash'); // still buffered when the process dies
  // A session of the restarted gateway that is running, and another gateway's session.
  const running = r.recorder.open('sess-running', { ...META, startedAt: T0 });
  running.cast({ width: 80, height: 24 }).output('x');
  const other = crashed.open('sess-other-gw', { ...META, startedAt: T0 });
  other.events().event('x', {});
  await new Promise((res) => setImmediate(res)); // let the async store inserts land

  const res = await r.recorder.sealOrphans((id) => id === 'sess-other-gw');
  t.same(res, { sealed: 2, missing: 0, skipped: 2 });
  const recs = await r.store.listRecordings({ sessionId: 'sess-crash' });
  t.same(recs.map((x) => x.state), ['sealed', 'sealed']);
  for (const x of recs) t.ok((await r.recorder.verify(x.id)).ok, `${x.kind} verifies after recovery`);
  const castRec = recs.find((x) => x.kind === 'cast')!;
  const replay = replayCast(readFileSync(castRec.path, 'utf8'));
  t.same(replay.events.map((e) => e.data), ['flushed before the crash\r\n'], 'at most the last second is lost');
  const ev = parseNdjson(readFileSync(recs.find((x) => x.kind === 'events')!.path, 'utf8'));
  t.same(ev, [{ t: 0, type: 'exec', command: 'id' }]);
  t.equal((await r.store.listRecordings({ sessionId: 'sess-running' }))[0]!.state, 'open', 'a running session is not touched');
  t.equal((await r.store.listRecordings({ sessionId: 'sess-other-gw' }))[0]!.state, 'open', "another gateway's session is not touched");
  await running.close();
  t.ok(r.logs.some((l) => l.includes('sealed a recording left open by a crash')));
});

t.test('parseNdjson drops a torn last line and rejects garbage in the middle', async (t) => {
  t.same(parseNdjson('{"a":1}\n{"b":2}\n'), [{ a: 1 }, { b: 2 }]);
  t.same(parseNdjson('{"a":1}\n{"b":'), [{ a: 1 }]);
  t.throws(() => parseNdjson('{"a":1}\nnope\n{"c":3}\n'), /line 2/);
});
