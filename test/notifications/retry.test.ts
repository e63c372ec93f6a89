/**
 * Delivery never holds the workflow up, is retried with backoff, gives up visibly, can be retried
 * by the SOC, and survives a gateway restart (the queue is in the store): a webhook that never
 * answers while requests and approvals go on; one answering 500 until it gives up (audited, on
 * the status API with its error); an SMTP server that is down until after a restart.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../protocols/net.js';
import { ensureTlsMaterial } from '../../proxy/tls.js';
import { moduleMap } from '../../protocols/index.js';
import { fakeModule, FakeTarget } from '../support/fake-module.js';
import { startTestGateway } from '../support/gateway.js';
import { startReceiver, startSmtp } from '../support/receivers.js';

/** A gateway with one in-memory target (medium risk: one approver) and these extra settings. */
function gateway(extra: Record<string, unknown>, dataDir?: string) {
  const modules = moduleMap();
  modules.set('fake', fakeModule(new FakeTarget()));
  return startTestGateway({ targets: [{ name: 'box', protocol: 'fake', address: 'mem', risk: 'medium', roles: [{ name: 'user' }] }], modules, listeners: ['fake'], extra, dataDir });
}

t.test('a webhook that never answers holds nothing up; a failing one is retried with backoff, gives up visibly, and the SOC can retry it', async (t) => {
  const hook = await startReceiver();
  t.teardown(() => hook.close());
  hook.answer = () => 'hang';
  const tg = await gateway({ notifications: { webhooks: [{ name: 'ops', url: hook.url, secret: { value: 'k'.repeat(32) }, timeout: '3s', events: ['request.pending'] }], retry: { attempts: 3, initialDelay: '300ms', maxDelay: '5s' } } });
  t.teardown(() => tg.close());

  const first = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'one' });
  t.equal(first.status, 201);
  await hook.waitFor((all) => all.length === 1, 10_000, 'the first delivery');
  t.equal(hook.hanging.length, 1, 'the receiver holds the delivery open');
  // While it hangs, the workflow goes on at its usual pace.
  const t0 = Date.now();
  const second = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'two' });
  const approved = await tg.api('bob', 'POST', `/api/v1/requests/${first.body.id}/approve`, {});
  const denied = await tg.api('dave', 'POST', `/api/v1/requests/${second.body.id}/deny`, { comment: 'no' });
  t.same([second.status, approved.status, approved.body.state, denied.body.state], [201, 200, 'approved', 'denied']);
  t.ok(Date.now() - t0 < 2500, `three workflow calls took ${Date.now() - t0} ms, less than the hook's 3 s timeout`);

  // The hung delivery times out and is tried again; both still hang, then the receiver answers 500.
  hook.answer = () => 500;
  const st = await tg.api('carol', 'GET', '/api/v1/notifications');
  t.equal(st.status, 200);
  await waitFor(async () => (await tg.store.listDeliveries({ state: ['failed'] })).length === 2, 20_000, 'both deliveries to give up');
  const times = (id: string) => hook.requests.filter((r) => r.headers['x-tollgate-delivery'] === id).map((r) => r.at);
  const failed = await tg.store.listDeliveries({ state: ['failed'] });
  for (const d of failed) {
    t.equal(d.attempts, 3, 'three attempts, then it gives up');
    t.match(d.lastError, /^http:\/\/127\.0\.0\.1:\d+ answered 500: receiver says no \(500\)$/, 'the last error, with the origin only (no URL path)');
    const at = times(d.id);
    t.equal(at.length, 3, 'the receiver saw each attempt');
    t.ok(at[2]! - at[1]! >= 550, `backoff doubles: ${at[1]! - at[0]!} ms then ${at[2]! - at[1]!} ms`);
  }
  const timedOut = failed.find((d) => times(d.id)[0]! < t0);
  t.ok(timedOut, 'the first one had hung');
  const audits = await tg.store.listAudit({ action: 'notification.failed' });
  t.same(audits.map((a) => a.subject).sort(), failed.map((d) => d.id).sort(), 'each give-up is audited');
  t.match(audits[0]!.data, { channel: 'webhook:ops', topic: 'request.pending', attempts: 3, error: /answered 500/ });

  const status = (await tg.api('carol', 'GET', '/api/v1/notifications')).body;
  t.equal(status.counts.failed, 2);
  t.match(status.problems, [{ channel: 'webhook:ops', state: 'failed', attempts: 3, lastError: /answered 500/, title: /asks for box as user/ }, { state: 'failed' }]);
  t.notMatch(JSON.stringify(status), /s3cr3t-path|kkkkkkkk/, 'neither the URL path nor the key on the status');

  // The SOC retries one once the receiver is fixed.
  hook.answer = () => 204;
  t.equal((await tg.api('bob', 'POST', `/api/v1/notifications/deliveries/${failed[0]!.id}/retry`, {})).status, 403, 'SOC only');
  const retried = await tg.api('carol', 'POST', `/api/v1/notifications/deliveries/${failed[0]!.id}/retry`, {});
  t.equal(retried.status, 200);
  t.match(retried.body, { id: failed[0]!.id, state: 'pending', attempts: 0 });
  await waitFor(async () => (await tg.store.getDelivery(failed[0]!.id))?.state === 'delivered', 10_000, 'the retried delivery');
  t.equal(times(failed[0]!.id).length, 4, 'sent once more');
  t.match((await tg.store.listAudit({ action: 'notification.retried' }))[0], { subject: failed[0]!.id, data: { by: 'carol' } });
  t.equal((await tg.api('carol', 'POST', `/api/v1/notifications/deliveries/${failed[0]!.id}/retry`, {})).status, 404, 'a delivered one is not sent again');
  t.equal((await tg.api('carol', 'POST', '/api/v1/notifications/deliveries/nope/retry', {})).status, 404);
});

