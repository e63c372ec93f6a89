/**
 * bench/http.ts's wrk output parser (the scenario's smoke run is in test/bench/smoke.test.ts).
 */
import t from 'tap';
import { parseWrk } from '../../bench/http.js';

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

// The smoke run of the http scenario itself is part of test/bench/smoke.test.ts (all scenarios, one run).
