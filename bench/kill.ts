/**
 * Time from the revoke API call to each client's TCP connection being closed by the gateway (seen
 * at a TCP tap between the clients and the gateway, bench/clients.ts), with 1 and N live
 * sessions (PostgreSQL sessions: each holds a minted role and an upstream backend). N is bounded
 * by the demo cluster's max_connections on this machine, not by the gateway. Then the same over
 * two nodes (kill-nodes.ts).
 */
import type { ChildProcess } from 'node:child_process';
import { median, percentile, type BenchRow, type Scenario } from './harness.js';
import { pgSleeping, spawnIdle, startCloseTap, targetFor } from './clients.js';
import { killAcrossNodes } from './kill-nodes.js';

/** Live sessions under this round's grant (a session of an earlier round may still be ending). */
async function liveCount(demo: Awaited<ReturnType<Parameters<Scenario['run']>[1]>>, grantId: string, log: (m: string) => void): Promise<number> {
  try {
    return (await demo.api('carol', 'GET', '/api/v1/sessions?state=active&limit=1000') as { grantId: string }[]).filter((x) => x.grantId === grantId).length;
  } catch (e) {
    // A busy gateway (60 sign-ins at once on a loaded machine) may drop one poll: say why, poll again.
    log(`polling the live sessions failed: ${(e as Error).message}${(e as { cause?: Error }).cause ? ` (${(e as { cause: Error }).cause.message})` : ''}`);
    return -1;
  }
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
        const tap = await startCloseTap(conn);
        const kids: ChildProcess[] = [];
        try {
          for (let i = 0; i < n; i++) kids.push(spawnIdle('postgres', { ...conn, host: tap.host, port: tap.port }));
          for (let i = 0; i < 600 && (await liveCount(demo, t.grantId, opts.log)) < n; i++) await new Promise((r) => setTimeout(r, 100));
          // Listed live is not yet through: wait (bounded) until their statements run on the server.
          for (let i = 0; i < 300 && (await pgSleeping(t.direct!)) < n; i++) await new Promise((r) => setTimeout(r, 100));
          const up = Math.min(await liveCount(demo, t.grantId, opts.log), await pgSleeping(t.direct!));
          // A client that could not connect on a loaded machine (psql's own timeout) is left out, and said so.
          if (up < Math.ceil(n * 0.9) || tap.open < up) throw new Error(`only ${up} of ${n} sessions are live (${tap.open} connections open)`);
          if (up < n) opts.log(`round ${round + 1}: ${up} of ${n} sessions came up; measuring those`);
          const closed = tap.nextCloses(tap.open, 30_000);
          const t0 = performance.now();
          await demo.api('alice', 'POST', `/api/v1/grants/${t.grantId}/revoke`, { reason: 'bench kill' });
          const ends = (await closed).map((x) => x - t0);
          samples.push(Math.max(...ends));
          opts.log(`kill with ${n} sessions (round ${round + 1}): p50 ${percentile(ends, 50).toFixed(1)} ms, p99 ${percentile(ends, 99).toFixed(1)} ms, max ${Math.max(...ends).toFixed(1)} ms`);
        } finally {
          for (const k of kids) k.kill('SIGKILL');
          await tap.close();
        }
      }
      opts.log(`kill with ${n} sessions: ${median(samples).toFixed(1)} ms`);
      rows.push({ scenario: 'kill', case: `revoke with ${n} live session(s)`, tool: 'tollgate', metric: 'last client TCP close', value: median(samples), unit: 'ms', better: 'lower' });
    }
    // The same with the sessions spread over two gateways on one PostgreSQL store (bench/kill-nodes.ts).
    rows.push(...await killAcrossNodes(opts, demo));
    return rows;
  },
};
