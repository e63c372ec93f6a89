/**
 * Notifications driven by time, on a manual clock: an escalation reaches the escalation group,
 * and a grant about to end is announced to its holder once (not again on the next scans, not for a
 * grant shorter than the warning), through a real SMTP server.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../policies/clock.js';
import { moduleMap } from '../../protocols/index.js';
import { ensureTlsMaterial } from '../../proxy/tls.js';
import { fakeModule, FakeTarget } from '../support/fake-module.js';
import { startTestGateway } from '../support/gateway.js';
import { startSmtp } from '../support/receivers.js';

const MIN = 60_000;
const tlsDir = mkdtempSync(join(tmpdir(), 'tg-smtp-tls-'));
t.teardown(() => rmSync(tlsDir, { recursive: true, force: true }));
const tls = ensureTlsMaterial(tlsDir, ['127.0.0.1']);
const smtp = await startSmtp({ key: tls.key.reveal(), cert: readFileSync(join(tlsDir, 'tls', 'server.pem'), 'utf8'), user: 'tg', pass: 'pw' });
t.teardown(() => smtp.close());

const clock = new ManualClock(Date.UTC(2026, 10, 24, 9, 0));
const modules = moduleMap();
modules.set('fake', fakeModule(new FakeTarget()));
const tg = await startTestGateway({
  clock, modules, listeners: ['fake'],
  targets: [{ name: 'box', protocol: 'fake', address: 'mem', risk: 'medium', roles: [{ name: 'user' }] }],
  policies: [{ name: 'p', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'], approvalTimeout: '30m', onTimeout: 'escalate', escalateTo: ['security'], rules: [] }],
  extra: {
    notifications: {
      email: { from: 'tollgate@gateway.test', smtp: { host: '127.0.0.1', port: smtp.port, user: 'tg', password: { value: 'pw' }, ca: { value: tls.ca }, servername: 'localhost' } },
      grantExpiry: '10m',
    },
  },
});
t.teardown(() => tg.close());

const settle = async () => { await tg.gw.engine.idle(); await tg.gw.notifications.idle(); };
const subjects = (addr: string) => smtp.mails.filter((m) => m.envelopeTo.includes(addr)).map((m) => m.subject);
async function until(pred: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; mails: ${smtp.mails.map((m) => `${m.envelopeTo} ${m.subject}`).join(' | ')}`);
    await new Promise((r) => setTimeout(r, 25));
    await settle();
  }
}

t.test('an escalation is sent to the escalation group', async (t) => {
  const r = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'slow approvers' });
  await until(() => subjects('bob@test').length === 1, 'the approvers mail');
  clock.advance(31 * MIN);
  await until(() => subjects('dave@test').some((s) => s.startsWith('[Tollgate] Escalated')), 'the escalation mail');
  const m = smtp.mails.find((x) => x.envelopeTo.includes('dave@test') && x.subject.startsWith('[Tollgate] Escalated'))!;
  t.equal(m.subject, '[Tollgate] Escalated: alice asks for box as user');
  t.match(m.text, 'Nobody decided within the approval timeout; it now waits for security.');
  t.match(m.text, `${tg.url}/portal/approvals?request=${r.body.id}`);
  t.same(subjects('bob@test').filter((s) => s.includes('Escalated')), [], 'bob is not in the escalation group');
  t.same(subjects('alice@test').filter((s) => s.includes('Escalated')), [], 'not to the requester');
});

t.test('a grant about to end: its holder is told once', async (t) => {
  const long = await tg.grant('alice', 'box', 'user', '1h');
  const short = await tg.grant('erin', 'box', 'user', '5m');
  await settle();
  const before = smtp.mails.length;
  clock.advance(45 * MIN);
  await settle();
  t.same(subjects('alice@test').filter((s) => s.includes('ends at')), [], 'not yet: 15 minutes left');
  clock.advance(6 * MIN); // 9 minutes left: the next scan sees it
  await until(() => subjects('alice@test').some((s) => s.includes('ends at')), 'the expiry mail');
  const m = smtp.mails.find((x) => x.envelopeTo.includes('alice@test') && x.subject.includes('ends at'))!;
  const end = new Date(long.expiresAt).toISOString().slice(0, 16).replace('T', ' ');
  t.equal(m.subject, `[Tollgate] Your access to box as user ends at ${end} UTC`);
  t.match(m.text, `Open My access: ${tg.url}/portal/access?grant=${long.id}`);
  clock.advance(3 * MIN); // more scans
  await settle();
  clock.advance(3 * MIN);
  await settle();
  // The engine's own expiry warning for the same end (the governance workflow reports one too): the same notice, not sent again.
  tg.gw.notify({ kind: 'grant.expiring', to: { identities: ['alice'], groups: [] }, path: '/portal/access', grantId: long.id, identity: 'alice', target: 'box', role: 'user', expiresAt: long.expiresAt });
  await settle();
  t.equal(subjects('alice@test').filter((s) => s.includes('ends at')).length, 1, 'once, however many scans (and warnings) see it');
  t.same(subjects('erin@test').filter((s) => s.includes('ends at')), [], `a ${short.expiresAt - short.startsAt} ms grant, shorter than the warning, is not announced`);
  t.ok(smtp.mails.length > before);
});
