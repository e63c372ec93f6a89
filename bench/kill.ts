/**
 * Time from the revoke / lock API call to the client's connection closing, with 1 and N live
 * sessions (PostgreSQL sessions: each holds a minted role and an upstream backend). N is bounded
 * by the demo cluster's max_connections on this machine, not by the gateway. Then the same over
 * two nodes (kill-nodes.ts).
 */
import type { ChildProcess } from 'node:child_process';
import { median, type BenchRow, type Scenario } from './harness.js';
import { spawnIdle, targetFor } from './clients.js';
import { killAcrossNodes } from './kill-nodes.js';

async function liveCount(demo: Awaited<ReturnType<Parameters<Scenario['run']>[1]>>): Promise<number> {
  return (await demo.api('carol', 'GET', '/api/v1/sessions?state=active&limit=1000')).length;
}

export const scenario: Scenario = {
  name: 'kill',
  describe: 'revoke → every client connection closed, with 1 and N live sessions',
  async run(opts, getDemo) {
    const demo = await getDemo();
    const rows: BenchRow[] = [];
    for (const n of opts.smoke ? [1] : [1, 60]) {
      const samples: number[] = [];
      for (let round = 0; round < (opts.smoke ? 1 : 3); round++) {
        const t = await targetFor(demo, 'postgres');
        if (!t) throw new Error('no postgres demo target');
        const conn = await t.gateway(true);
        const kids: ChildProcess[] = [];
        for (let i = 0; i < n; i++) kids.push(spawnIdle('postgres', conn));
        for (let i = 0; i < 600 && (await liveCount(demo)) < n; i++) await new Promise((r) => setTimeout(r, 100));
        const closed = kids.map((k) => new Promise<number>((r) => k.once('close', () => r(performance.now()))));
        const t0 = performance.now();
        await demo.api('alice', 'POST', `/api/v1/grants/${t.grantId}/revoke`, { reason: 'bench kill' });
        const ends = await Promise.all(closed);
        samples.push(Math.max(...ends) - t0);
        for (const k of kids) k.kill('SIGKILL');
      }
      opts.log(`kill with ${n} sessions: ${median(samples).toFixed(1)} ms`);
      rows.push({ scenario: 'kill', case: `revoke with ${n} live session(s)`, tool: 'tollgate', metric: 'all clients closed', value: median(samples), unit: 'ms', better: 'lower' });
    }
    // The same with the sessions spread over two gateways on one PostgreSQL store (bench/kill-nodes.ts).
    rows.push(...await killAcrossNodes(opts, demo));
    return rows;
  },
};
