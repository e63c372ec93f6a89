import t from 'tap';
import { ManualClock } from '../../policies/clock.js';
import { createLiveBus, type LiveFrame } from '../../recorder/index.js';
import { MISC_SNAPSHOT_FRAMES, TERM_SNAPSHOT_CHARS } from '../../recorder/live.js';
import { opened, rig, META } from './helpers.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const brief = (fs: LiveFrame[]) => fs.map((f) => [f.type, f.type === 'query' || f.type === 'event' || f.type === 'screen' ? (f.data as { type?: string; statement?: string }).statement ?? (f.data as { type?: string }).type : f.data]);

t.test('a watcher starts from the current screen: output since the last clear, size, recent queries/events', async (t) => {
  const { clock, r, rec } = await opened(t, 'live-1', T0);
  const live: LiveFrame[] = [];
  const early = r.recorder.live.subscribe('live-1', (f) => live.push(f));
  t.same(early.snapshot, [], 'nothing yet');
  clock.advance(1000);
  const cast = rec.cast({ width: 80, height: 24 });
  cast.output('old prompt $ ls\r\nsecret-looking-file\r\n');
  clock.advance(500);
  cast.resize(100, 30);
  cast.input('clear\r');
  clock.advance(500);
  cast.output('clear\r\n\x1b[H\x1b[2J\x1b[3J$ ');
  clock.advance(250);
  cast.resize(120, 40);
  cast.output('whoami\r\nalice\r\n');
  rec.events().event('exec', { command: 'whoami' });
  rec.queries().statement({ statement: 'SELECT 1' }).finish({ rows: 1 });

  const sub = r.recorder.live.subscribe('live-1', () => {});
  t.same(brief(sub.snapshot), [
    ['r', '100x30'],
    ['o', '\x1b[H\x1b[2J\x1b[3J$ '],
    ['r', '120x40'],
    ['o', 'whoami\r\nalice\r\n'],
    ['event', 'exec'],
    ['query', 'SELECT 1'],
  ], 'size at the clear, output from the clear (with the cursor home), later resizes, recent events');
  t.equal(sub.snapshot[1]!.t, 2, 't is seconds since the session start');
  t.equal(sub.snapshot[3]!.t, 2.25);
  t.notOk(JSON.stringify(sub.snapshot).includes('secret-looking-file'), 'what the clear wiped is not replayed');
  t.notOk(sub.snapshot.some((f) => f.type === 'i'), 'input is not part of the snapshot');
  // The early watcher saw everything live, including input and the header size.
  t.same(brief(live).slice(0, 4), [['r', '80x24'], ['o', 'old prompt $ ls\r\nsecret-looking-file\r\n'], ['r', '100x30'], ['i', 'clear\r']]);
  t.same(live.map((f) => f.t), [...live.map((f) => f.t)].sort((a, b) => a - b), 'frames arrive in time order');
  sub.unsubscribe();
  early.unsubscribe();
  await rec.close();
});

t.test('clear sequences split across two reads, ESC c, and the linux ESC[H ESC[J form', async (t) => {
  const bus = createLiveBus();
  bus.publish('s', { t: 0, type: 'r', data: '80x24' });
  bus.publish('s', { t: 1, type: 'o', data: 'junk junk\x1b[' });
  bus.publish('s', { t: 2, type: 'o', data: '2Jfresh' });
  t.same(brief(bus.subscribe('s', () => {}).snapshot), [['r', '80x24'], ['o', '\x1b[2Jfresh']]);
  bus.publish('s', { t: 3, type: 'o', data: 'more\x1bcreset' });
  t.same(brief(bus.subscribe('s', () => {}).snapshot), [['r', '80x24'], ['o', '\x1bcreset']]);
  bus.publish('s', { t: 4, type: 'o', data: 'x\x1b[H\x1b[Jlinux' });
  t.same(brief(bus.subscribe('s', () => {}).snapshot), [['r', '80x24'], ['o', '\x1b[H\x1b[Jlinux']]);
  bus.publish('s', { t: 5, type: 'o', data: 'a\x1b[5;10H\x1b[2Jb' });
  t.same(brief(bus.subscribe('s', () => {}).snapshot), [['r', '80x24'], ['o', '\x1b[5;10H\x1b[2Jb']], 'a cursor position just before a clear is kept');
});

