/**
 * Smoke run of bench/http.ts: wrk against the direct upstream, nginx and Tollgate (`tollgate serve`,
 * real OIDC sign-in in Chromium) in one run; every tool answers every case without errors.
 */
import t from 'tap';
import { parseWrk, run } from '../../bench/http.js';

t.test('wrk output parser', async (t) => {
  const out = `Running 1s test @ http://127.0.0.1:1/small
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   210.50us  100.00us   2.10ms   90.00%
  Latency Distribution
     50%  180.00us
     75%  220.00us
     90%  300.00us
     99%    1.20ms
  30000 requests in 1.00s, 5.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  29990.12
Transfer/sec:      5.00MB
`;
  const r = parseWrk(out);
  t.equal(r.rps, 29990.12);
  t.equal(r.p50ms, 0.18);
  t.equal(r.p99ms, 1.2);
  t.equal(r.errors, 3);
});

t.test('bench http --smoke', async (t) => {
  const rows = await run({ smoke: true });
  for (const tool of ['direct', 'nginx', 'tollgate']) {
    for (const c of ['small', '1 MiB']) {
      const rps = rows.find((r) => r.tool === tool && r.metric === 'requests/s' && r.case.includes(c));
      t.ok(rps && Number.isFinite(rps.value) && rps.value > 0, `${tool} ${c}: ${rps?.value} req/s`);
      const p99 = rows.find((r) => r.tool === tool && r.metric === 'p99 latency' && r.case.includes(c));
      t.ok(p99 && Number.isFinite(p99.value) && p99.value > 0, `${tool} ${c}: p99 ${p99?.value} ms`);
    }
  }
});
