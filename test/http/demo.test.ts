/** The demo wiki app (`tollgate demo`): reached through the gateway it verifies the assertion; directly it refuses. */
import t from 'tap';
import pino from 'pino';
import { httpModule } from '../../protocols/http/index.js';
import { startTestGateway } from '../support/gateway.js';
import { raw, signInApp } from './support.js';
import { onlyHttp } from './support.js';

t.test('demo wiki behind the gateway', async (t) => {
  const d = (await httpModule.demo!('/nonexistent', pino({ level: 'silent' })))!;
  t.teardown(() => d.stop());
  t.equal(d.targets[0]!.name, 'wiki');
  const direct = await fetch(`${d.targets[0]!.address}/`);
  t.equal(direct.status, 401, 'not reachable around the gateway');
  const tg = await startTestGateway({ modules: onlyHttp(), targets: d.targets });
  t.teardown(() => tg.close());
  const port = Number(new URL(tg.url).port);
  const host = `wiki.localhost:${port}`;
  const s = await signInApp(tg, 'alice', 'wiki', `http://${host}/`);
  await tg.grant('alice', 'wiki', 'reader');
  const page = await raw(port, { path: '/', host, headers: { cookie: s.cookie } });
  t.equal(page.status, 200);
  t.match(page.body.toString(), /Hello <b>alice<\/b>/);
  const who = await raw(port, { path: '/api/whoami', host, headers: { cookie: s.cookie } });
  t.match(JSON.parse(who.body.toString()), { verified: true, sub: 'alice', aud: 'wiki', role: 'reader' });
});

t.test('checkTarget: reachable, and a clear detail when not', async (t) => {
  const d = (await httpModule.demo!('/nonexistent', pino({ level: 'silent' })))!;
  const target = d.targets[0]!;
  const ok = await httpModule.checkTarget!({} as never, target);
  t.match(ok, { ok: true, detail: /reachable: GET http:\/\/127\.0\.0\.1:\d+\/ answered 401/ });
  await d.stop();
  const dead = await httpModule.checkTarget!({} as never, target);
  t.match(dead, { ok: false, detail: /cannot reach .*ECONNREFUSED/ });
});
