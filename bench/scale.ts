/**
 * Concurrent idle proxied sessions and the gateway's memory per session (PostgreSQL sessions,
 * each with its own minted role and upstream backend), bounded by the demo cluster's
 * max_connections on this machine.
 */
import type { ChildProcess } from 'node:child_process';
import type { BenchRow, Scenario } from './harness.js';
import { spawnIdle, targetFor } from './clients.js';

export const scenario: Scenario = {
  name: 'scale',
  describe: 'idle sessions held open, gateway memory per session',
  async run(opts, getDemo) {
    const demo = await getDemo();
    const n = opts.smoke ? 3 : 80;
    const t = await targetFor(demo, 'postgres');
    if (!t) throw new Error('no postgres demo target');
    const conn = await t.gateway(true);
    const settle = () => new Promise((r) => setTimeout(r, 1000));
    await settle();
    const before = demo.stats().rssKiB;
    const kids: ChildProcess[] = [];
    const t0 = performance.now();
    for (let i = 0; i < n; i++) kids.push(spawnIdle('postgres', conn));
    let live = 0;
    for (let i = 0; i < 1200; i++) {
      live = (await demo.api('carol', 'GET', '/api/v1/sessions?state=active&limit=1000')).length;
      if (live >= n) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const openMs = performance.now() - t0;
    await settle();
    const after = demo.stats().rssKiB;
    for (const k of kids) k.kill('SIGKILL');
    await demo.api('alice', 'POST', `/api/v1/grants/${t.grantId}/revoke`, { reason: 'bench done' }).catch(() => undefined);
    opts.log(`scale: ${live}/${n} idle sessions in ${openMs.toFixed(0)} ms; rss ${before} → ${after} KiB`);
    const rows: BenchRow[] = [
      { scenario: 'scale', case: `${n} idle postgres sessions`, tool: 'tollgate', metric: 'sessions live', value: live, unit: 'sessions', better: 'higher' },
      { scenario: 'scale', case: `${n} idle postgres sessions`, tool: 'tollgate', metric: 'time to open all', value: openMs, unit: 'ms', better: 'lower' },
      { scenario: 'scale', case: `${n} idle postgres sessions`, tool: 'tollgate', metric: 'gateway RSS with them open', value: after / 1024, unit: 'MiB', better: 'lower', note: `before: ${(before / 1024).toFixed(1)} MiB` },
    ];
    // RSS growth over the sessions; when a garbage collection shrank the heap meanwhile, the growth is
    // not measurable this way and the row is left out (the log says so) rather than shown negative.
    if (live && after > before) {
      rows.push({ scenario: 'scale', case: `${n} idle postgres sessions`, tool: 'tollgate', metric: 'gateway memory per session', value: (after - before) / live, unit: 'KiB', better: 'lower' });
    } else {
      opts.log('scale: memory per session not measurable in this run (RSS did not grow: a GC ran meanwhile)');
    }
    return rows;
  },
};