t.test('an email queued while the SMTP server is down arrives after a gateway restart', async (t) => {
  const tlsDir = mkdtempSync(join(tmpdir(), 'tg-smtp-tls-'));
  const dataDir = mkdtempSync(join(tmpdir(), 'tg-gw-restart-'));
  t.teardown(() => { rmSync(tlsDir, { recursive: true, force: true }); rmSync(dataDir, { recursive: true, force: true }); });
  const tls = ensureTlsMaterial(tlsDir, ['127.0.0.1']);
  const port = await freePort();
  const extra = {
    notifications: {
      email: { from: 'tollgate@gateway.test', smtp: { host: '127.0.0.1', port, user: 'tg', password: { value: 'pw' }, ca: { value: tls.ca }, servername: 'localhost', timeout: '2s' } },
      retry: { attempts: 20, initialDelay: '200ms', maxDelay: '400ms' },
    },
  };
  const first = await gateway(extra, dataDir);
  const r = await first.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'while mail is down' });
  t.equal(r.status, 201);
  await waitFor(async () => (await first.store.listDeliveries({ failing: true })).length === 2, 10_000, 'failed attempts');
  const pending = await first.store.listDeliveries({ state: ['pending'] });
  t.same(pending.map((d) => d.recipient).sort(), ['bob@test', 'dave@test']);
  t.match(pending[0]!.lastError, /ECONNREFUSED/);
  await first.close();

  const smtp = await startSmtp({ key: tls.key.reveal(), cert: readFileSync(join(tlsDir, 'tls', 'server.pem'), 'utf8'), user: 'tg', pass: 'pw', port });
  t.teardown(() => smtp.close());
  const second = await gateway(extra, dataDir);
  t.teardown(() => second.close());
  const mails = await smtp.waitFor(2);
  t.same(mails.map((m) => m.envelopeTo[0]).sort(), ['bob@test', 'dave@test'], 'both arrive after the restart');
  t.match(mails[0]!.text, 'Reason: while mail is down');
  await second.gw.notifications.idle();
  t.same((await second.store.listDeliveries({ state: ['pending', 'sending', 'failed'] })), [], 'nothing left in the queue');
  await new Promise((res) => setTimeout(res, 600));
  t.equal(smtp.mails.length, 2, 'and each only once');
});

async function waitFor(fn: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
