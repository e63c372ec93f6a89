import t from 'tap';
import { ManualClock } from '../../policies/clock.js';
t.test('manual clock fires timers in due order', async (t) => {
  const c = new ManualClock(0);
  const seen: string[] = [];
  c.setTimer(200, () => seen.push('b'));
  c.setTimer(100, () => seen.push('a'));
  const h = c.setTimer(150, () => seen.push('x'));
  h.cancel();
  c.advance(150);
  t.same(seen, ['a']);
  c.advance(100);
  t.same(seen, ['a', 'b']);
  t.equal(c.now(), 250);
});
