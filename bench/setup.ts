/** Time from connect to first result, including minting the per-session account, per protocol. */
import { median, percentile, processStats, type BenchRow, type Scenario } from './harness.js';
import { runOnce, targetFor, type Proto } from './clients.js';

export const scenario: Scenario = {
  name: 'setup',
  describe: 'connect → first result, per protocol (percentiles; direct shown for reference)',
  async run(opts, getDemo) {
    const demo = await getDemo();
    const n = opts.smoke ? 2 : 20;
    const rows: BenchRow[] = [];
    for (const proto of ['ssh', 'postgres', 'mysql'] as Proto[]) {
      const t = await targetFor(demo, proto);
      if (!t) { opts.log(`setup: no ${proto} demo target`); continue; }
      const through: number[] = [];
      const direct: number[] = [];
      let gatewayMs = 0;
      for (let i = 0; i < n; i++) {
        // Gateway CPU per connection: the secret's minting, the session's set-up and tear-down included.
        const cpu0 = processStats(demo.pid).cpuMs;
        const conn = await t.gateway();
        through.push(await runOnce(proto, conn));
        gatewayMs += processStats(demo.pid).cpuMs - cpu0;
        if (t.direct) direct.push(await runOnce(proto, t.direct));
      }
      rows.push({ scenario: 'setup', case: `${proto} connect+first result`, tool: 'tollgate', metric: 'proxy CPU per connection', value: (gatewayMs * 1000) / n, unit: 'µs', better: 'lower', note: 'the gateway process: connection secret, account minting, session set-up; the session\'s end may fall after the client exits' });
      for (const [tool, xs] of [['tollgate', through], ['direct', direct]] as const) {
        if (!xs.length) continue;
        for (const [metric, v] of [['p50', median(xs)], ['p90', percentile(xs, 90)], ['p99', percentile(xs, 99)]] as const) {
          rows.push({ scenario: 'setup', case: `${proto} connect+first result`, tool, metric, value: v, unit: 'ms', better: 'lower' });
        }
      }
      opts.log(`setup ${proto}: tollgate p50 ${median(through).toFixed(0)} ms${direct.length ? `, direct p50 ${median(direct).toFixed(0)} ms` : ''}`);
      await demo.api('alice', 'POST', `/api/v1/grants/${t.grantId}/revoke`, { reason: 'bench done' }).catch(() => undefined);
    }
    return rows;
  },
};
