/**
 * MemoryReturn (proxy/memory.ts): full collections (three, a second apart) once a burst of sessions has ended and the
 * gateway stayed quiet; none for small dips, none while sessions keep starting.
 */
import t from 'tap';
import { MemoryReturn } from '../../proxy/memory.js';

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('a burst that ends: one GC after the quiet time', async (t) => {
  let gcs = 0;
  const m = new MemoryReturn(() => { gcs++; }, 50, 100);
  for (let n = 1; n <= 400; n++) m.live(n, true);
  for (let n = 399; n >= 0; n--) m.live(n, false);
  t.equal(gcs, 0, 'not at once');
  await wait(120);
  t.equal(gcs, 1, 'the first collection once quiet');
  await wait(2300);
  t.equal(gcs, 3, 'three passes, a second apart (V8 frees empty pages over the later ones)');
  for (let n = 0; n < 5; n++) m.live(0, false);
  await wait(1200);
  t.equal(gcs, 3, 'none more without a new burst');
});

t.test('a small dip, or sessions starting again, asks for none', async (t) => {
  let gcs = 0;
  const m = new MemoryReturn(() => { gcs++; }, 50, 100);
  for (let n = 1; n <= 80; n++) m.live(n, true);
  for (let n = 79; n >= 0; n--) m.live(n, false);
  await wait(120);
  t.equal(gcs, 0, '80 sessions is not a burst');
  for (let n = 1; n <= 400; n++) m.live(n, true);
  for (let n = 399; n >= 50; n--) m.live(n, false);
  m.live(51, true);
  await wait(120);
  t.equal(gcs, 0, 'a start during the quiet time cancels it');
  m.stop();
});

t.test('the real gc() is available to the gateway', async (t) => {
  const m = new MemoryReturn(undefined, 10, 1);
  m.live(4, true);
  m.live(0, false);
  await wait(60);
  t.equal(m.collections, 1, 'V8 collected once (gc exposed at run time)');
});
