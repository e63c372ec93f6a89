/**
 * KeyedLimiter (protocols/bounded.ts): at most N jobs at once per key, the rest in order; a failing
 * job frees its slot; keys do not wait for each other.
 */
import t from 'tap';
import { KeyedLimiter } from '../../protocols/bounded.js';

const tick = () => new Promise<void>((r) => setImmediate(r));

t.test('at most N per key at once, queued in order, slots handed on', async (t) => {
  const l = new KeyedLimiter(3);
  let now = 0, peak = 0;
  const order: number[] = [];
  const gates: (() => void)[] = [];
  const jobs = Array.from({ length: 10 }, (_, i) => l.run('a', async () => {
    now++; peak = Math.max(peak, now); order.push(i);
    await new Promise<void>((r) => gates.push(r));
    now--;
    return i;
  }));
  await tick();
  t.same(l.load('a'), { running: 3, waiting: 7 });
  while (gates.length || l.load('a').running) { gates.shift()?.(); await tick(); }
  t.same(await Promise.all(jobs), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'every job ran and returned its value');
  t.equal(peak, 3, 'never more than 3 at once');
  t.same(order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'in the order asked');
  t.same(l.load('a'), { running: 0, waiting: 0 }, 'nothing held afterwards');
});

t.test('a failing job frees its slot; another key never waits', async (t) => {
  const l = new KeyedLimiter(1);
  let release!: () => void;
  const held = l.run('a', () => new Promise<void>((r) => { release = r; }));
  const failing = l.run('a', async () => { throw new Error('boom'); });
  const after = l.run('a', async () => 'ran');
  const other = await l.run('b', async () => 'b ran');
  t.equal(other, 'b ran', 'key b ran while key a was full');
  release();
  await held;
  await t.rejects(failing, /boom/);
  t.equal(await after, 'ran', 'the job after a failure runs');
  t.same(l.load('a'), { running: 0, waiting: 0 });
});
