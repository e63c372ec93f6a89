import t from 'tap';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { SystemClock } from '../../policies/clock.js';
import { replayCast, verifyCastText } from '../../recorder/index.js';
import { opened, rig, META } from './helpers.js';

const T0 = Date.UTC(2026, 10, 23, 10, 0, 0, 0);

t.test('cast is valid asciicast v2: header, every line JSON, monotonic microsecond times', async (t) => {
  const { clock, r, rec } = await opened(t, 's-cast-1', T0);
  clock.advance(250);
  const cast = rec.cast({ width: 100, height: 30, title: 'demo', env: { TERM: 'xterm-256color', SHELL: '/bin/bash', AWS_SECRET_ACCESS_KEY: 'nope' } });
  clock.advance(500);
  cast.output(Buffer.from('$ ls\r\n'));
  clock.advance(750);
  cast.input('l');
  clock.advance(1);
  cast.input(Buffer.from('s\r'));
  clock.advance(1000);
  cast.resize(120, 40);
  cast.marker('sudo used');
  cast.output('a "quoted" \\ line\twith\u0007 controls\n');
  await rec.close();

  const recs = await r.store.listRecordings({ sessionId: 's-cast-1' });
  t.equal(recs.length, 1);
  t.equal(recs[0]!.kind, 'cast');
  t.equal(recs[0]!.path, join(r.dir, 'recordings', '2026', '11', 's-cast-1', 'shell.cast'), 'absolute path under yyyy/mm/sessionId');
  const text = readFileSync(recs[0]!.path, 'utf8');
  const lines = text.split('\n');
  t.equal(lines.pop(), '', 'file ends with a newline');
  const parsed = lines.map((l) => JSON.parse(l) as unknown);
  const header = parsed[0] as Record<string, unknown>;
  t.same(header, { version: 2, width: 100, height: 30, timestamp: Math.floor((T0 + 250) / 1000), title: 'demo', env: { TERM: 'xterm-256color', SHELL: '/bin/bash' } });
  t.notOk(text.includes('nope'), 'other environment variables are dropped');
  const events = parsed.slice(1) as [number, string, string][];
  t.same(events, [
    [0.5, 'o', '$ ls\r\n'],
    [1.25, 'i', 'l'],
    [1.251, 'i', 's\r'],
    [2.251, 'r', '120x40'],
    [2.251, 'm', 'sudo used'],
    [2.251, 'o', 'a "quoted" \\ line\twith\u0007 controls\n'],
  ]);
  t.match(lines[1]!, /^\[0\.500000, "o", /, 'times carry microsecond precision');
  t.match(lines[3]!, /^\[1\.251000, "i", /);
  for (let i = 1; i < events.length; i++) t.ok(events[i]![0] >= events[i - 1]![0], `t is monotonic at event ${i}`);
  const check = verifyCastText(text);
  t.same(check.errors, []);
  t.equal(check.ok, true);
  t.equal(check.events, 6);
  t.equal(check.duration, 2.251);
  const replay = replayCast(text);
  t.equal(replay.header.width, 100);
  t.same(replay.events.map((e) => [e.t, e.type, e.data]), events);
});

t.test('times never go back even if the clock does', async (t) => {
  const { clock, r, rec } = await opened(t, 's-back', T0);
  const cast = rec.cast({ width: 80, height: 24 });
  clock.advance(2000);
  cast.output('a');
  clock.set(T0 + 1000); // a clock step backwards
  cast.output('b');
  await rec.close();
  const [recording] = await r.store.listRecordings({ sessionId: 's-back' });
  const text = readFileSync(recording!.path, 'utf8');
  t.same(replayCast(text).events.map((e) => e.t), [2, 2]);
  t.ok(verifyCastText(text).ok);
});

t.test('UTF-8 split across reads never yields a broken character', async (t) => {
  const { clock, r, rec } = await opened(t, 's-utf8', T0);
  const cast = rec.cast({ width: 80, height: 24 });
  const seen: string[] = [];
  const sub = r.recorder.live.subscribe('s-utf8', (f) => { if (f.type === 'o' || f.type === 'i') seen.push(`${f.type}:${String(f.data)}`); });
  t.teardown(() => sub.unsubscribe());
  const text = 'héllo → 世界 🎉 ok';
  const bytes = Buffer.from(text, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    clock.advance(1);
    cast.output(bytes.subarray(i, i + 1));
  }
  // Input has its own decoder: interleaving does not mix halves across directions.
  const inBytes = Buffer.from('ñ€', 'utf8');
  cast.input(inBytes.subarray(0, 1));
  cast.output(Buffer.from('x'));
  cast.input(inBytes.subarray(1, 4));
  cast.input(inBytes.subarray(4));
  // A character cut off at the very end is flushed as U+FFFD at close, not lost silently.
  cast.output(Buffer.from('🎉', 'utf8').subarray(0, 2));
  await rec.close();
  const [recording] = await r.store.listRecordings({ sessionId: 's-utf8' });
  const file = readFileSync(recording!.path, 'utf8');
  const events = replayCast(file).events;
  const outs = events.filter((e) => e.type === 'o').map((e) => e.data);
  const ins = events.filter((e) => e.type === 'i').map((e) => e.data);
  t.equal(outs.slice(0, -2).join(''), text);
  for (const d of outs.slice(0, -1)) t.notOk(d.includes('\ufffd'), `no replacement character in ${JSON.stringify(d)}`);
  t.equal(outs[outs.length - 2], 'x');
  t.equal(outs[outs.length - 1], '\ufffd', 'a torn last character is marked, not hidden');
  t.equal(ins.join(''), 'ñ€');
  for (const d of [...outs, ...ins]) t.notOk(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(d), 'no lone surrogate');
  t.same(seen.filter((s) => s.startsWith('i:')), ['i:ñ', 'i:€'], 'live frames carry whole characters too');
});

t.test('what is typed at a password prompt is recorded as stars', async (t) => {
  const { clock, r, rec } = await opened(t, 's-sudo', T0);
  const cast = rec.cast({ width: 80, height: 24 });
  const live: string[] = [];
  r.recorder.live.subscribe('s-sudo', (f) => { if (f.type === 'i') live.push(String(f.data)); });
  cast.output('$ ');
  cast.input('sudo -i\r');
  cast.output('sudo -i\r\n\x1b[1m[sudo] password for alice: \x1b[0m');
  const pw = Buffer.from('pä55wörd', 'utf8');
  for (let i = 0; i < pw.length; i += 2) cast.input(pw.subarray(i, i + 2));
  cast.input('\r');
  cast.output('\r\nSorry, try again.\r\n[sudo] password for alice: ');
  cast.input('s3cond\rwhoami');
  cast.output('\r\nroot# ');
  cast.input('echo password: ok\r');
  cast.output("Enter passphrase for key '/root/.ssh/id_ed25519': ");
  cast.input('\x03');
  cast.output('\r\nroot# su - bob\r\nPasswort: ');
  cast.input('geheim\r');
  cast.output('\r\nMot de passe : ');
  cast.input('secret\n');
  cast.input('ls\r');
  await rec.close();
  const [recording] = await r.store.listRecordings({ sessionId: 's-sudo' });
  const text = readFileSync(recording!.path, 'utf8');
  const inputs = replayCast(text).events.filter((e) => e.type === 'i').map((e) => e.data);
  t.same(inputs, ['sudo -i\r', '*', '**', '**', '*', '**', '\r', '******\rwhoami', 'echo password: ok\r', '\x03', '******\r', '******\n', 'ls\r']);
  t.same(live, inputs, 'watchers see the same masked input');
  t.notOk(/ä|ö|5w|s3cond|geheim|"secret/.test(text), 'no typed secret in the cast');
});

t.test('written incrementally: content reaches the file within about a second (real timer)', async (t) => {
  const r = await rig(t, new SystemClock());
  const rec = r.recorder.open('s-flush', { ...META, startedAt: Date.now() });
  const cast = rec.cast({ width: 80, height: 24 });
  const started = Date.now();
  cast.output('first line\r\n');
  const [recording] = await waitFor(() => r.store.listRecordings({ sessionId: 's-flush' }), (l) => l.length === 1);
  const path = recording!.path;
  let content = '';
  while (Date.now() - started < 3000) {
    content = readFileSync(path, 'utf8');
    if (content.includes('first line')) break;
    await new Promise((res) => setTimeout(res, 20));
  }
  const took = Date.now() - started;
  t.ok(content.includes('first line'), 'the event is on disk before close');
  t.ok(took >= 900 && took < 2000, `flushed by the 1 s timer (took ${took} ms)`);
  t.equal((await r.store.getRecording(recording!.id))!.state, 'open', 'still open while recording');
  // The content on disk so far is itself a valid cast (a crash leaves a usable file).
  t.ok(verifyCastText(content).ok, 'partial file is valid');

  // 64 KiB of output goes to disk at once, without waiting for the timer.
  const big = 'y'.repeat(70 * 1024);
  cast.output(big);
  t.ok(statSync(path).size > 70 * 1024, 'a large burst is written immediately');
  cast.output('a');
  await new Promise((res) => setTimeout(res, 3));
  cast.output('b');
  await rec.close();
  const final = readFileSync(path, 'utf8');
  t.ok(verifyCastText(final).ok);
  const times = final.split('\n').slice(1, -1).map((l) => /^\[(\d+\.\d{6}),/.exec(l)![1]!);
  t.ok(times.some((x) => !x.endsWith('000')), `real microseconds with the system clock (${times.join(' ')})`);
});

t.test('buffer is flushed by the injected clock, not before', async (t) => {
  const { clock, r, rec } = await opened(t, 's-manual', T0);
  const cast = rec.cast({ width: 80, height: 24 });
  cast.output('hello');
  const [recording] = await waitFor(() => r.store.listRecordings({ sessionId: 's-manual' }), (l) => l.length === 1);
  const path = recording!.path;
  // The header is on disk at once (a crash right now still leaves a valid cast); output waits.
  const header = readFileSync(path, 'utf8');
  t.match(header, /^\{"version":2,[^\n]*\}\n$/, 'only the header written yet');
  t.ok(verifyCastText(header).ok, 'and it is a valid cast already');
  clock.advance(999);
  t.equal(statSync(path).size, Buffer.byteLength(header), 'output still buffered before a second');
  clock.advance(1);
  t.match(readFileSync(path, 'utf8'), /"hello"/, 'written when the second is up');
  await rec.close();
});

t.test('hostile names stay inside the recordings directory; nonsense sizes are ignored', async (t) => {
  const { clock, r, rec } = await opened(t, '../../etc', T0);
  const a = rec.cast({ width: 80, height: 24, name: '../../../passwd' });
  const b = rec.cast({ width: -5, height: Number.NaN, name: 'shell' });
  const c = rec.cast({ width: 80, height: 24, name: 'shell' });
  a.output('a'); b.output('b'); c.output('c');
  b.resize(0, 10);
  b.resize(Number.NaN, 10);
  b.resize(1e9, 10);
  await rec.close();
  const root = join(r.dir, 'recordings');
  const files = walk(root).map((f) => relative(root, f));
  t.equal(files.length, 3);
  for (const f of files) t.match(f, /^2026\/11\/[A-Za-z0-9._-]+\/[A-Za-z0-9._-]+\.cast$/, `${f} is a plain name under the session dir`);
  t.equal(new Set(files).size, 3, 'two casts with the same name get different files');
  const texts = files.map((f) => readFileSync(join(root, f), 'utf8'));
  for (const text of texts) t.ok(verifyCastText(text).ok);
  const bHeader = texts.map((x) => replayCast(x)).find((x) => x.events.some((e) => e.data === 'b'))!;
  t.equal(bHeader.header.width, 80, 'bad width falls back to 80');
  t.equal(bHeader.header.height, 24);
  t.notOk(bHeader.events.some((e) => e.type === 'r'), 'nonsense resizes are not recorded');
});

t.test('verifyCastText and replayCast reject malformed casts', async (t) => {
  const h = '{"version":2,"width":80,"height":24}';
  t.ok(verifyCastText(`${h}\n[0.1, "o", "x"]\n`).ok);
  t.same(verifyCastText('').errors, ['empty file']);
  t.ok(verifyCastText(`${h}\n[0.1, "o", "x"]`).ok, 'a missing final newline is fine (asciinema writes that)');
  t.same(verifyCastText(`${h}\n[0.1, "o", "x"]\n[0.2, "o", "y`).errors, ['the last line is cut short (truncated by a crash?)']);
  t.match(verifyCastText('{"version":1,"width":80,"height":24}\n').errors[0], /version/);
  t.match(verifyCastText('{"version":2,"width":-1,"height":24}\n').errors[0], /width must be a non-negative integer/);
  t.match(verifyCastText('{"version":2,"width":80.5,"height":24}\n').errors[0], /width/);
  t.match(verifyCastText('{"version":2,"width":80}\n').errors[0], /height/);
  t.ok(verifyCastText('{"version":2,"width":0,"height":0}\n').ok, 'size 0 (unknown) is allowed, as asciinema writes it');
  t.match(verifyCastText(`${h}\nnot json\n`).errors[0], /line 2: not valid JSON/);
  t.match(verifyCastText(`${h}\n[1, "o", "x"]\n[0.5, "o", "y"]\n`).errors[0], /line 3: time 0.5 goes back/);
  t.match(verifyCastText(`${h}\n[1, "z", "x"]\n`).errors[0], /unknown event code/);
  t.match(verifyCastText(`${h}\n[1, "o", 5]\n`).errors[0], /data must be a string/);
  t.match(verifyCastText(`${h}\n[1, "r", "wide"]\n`).errors[0], /COLSxROWS/);
  t.match(verifyCastText(`${h}\n[1, "o"]\n`).errors[0], /3-element array/);
  t.match(verifyCastText(`${h}\n[-1, "o", "x"]\n`).errors[0], /non-negative/);
  t.throws(() => replayCast(`${h}\n[1, "o", "x"]\n[0.5, "o", "y"]\n`), /goes back/);
  t.throws(() => replayCast('garbage\n'), /header is not valid JSON/);
  // asciinema writes null for variables that were unset when it ran (a bare CI environment): valid.
  t.ok(verifyCastText('{"version": 2, "width": 80, "height": 24, "env": {"SHELL": null, "TERM": null}}\n[0.1, "o", "x"]\n').ok, 'null env values are valid');
  t.match(verifyCastText('{"version": 2, "width": 80, "height": 24, "env": {"TERM": 5}}\n').errors[0], /env must map/);
  t.throws(() => replayCast(''), /empty file/);
  // A crash may tear the last line: replay keeps everything before it.
  t.same(replayCast(`${h}\n[0.1, "o", "x"]\n[0.2, "o", "y`).events, [{ t: 0.1, type: 'o', data: 'x' }]);
});

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

async function waitFor<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 2000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((res) => setTimeout(res, 10));
  }
}