t.test('the snapshot is bounded: ~256 KiB of output, 200 query/event frames', async (t) => {
  const bus = createLiveBus();
  bus.publish('b', { t: 0, type: 'r', data: '80x24' });
  const chunk = 'abcdefghij'.repeat(1000); // 10 000 chars
  for (let i = 0; i < 40; i++) bus.publish('b', { t: i, type: 'o', data: `${String(i).padStart(3, '0')}${chunk}` });
  bus.publish('b', { t: 41, type: 'r', data: '90x30' });
  bus.publish('b', { t: 42, type: 'o', data: 'the end' });
  for (let i = 0; i < 250; i++) bus.publish('b', { t: 43, type: 'event', data: { type: 'e', n: i } });
  const snap = bus.subscribe('b', () => {}).snapshot;
  const out = snap.filter((f) => f.type === 'o').map((f) => f.data as string).join('');
  t.ok(out.length <= TERM_SNAPSHOT_CHARS, `output kept ${out.length} chars`);
  t.ok(out.length > TERM_SNAPSHOT_CHARS - 100, 'and close to the bound');
  t.ok(out.endsWith(`${chunk}the end`), 'the newest output is kept');
  t.same(snap[0], { t: 0, type: 'r', data: '80x24' }, 'the size in force at the start of the kept output comes first');
  t.ok(snap.some((f) => f.type === 'r' && f.data === '90x30'));
  const events = snap.filter((f) => f.type === 'event');
  t.equal(events.length, MISC_SNAPSHOT_FRAMES);
  t.same((events[0]!.data as { n: number }).n, 50, 'the oldest events are dropped');
  t.same((events[events.length - 1]!.data as { n: number }).n, 249);

  // One huge write is cut to its tail without splitting a surrogate pair.
  const huge = '😀'.repeat(TERM_SNAPSHOT_CHARS); // 2 UTF-16 units each
  bus.publish('h', { t: 0, type: 'o', data: huge });
  const h = bus.subscribe('h', () => {}).snapshot;
  const kept = h[0]!.data as string;
  t.ok(kept.length <= TERM_SNAPSHOT_CHARS);
  t.notOk(/^[\udc00-\udfff]/.test(kept), 'does not start with half a character');
});

t.test('end: watchers get an end frame, state is dropped, late publishers and watchers are handled', async (t) => {
  const clock = new ManualClock(T0);
  const r = await rig(t, clock);
  const bus = r.recorder.live as ReturnType<typeof createLiveBus>;
  const rec = r.recorder.open('live-end', { ...META, startedAt: T0 });
  const got: LiveFrame[] = [];
  bus.subscribe('live-end', (f) => got.push(f));
  clock.advance(3000);
  rec.cast({ width: 80, height: 24 }).output('bye');
  await rec.close();
  t.same(got[got.length - 1], { t: 3, type: 'end', data: null }, 'end frame after the last frame');
  t.equal(bus.size, 0, 'no state left behind');
  const late = bus.subscribe('live-end', () => t.fail('no frame after the end'));
  t.same(late.snapshot, [{ t: 3, type: 'end', data: null }], 'a late watcher learns that the session ended');
  bus.publish('live-end', { t: 4, type: 'o', data: 'ghost' });
  t.equal(bus.size, 0, 'a late publish does not resurrect the session');
  late.unsubscribe();

  // Watching a session that never publishes leaves nothing behind once the watcher leaves.
  const w = bus.subscribe('never', () => {});
  t.equal(bus.size, 1);
  w.unsubscribe();
  t.equal(bus.size, 0);
});

t.test('a throwing watcher is removed and does not disturb the publisher or other watchers', async (t) => {
  const { clock, r, rec } = await opened(t, 'live-bad', T0);
  let calls = 0;
  r.recorder.live.subscribe('live-bad', () => { calls++; throw new Error('socket gone'); });
  const good: string[] = [];
  r.recorder.live.subscribe('live-bad', (f) => { if (f.type === 'o') good.push(f.data as string); });
  // A watcher may unsubscribe itself from inside its callback.
  const self = r.recorder.live.subscribe('live-bad', () => self.unsubscribe());
  const cast = rec.cast({ width: 80, height: 24 });
  t.doesNotThrow(() => { cast.output('one'); cast.output('two'); });
  t.equal(calls, 1, 'the throwing watcher was called once, then removed');
  t.same(good, ['one', 'two']);
  t.ok(r.logs.some((l) => l.includes('live watcher callback threw')));
  await rec.close();
  const recs = await r.store.listRecordings({ sessionId: 'live-bad' });
  t.equal(recs[0]!.state, 'sealed', 'recording unaffected');
});

