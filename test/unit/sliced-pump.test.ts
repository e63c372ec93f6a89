/**
 * SlicedPump (protocols/bounded.ts): the source reads only while no hold is left. A hold taken by
 * the work a release() ran (the viewer's socket full again while the recorder's backlog drained)
 * keeps the source paused: before, release() resumed it anyway, the server's bytes piled up in
 * the relay's queue and a VNC flood ended as resource_limit (test/proxy/fairness retried for it).
 */
import t from 'tap';
import { SlicedPump } from '../../protocols/bounded.js';

class Src {
  paused = false;
  pauses = 0;
  pause(): void { this.paused = true; this.pauses++; }
  resume(): void { this.paused = false; }
}

t.test('a hold taken during the work a release ran keeps the source paused', async (t) => {
  const src = new Src();
  let queued = 0;
  let backpressureOnNext = false;
  const pump: SlicedPump = new SlicedPump(src, () => {
    // Forward what is queued; the destination may push back while doing so.
    queued = 0;
    if (backpressureOnNext) { backpressureOnNext = false; pump.hold('viewer backpressure'); }
    return false;
  });
  pump.hold('recorder');
  t.ok(src.paused, 'held: paused');
  queued = 10;
  backpressureOnNext = true;
  pump.release('recorder');
  t.ok(pump.held('viewer backpressure'), 'the work took a new hold');
  t.ok(src.paused, 'and the source stays paused');
  pump.release('viewer backpressure');
  t.notOk(src.paused, 'the last release resumes it');
  t.equal(queued, 0);
});

t.test('a release with another hold left resumes nothing; a slice that runs out reschedules and resumes once done', async (t) => {
  const src = new Src();
  let work = 3;
  const pump = new SlicedPump(src, (more) => { while (work > 0 && more()) { work--; const until = performance.now() + 6; while (performance.now() < until) { /* a slow unit */ } } return work > 0; }, 4);
  pump.hold('a');
  pump.hold('b');
  pump.release('a');
  t.ok(src.paused, "'b' is still held");
  pump.release('b');
  t.ok(src.paused, 'paused while slices are left');
  await new Promise((r) => setTimeout(r, 60));
  t.equal(work, 0, 'every unit done over later turns');
  t.ok(pump.deferrals >= 1, `deferred ${pump.deferrals} time(s)`);
  t.notOk(src.paused, 'resumed once the work is done');
});
