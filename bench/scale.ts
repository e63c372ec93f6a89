/**
 * Concurrent idle proxied sessions and the gateway's memory per session: PostgreSQL sessions (each
 * with its own minted role and upstream backend) and SSH sessions (each with its own minted
 * account and sshd session), held open at once, RSS of the gateway before and with them open.
 *
 * How many: TOLLGATE_BENCH_SCALE_POSTGRES and TOLLGATE_BENCH_SCALE_SSH (the goal is 2,000 of
 * each). The defaults are lower because on this machine the demo PostgreSQL cluster's
 * max_connections (every proxied session is a backend) and one ssh + sshpass client process pair
 * per SSH session bound what can run; the rows say how many ran.
 */
import type { ChildProcess } from 'node:child_process';
import type { BenchRow, DemoGateway, Scenario } from './harness.js';
import { spawnIdle, targetFor, type Proto } from './clients.js';

const GiB_KiB = 1024 * 1024;

function count(proto: Proto, smoke: boolean): number {
  const env = process.env[`TOLLGATE_BENCH_SCALE_${proto.toUpperCase()}`];
  if (env) return Math.max(1, Number(env));
  if (smoke) return 3;
  return proto === 'postgres' ? 150 : 200;
}

async function liveSessions(demo: DemoGateway, target: string): Promise<number> {
  const list = await demo.api('carol', 'GET', `/api/v1/sessions?state=active&limit=5000&target=${encodeURIComponent(target)}`) as { target: string }[];
  return list.filter((s) => s.target === target).length;
}

async function scaleOne(demo: DemoGateway, proto: Proto, n: number, log: (m: string) => void): Promise<BenchRow[]> {
  const t = await targetFor(demo, proto);
  if (!t) throw new Error(`no ${proto} demo target`);
  const settle = () => new Promise((r) => setTimeout(r, 1500));
  const kids: ChildProcess[] = [];
  try {
    // PostgreSQL: one reusable secret for all; SSH: a single-use secret per session.
    const shared = proto === 'postgres' ? await t.gateway(true) : null;
    await settle();
    const before = demo.stats().rssKiB;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      kids.push(spawnIdle(proto, shared ?? await t.gateway()));
      // Open in batches so sshd's MaxStartups (unauthenticated connections) does not refuse them.
      if (proto === 'ssh' && i % 8 === 7) await new Promise((r) => setTimeout(r, 300));
    }
    let live = 0;
    for (let i = 0; i < 1800; i++) {
      live = await liveSessions(demo, t.target.name);
      if (live >= n) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const openMs = performance.now() - t0;
    await settle();
    const after = demo.stats().rssKiB;
    log(`scale ${proto}: ${live}/${n} idle sessions in ${openMs.toFixed(0)} ms; gateway rss ${before} → ${after} KiB`);
    const c = `${n} idle ${proto} sessions`;
    const rows: BenchRow[] = [
      { scenario: 'scale', case: c, tool: 'tollgate', metric: 'sessions live', value: live, unit: 'sessions', better: 'higher' },
      { scenario: 'scale', case: c, tool: 'tollgate', metric: 'time to open all', value: openMs, unit: 'ms', better: 'lower' },
      { scenario: 'scale', case: c, tool: 'tollgate', metric: 'gateway RSS with them open', value: after / 1024, unit: 'MiB', better: 'lower', note: `before: ${(before / 1024).toFixed(1)} MiB` },
    ];
    // RSS growth over the sessions; when a garbage collection shrank the heap meanwhile, the growth is
    // not measurable this way and the rows are left out (the log says so) rather than shown negative.
    if (live && after > before) {
      const per = (after - before) / live;
      rows.push({ scenario: 'scale', case: c, tool: 'tollgate', metric: 'gateway RSS per session', value: per, unit: 'KiB', better: 'lower' });
      rows.push({ scenario: 'scale', case: c, tool: 'tollgate', metric: 'idle sessions per GiB', value: GiB_KiB / per, unit: 'sessions/GiB', better: 'higher', note: 'from the RSS growth per session' });
    } else {
      log(`scale ${proto}: memory per session not measurable in this run (RSS did not grow: a GC ran meanwhile)`);
    }
    return rows;
  } finally {
    for (const k of kids) k.kill('SIGKILL');
    await demo.api('alice', 'POST', `/api/v1/grants/${t.grantId}/revoke`, { reason: 'bench done' }).catch(() => undefined);
  }
}

export const scenario: Scenario = {
  name: 'scale',
  describe: 'idle PostgreSQL and SSH sessions held open, gateway memory per session',
  async run(opts, getDemo) {
    const demo = await getDemo();
    const rows: BenchRow[] = [];
    for (const proto of ['postgres', 'ssh'] as const) {
      rows.push(...await scaleOne(demo, proto, count(proto, opts.smoke), opts.log));
      await new Promise((r) => setTimeout(r, 2000));
    }
    return rows;
  },
};
