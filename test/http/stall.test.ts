/**
 * A client that stops reading a large download is cut off by the front (uWS drops a socket whose
 * backpressure makes no progress for ~10 s) and the upstream request is aborted with it, so a
 * stalled browser cannot pin an upstream connection forever; other traffic keeps flowing meanwhile.
 */
import t from 'tap';
import net from 'node:net';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestGateway } from '../support/gateway.js';
import { onlyHttp, pattern, raw, signInApp } from './support.js';

t.test('stalled client releases the upstream request', async (t) => {
  let upstreamClosedAt = 0;
  const big = pattern(50 * 1024 * 1024);
  const up = http.createServer((req, res) => {
    if (req.url === '/small') { res.end('ok'); return; }
    res.writeHead(200, { 'content-length': big.length });
    res.end(big);
    res.on('close', () => { upstreamClosedAt = Date.now(); });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  t.teardown(() => { up.closeAllConnections(); up.close(); });
  const tg = await startTestGateway({
    modules: onlyHttp(),
    targets: [{ name: 'big', protocol: 'http', address: `http://127.0.0.1:${(up.address() as AddressInfo).port}`, roles: [{ name: 'user' }], credentials: { mode: 'none' } }],
  });
  t.teardown(() => tg.close());
  const port = Number(new URL(tg.url).port);
  const host = `big.localhost:${port}`;
  const s = await signInApp(tg, 'alice', 'big', `http://${host}/x`);
  await tg.grant('alice', 'big', 'user');
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => undefined);
  t.teardown(() => sock.destroy());
  const t0 = Date.now();
  sock.write(`GET /big HTTP/1.1\r\nHost: ${host}\r\nCookie: ${s.cookie}\r\n\r\n`);
  sock.pause();
  let served = 0;
  while (!upstreamClosedAt && Date.now() - t0 < 40_000) {
    const r = await raw(port, { path: '/small', host, headers: { cookie: s.cookie } });
    if (r.status === 200 && r.body.toString() === 'ok') served++;
    await new Promise((res) => setTimeout(res, 500));
  }
  t.ok(upstreamClosedAt, `upstream request released after ${upstreamClosedAt - t0} ms`);
  t.ok(upstreamClosedAt - t0 < 25_000, 'cut by the front (~10 s), before the 30 s upstream body timeout');
  t.ok(served >= 5, `other requests served meanwhile (${served})`);
  // The stalled socket was closed by the gateway: reading it now reaches the end.
  const ended = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 10_000);
    sock.on('close', () => { clearTimeout(timer); resolve(true); });
    sock.resume();
  });
  t.ok(ended, 'the gateway closed the stalled client');
});
