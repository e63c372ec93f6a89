/**
 * Secrets stay secret: after a whole flow (token, request, connection secret, session, kill),
 * no API token, connection secret or minted credential appears in the gateway's logs (trace
 * level), the audit log, the store or the recordings.
 */
import t from 'tap';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startTestGateway } from '../support/gateway.js';
import { FakeTarget, fakeModule, fakeConnect } from '../support/fake-module.js';

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

t.test('no secret reaches logs, audit, store or recordings', async (t) => {
  const lines: string[] = [];
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  const tg = await startTestGateway({ modules: new Map([['fake', mod]]), listeners: ['fake'], targets: [{ name: 'box', protocol: 'fake', address: 'x', risk: 'low', roles: [{ name: 'user' }] }], logSink: (l) => lines.push(l) });
  t.teardown(() => tg.close());
  const tok = await tg.api('alice', 'POST', '/api/v1/tokens', { name: 'ci', ttl: '1h' });
  t.equal(tok.status, 201);
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id);
  const wrong = await fakeConnect(mod.ctx!, ft, 'box', `${s.secret}x`);
  t.notOk(wrong.ok);
  const c = await fakeConnect(mod.ctx!, ft, 'box', s.secret);
  if (!c.ok) throw new Error(c.reason);
  c.session.recording.cast({ width: 80, height: 24 }).output('hello\r\n');
  await tg.api('carol', 'POST', `/api/v1/sessions/${c.session.id}/kill`, { reason: 'test' });
  const secrets = [tok.body.token, s.secret, `${s.secret}x`, tg.token('alice'), tg.token('carol')];
  const logText = lines.join('\n');
  t.ok(lines.some((l) => l.includes('terminating session')), 'the gateway logged the session');
  const audit = JSON.stringify(await tg.store.listAudit({ limit: 10_000 }));
  const stored = filesUnder(tg.dataDir).map((f) => readFileSync(f).toString('latin1')).join('\n');
  for (const sec of secrets) {
    t.notOk(logText.includes(sec), 'not in the logs');
    t.notOk(audit.includes(sec), 'not in the audit log');
    t.notOk(stored.includes(sec), 'not in the store, WAL or recordings');
  }
});