t.test('screen frames: snapshot starts at the header and the last keyframe', async (t) => {
  const { clock, r, rec } = await opened(t, 'live-vnc', T0, 'vnc');
  const screen = rec.screen({ width: 1024, height: 768 });
  screen.write('keyframe', { png: 'AAAA' });
  screen.write('rect', { x: 1, y: 1, png: 'BB' });
  clock.advance(1000);
  screen.write('keyframe', { png: 'CCCC' });
  screen.write('rect', { x: 2, y: 2, png: 'DD' });
  screen.write('key', { down: true, keysym: 65 });
  const snap = r.recorder.live.subscribe('live-vnc', () => {}).snapshot;
  t.same(snap.map((f) => (f.data as { type: string; png?: string }).png ?? (f.data as { type: string }).type), ['header', 'CCCC', 'DD', 'key']);
  t.same(snap[0]!.data, { type: 'header', version: 1, width: 1024, height: 768, timestamp: Math.floor(T0 / 1000) });
  t.equal(snap[1]!.t, 1);
  await rec.close();
});

t.test('several casts: frames carry their cast, the snapshot follows one terminal at a time', async (t) => {
  const { clock, r, rec } = await opened(t, 'live-multi', T0);
  const got: LiveFrame[] = [];
  r.recorder.live.subscribe('live-multi', (f) => got.push(f));
  const shell = rec.cast({ width: 100, height: 30, name: 'shell' });
  clock.advance(100);
  const exec = rec.cast({ width: 80, height: 24, name: 'exec-1' });
  shell.output('$ top');
  exec.output('scp output');
  exec.marker('scp started');
  const snap1 = r.recorder.live.subscribe('live-multi', () => {}).snapshot;
  t.same(snap1.map((f) => [f.type, f.data, f.cast]), [
    ['r', '100x30', 'shell'], ['o', '$ top', 'shell'], ['m', 'scp started', 'exec-1'],
  ], 'the shell is on screen; the exec marker is kept with the events');
  t.same(got.map((f) => [f.type, f.cast]), [['r', 'shell'], ['r', 'exec-1'], ['o', 'shell'], ['o', 'exec-1'], ['m', 'exec-1']], 'watchers get every frame with its cast');
  shell.close();
  clock.advance(100);
  exec.output('more');
  const snap2 = r.recorder.live.subscribe('live-multi', () => {}).snapshot;
  t.same(snap2.filter((f) => f.type !== 'm').map((f) => [f.type, f.data, f.cast]), [['r', '80x24', 'exec-1'], ['o', 'more', 'exec-1']], 'when the shell closes the next cast takes the screen, with its size');
  const again = rec.cast({ width: 90, height: 20, name: 'shell' });
  again.output('new shell');
  const snap3 = r.recorder.live.subscribe('live-multi', () => {}).snapshot;
  t.notOk(snap3.some((f) => f.data === 'new shell'), 'a later cast does not take over a live one');
  t.equal(got.find((f) => f.data === 'new shell')!.cast, 'shell-2', 'the cast name is its file name');
  await rec.close();
});

t.test('however output is chunked, the snapshot starts at the last clear of the whole stream', async (t) => {
  // A small seeded PRNG so a failure is reproducible.
  let seed = 0x2545f491;
  const rnd = (n: number) => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) % n; };
  const pieces = ['plain text ', 'ünï©ødé ', '😀', '\r\n', '\x1b[1;31m', '\x1b[0m', '\x1b[2J', '\x1b[3J', '\x1bc', '\x1b[H', '\x1b[H\x1b[J', '\x1b[12;40H', '\x1b[K', '\x1b'];
  // Independent oracle on the whole stream: the last clear sequence, plus cursor moves and clears right before it.
  const oracle = (s: string): string => {
    const clear = /\x1b\[2J|\x1b\[3J|\x1bc|\x1b\[H\x1b\[0?J/g;
    let at = -1;
    for (let m = clear.exec(s); m; m = clear.exec(s)) { at = m.index; clear.lastIndex = m.index + 1; }
    if (at < 0) return s;
    for (let i = 0; i < 4; i++) {
      const m = /(?:\x1b\[2J|\x1b\[3J|\x1bc|\x1b\[\d*(?:;\d*)?[Hf])$/.exec(s.slice(Math.max(0, at - 16), at));
      if (!m) break;
      at -= m[0].length;
    }
    return s.slice(at);
  };
  for (let round = 0; round < 300; round++) {
    let stream = '';
    for (let i = 0, n = 1 + rnd(40); i < n; i++) stream += pieces[rnd(pieces.length)];
    const bus = createLiveBus();
    let pos = 0;
    while (pos < stream.length) {
      const len = 1 + rnd(12);
      bus.publish('p', { t: pos, type: 'o', data: stream.slice(pos, pos + len) });
      pos += len;
    }
    const got = bus.subscribe('p', () => {}).snapshot.filter((f) => f.type === 'o').map((f) => f.data as string).join('');
    if (got !== oracle(stream)) {
      t.fail(`round ${round}: ${JSON.stringify(stream)} gave ${JSON.stringify(got)}`);
      return;
    }
  }
  t.pass('300 random streams, random chunking: snapshot = stream from its last clear');
});
