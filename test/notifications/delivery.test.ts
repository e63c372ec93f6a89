/**
 * Notifications end to end: a real gateway sends to a real SMTP server (smtp-server, STARTTLS with
 * a test CA, AUTH) and a real HTTP receiver, for each topic the workflow produces — a new request
 * to its approvers, the decision to the requester, break-glass to its reviewers and the SOC, a
 * forbidden command to the SOC, a review due to its reviewers — and the messages are read back:
 * recipients, subject, text, links, the HMAC signature, Slack's escaping. A link opens the portal
 * and decides nothing by itself.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Secret } from '../../auth/secret.js';
import { moduleMap } from '../../protocols/index.js';
import { ensureTlsMaterial } from '../../proxy/tls.js';
import { checkSignature } from '../../proxy/notifications/webhook.js';
import { fakeConnect, fakeModule, FakeTarget } from '../support/fake-module.js';
import { startTestGateway, TEST_USERS } from '../support/gateway.js';
import { startReceiver, startSmtp, type Mail } from '../support/receivers.js';

const HOOK_KEY = 'hook-key-0123456789abcdef';
const tlsDir = mkdtempSync(join(tmpdir(), 'tg-smtp-tls-'));
t.teardown(() => rmSync(tlsDir, { recursive: true, force: true }));
const tls = ensureTlsMaterial(tlsDir, ['127.0.0.1']);
const leaf = readFileSync(join(tlsDir, 'tls', 'server.pem'), 'utf8');

const smtp = await startSmtp({ key: tls.key.reveal(), cert: leaf, user: 'tollgate', pass: 'smtp-pw' });
t.teardown(() => smtp.close());
const hook = await startReceiver();
t.teardown(() => hook.close());
const slack = await startReceiver();
t.teardown(() => slack.close());

const ft = new FakeTarget();
const mod = fakeModule(ft);
const modules = moduleMap();
modules.set('fake', mod);
const tg = await startTestGateway({
  targets: [{ name: 'box', protocol: 'fake', address: 'mem', risk: 'medium', roles: [{ name: 'user' }] }],
  modules, listeners: ['fake'],
  policies: [{
    name: 'test', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'], onTimeout: 'deny',
    rules: [{ pattern: 'rm\\s+-rf', action: 'kill' }, { pattern: 'passwd', action: 'alert' }],
  }],
  breakGlass: { groups: ['oncall'], maxDuration: '1h', reviewers: ['security'] },
  extra: {
    idp: { dev: { users: Object.entries(TEST_USERS).map(([name, groups]) => ({ name, password: { value: `${name}-pw` }, groups })) } },
    notifications: {
      webhooks: [
        { name: 'soc-json', url: hook.url, secret: { value: HOOK_KEY } },
        { name: 'chat', url: { value: slack.url }, format: 'slack', events: ['request.pending', 'rule.triggered'] },
      ],
      email: {
        from: 'Tollgate <tollgate@gateway.test>',
        smtp: { host: '127.0.0.1', port: smtp.port, tls: 'starttls', user: 'tollgate', password: { value: 'smtp-pw' }, ca: { value: tls.ca }, servername: 'localhost' },
      },
      retry: { attempts: 3, initialDelay: '100ms', maxDelay: '1s' },
    },
  },
});
t.teardown(() => tg.close());
const url = tg.url;

/** Mails that arrived for one address, about something (subject match). */
const mailsTo = (addr: string, subject?: RegExp) => smtp.mails.filter((m) => m.envelopeTo.includes(addr) && (!subject || subject.test(m.subject)));
async function waitMail(addr: string, subject: RegExp): Promise<Mail> {
  await tg.gw.notifications.idle();
  const deadline = Date.now() + 15_000;
  while (!mailsTo(addr, subject).length) {
    if (Date.now() > deadline) throw new Error(`no mail to ${addr} matching ${subject}; got ${smtp.mails.map((m) => `${m.envelopeTo} ${m.subject}`).join(' | ')}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return mailsTo(addr, subject)[0]!;
}
const hookBodies = (topic: string) => hook.requests.filter((r) => r.headers['x-tollgate-event'] === topic).map((r) => ({ r, body: JSON.parse(r.body) }));

t.test('a new request: its approvers get an email and the webhooks a signed JSON and a Slack message', async (t) => {
  const reason = 'INC-42 <!channel> <http://evil.example|click here> & more';
  const r = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '2h', reason });
  t.equal(r.status, 201);
  const id = r.body.id as string;
  const link = `${url}/portal/approvals?request=${id}`;

  for (const who of ['bob', 'dave']) {
    const m = await waitMail(`${who}@test`, /asks for box/);
    t.equal(m.subject, '[Tollgate] alice asks for box as user', `${who}: subject`);
    t.equal(m.envelopeFrom, 'tollgate@gateway.test');
    t.match(m.headers['from'], /Tollgate <tollgate@gateway\.test>/);
    t.ok(m.secure, 'sent over STARTTLS');
    t.equal(m.user, 'tollgate', 'after SMTP AUTH');
    t.match(m.text, `Reason: ${reason}`);
    t.match(m.text, 'Duration: 2h · risk medium');
    t.match(m.text, 'Approval stage 1 of 1 (approvers)');
    t.match(m.text, `Open the request to approve or deny: ${link}`);
    t.match(m.html, `<a href="${link}">`, 'the HTML part links to the same page');
    t.match(m.html, '&lt;!channel&gt;', 'the reason is escaped in HTML');
  }
  t.same(mailsTo('alice@test', /asks for box/), [], 'never to the requester');
  t.same(mailsTo('carol@test', /asks for box/), [], 'nor to anyone outside the approver groups');

  const [{ r: raw, body }] = await hook.waitFor(() => hookBodies('request.pending').length > 0).then(() => hookBodies('request.pending'));
  t.equal(raw!.path, '/hook/s3cr3t-path');
  t.equal(checkSignature(new Secret(HOOK_KEY), raw!.body, raw!.headers['x-tollgate-signature'], Math.floor(Date.now() / 1000)), null, 'the HMAC signature verifies');
  t.match(raw!.headers['x-tollgate-signature'], /^t=\d+,v1=[0-9a-f]{64}$/);
  t.equal(checkSignature(new Secret(HOOK_KEY), raw!.body.replace('INC-42', 'INC-43'), raw!.headers['x-tollgate-signature'], Math.floor(Date.now() / 1000)), 'the signature does not match', 'a changed body fails');
  t.equal(checkSignature(new Secret('another-key-0123456789'), raw!.body, raw!.headers['x-tollgate-signature'], Math.floor(Date.now() / 1000)), 'the signature does not match', 'another key fails');
  t.match(checkSignature(new Secret(HOOK_KEY), raw!.body, raw!.headers['x-tollgate-signature'], Math.floor(Date.now() / 1000) + 3600), /old/, 'a replay an hour later fails');
  t.equal(raw!.headers['x-tollgate-delivery'], body.id, 'the delivery id is in a header and the body');
  t.match(body, {
    topic: 'request.pending', kind: 'request', gateway: 'test', title: 'alice asks for box as user', severity: 'info',
    links: [{ url: link }], event: { requestId: id, requester: 'alice', stage: 0, groups: ['approvers'] },
    request: { id, requester: 'alice', target: 'box', role: 'user', reason, durationMs: 7_200_000, state: 'pending' },
  });
  t.same([...body.recipients].sort(), ['bob', 'dave'], 'whom it is for');

  await slack.waitFor((all) => all.length > 0);
  const s = JSON.parse(slack.requests[0]!.body);
  t.notOk(slack.requests[0]!.headers['x-tollgate-signature'], 'no key configured: unsigned');
  t.equal(s.text, 'alice asks for box as user');
  t.equal(s.blocks[0].type, 'section');
  t.match(s.blocks[0].text.text, '*alice asks for box as user*');
  t.match(s.blocks[0].text.text, 'INC-42 &lt;!channel&gt; &lt;http://evil.example|click here&gt; &amp; more', 'no mention or link can be injected');
  t.same(s.blocks[1], { type: 'actions', elements: [{ type: 'button', text: { type: 'plain_text', text: 'Open the request to approve or deny' }, url: link }] });

  // The link only opens the portal: signed out, it asks for a sign-in and comes back to the same page.
  const signedOut = await fetch(link, { redirect: 'manual' });
  t.equal(signedOut.status, 302);
  t.equal(signedOut.headers.get('location'), `/auth/login?returnTo=${encodeURIComponent(`/portal/approvals?request=${id}`)}`);
  const page = await fetch(link, { headers: { authorization: `Bearer ${tg.token('bob')}` } });
  t.equal(page.status, 200, 'signed in: the approvals page');
  t.notMatch(await page.text(), /approve\?|token=/, 'no action in the page address');
  t.equal((await tg.api('bob', 'GET', `/api/v1/requests/${id}`)).body.state, 'pending', 'opening the link decided nothing');
  t.notMatch(link, /token|secret|sig=/, 'the link carries no credential');

  // The decision goes to the requester.
  t.equal((await tg.api('bob', 'POST', `/api/v1/requests/${id}/approve`, { comment: 'fine' })).status, 200);
  const ok = await waitMail('alice@test', /Approved/);
  t.equal(ok.subject, '[Tollgate] Approved: box as user');
  t.match(ok.text, 'Your request for box as user was approved (last by bob).');
  t.match(ok.text, /The grant lasts until \d{4}-\d\d-\d\d \d\d:\d\d UTC\./);
  t.match(ok.text, `Open your request: ${url}/portal/access?request=${id}`);
  t.same(mailsTo('bob@test', /Approved/), [], 'the decision goes to the requester only');
  t.match(hookBodies('request.decided').map((x) => x.body), [{ kind: 'request.approved', event: { requestId: id } }]);
  t.equal(slack.requests.length, 1, 'the Slack hook is subscribed to request.pending and rule.triggered only');
});

t.test('a denial tells the requester why', async (t) => {
  const r = await tg.api('erin', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'look around' });
  t.equal((await tg.api('dave', 'POST', `/api/v1/requests/${r.body.id}/deny`, { comment: 'not without a ticket' })).status, 200);
  const m = await waitMail('erin@test', /Denied/);
  t.equal(m.subject, '[Tollgate] Denied: box as user');
  t.match(m.text, 'Your request for box as user was denied by dave.');
  t.match(m.text, 'Reason: not without a ticket');
});

t.test('break-glass: its reviewers and the SOC are told, with a link to the review', async (t) => {
  const alice = (await tg.gw.principalOf('alice', 'token', tg.gw.clock.now()))!;
  const g = await tg.gw.engine.breakGlass(alice, { target: 'box', role: 'user', duration: '30m', reason: 'prod is down' });
  const review = (await tg.store.listReviews({ state: 'open' })).find((x) => x.grantId === g.id)!;
  for (const who of ['dave', 'carol']) {
    const m = await waitMail(`${who}@test`, /Break-glass/);
    t.equal(m.subject, '[Tollgate] Break-glass: alice opened box as user', who);
    t.match(m.text, 'Reason: prod is down');
    t.match(m.text, `Open the review: ${url}/portal/approvals?review=${review.id}`);
  }
  t.same(mailsTo('alice@test', /Break-glass/), [], 'not to the person who used it');
  t.same(mailsTo('bob@test', /Break-glass/), [], 'not to approvers outside the reviewer groups');
  t.match(hookBodies('breakglass.used').map((x) => x.body), [{ severity: 'warning', event: { identity: 'alice', grantId: g.id, reviewId: review.id } }]);
});

t.test('forbidden commands: the SOC is told; kill links the recording, alert the live session', async (t) => {
  const grant = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', grant.id);
  const c = await fakeConnect(mod.ctx!, ft, s.username, s.secret);
  if (!c.ok) throw new Error(c.reason);
  c.session.check('sudo passwd root');
  const alert = await waitMail('carol@test', /Forbidden command.*(?<!ended\))$/);
  t.equal(alert.subject, '[Tollgate] Forbidden command on box by alice');
  t.match(alert.text, 'Command: sudo passwd root');
  t.match(alert.text, 'The rule only alerts: the session goes on.');
  t.match(alert.text, `Watch the session: ${url}/portal/sessions/${c.session.id}`);
  c.session.check('rm -rf /srv');
  const kill = await waitMail('carol@test', /session ended/);
  t.equal(kill.subject, '[Tollgate] Forbidden command on box by alice (session ended)');
  t.match(kill.text, 'Command: rm -rf /srv');
  t.match(kill.text, `Open the recording: ${url}/portal/recordings/${c.session.id}`);
  t.same(mailsTo('alice@test', /Forbidden/), [], 'not to the person typing');
  await slack.waitFor((all) => all.some((r) => JSON.parse(r.body).text.includes('session ended')));
});

t.test('a review due: its reviewers (by identity and group) get one email, however often it is reported', async (t) => {
  // The governance workflow's shape: who hears about it (`to`) and the portal page its link opens (`path`).
  const event = {
    kind: 'review.due', to: { identities: ['dave'], groups: ['soc'] }, path: '/portal/access-reviews?review=c1',
    reviewId: 'c1', policy: 'prod-access', dueAt: Date.UTC(2026, 11, 1, 9, 0), lines: 12, reviewers: ['soc'], dedupeKey: 'review.due:c1:1',
  };
  tg.gw.notify(event);
  tg.gw.notify(event); // another gateway noticing the same
  for (const who of ['dave', 'carol']) {
    const m = await waitMail(`${who}@test`, /review due/);
    t.equal(m.subject, '[Tollgate] Access review due: prod-access');
    t.match(m.text, 'Due 2026-12-01 09:00 UTC.');
    t.match(m.text, '12 lines to confirm or revoke.');
    t.match(m.text, `Open the review: ${url}/portal/access-reviews?review=c1`);
  }
  await tg.gw.notifications.idle();
  t.equal(mailsTo('dave@test', /review due/).length, 1, 'one email per reviewer (the dedupe key)');
  t.equal(hookBodies('review.due').length, 1, 'one webhook delivery');
  t.same(mailsTo('bob@test', /review due/), [], 'nobody else');

  tg.gw.notify({ kind: 'review.escalated', to: { identities: [], groups: ['security'] }, path: '//evil.example/phish', reviewId: 'c2', policy: 'odd-link', dueAt: Date.UTC(2026, 11, 1), undecided: 3, lines: 12 });
  const odd = await waitMail('dave@test', /overdue: odd-link/);
  t.equal(odd.subject, '[Tollgate] Access review overdue: odd-link');
  t.match(odd.text, '3 of 12 lines still open.');
  t.match(odd.text, `Open the review: ${url}/portal/approvals`, 'a path outside the portal is not linked');
  t.notMatch(odd.text, /evil/);
});

t.test("the governance workflow's notices: its recipients (delegates too), decisions, extensions, check-outs, delegations", async (t) => {
  const r = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'box', role: 'user', duration: '1h', reason: 'delegated' });
  // A request waiting for approvers and for erin, bob's delegate (the engine lists delegates in `to.identities`); never its requester.
  tg.gw.notify({ kind: 'request.created', to: { identities: ['erin', 'alice'], groups: ['approvers'] }, path: `/portal/approvals?request=${r.body.id}`, requestId: r.body.id, requester: 'alice', target: 'box', role: 'user', stage: 0, stages: 1, groups: ['approvers'] });
  const forDelegate = await waitMail('erin@test', /alice asks for box/);
  t.match(forDelegate.text, `${url}/portal/approvals?request=${r.body.id}`);
  t.equal(mailsTo('alice@test', /alice asks for box/).length, 0, 'not the requester, even when listed');

  tg.gw.notify({ kind: 'request.decided', to: { identities: ['alice'], groups: [] }, path: '/portal/access', requestId: r.body.id, requester: 'alice', target: 'box', role: 'user', decision: 'queued', holder: 'erin', holderEnds: Date.UTC(2026, 11, 1, 10, 0) });
  const queued = await waitMail('alice@test', /waiting/);
  t.equal(queued.subject, '[Tollgate] Approved, waiting: box as user');
  t.match(queued.text, 'the account is checked out to erin until 2026-12-01 10:00 UTC. You are next.');
  t.match(queued.text, `Open your request: ${url}/portal/access`);

  tg.gw.notify({ kind: 'request.decided', to: { identities: ['alice'], groups: [] }, path: '/portal/access', requestId: r.body.id, requester: 'alice', target: 'box', role: 'user', decision: 'denied', decidedBy: 'dave', comment: 'ticket first' });
  const denied = await waitMail('alice@test', /Denied/);
  t.match(denied.text, 'was denied by dave.');
  t.match(denied.text, 'Reason: ticket first');

  tg.gw.notify({ kind: 'grant.extended', to: { identities: ['alice'], groups: [] }, path: '/portal/access', grantId: 'g1', identity: 'alice', target: 'box', role: 'user', expiresAt: Date.UTC(2026, 11, 1, 12, 0), previousExpiresAt: Date.UTC(2026, 11, 1, 11, 0) });
  t.equal((await waitMail('alice@test', /Extended/)).subject, '[Tollgate] Extended: box as user until 2026-12-01 12:00 UTC');
  tg.gw.notify({ kind: 'checkout.ready', to: { identities: ['alice'], groups: [] }, path: '/portal/access', grantId: 'g2', requester: 'alice', target: 'box', role: 'user', expiresAt: Date.UTC(2026, 11, 1, 13, 0) });
  t.match((await waitMail('alice@test', /Your turn/)).text, 'The account you waited for is yours now, until 2026-12-01 13:00 UTC.');
  tg.gw.notify({ kind: 'delegation.created', to: { identities: ['erin'], groups: [] }, path: '/portal/delegations', delegator: 'bob', delegate: 'erin', startsAt: Date.UTC(2026, 11, 1), endsAt: Date.UTC(2026, 11, 8), reason: 'holiday' });
  const d = await waitMail('erin@test', /delegated/);
  t.equal(d.subject, '[Tollgate] bob delegated their approvals to you');
  t.match(d.text, `Open delegations: ${url}/portal/delegations`);
});

t.test('nothing in the queue holds a secret; the dashboard view has no body', async (t) => {
  await tg.gw.notifications.idle();
  const rows = await tg.store.listDeliveries({ limit: 1000 });
  t.ok(rows.length > 10);
  const dump = JSON.stringify(rows);
  t.notMatch(dump, HOOK_KEY, 'not the HMAC key');
  t.notMatch(dump, 'smtp-pw', 'not the SMTP password');
  t.notMatch(dump, 's3cr3t-path', 'not a webhook URL (it may be a secret)');
  t.ok(rows.every((r) => r.state === 'delivered'), 'all delivered');
  const st = await tg.api('carol', 'GET', '/api/v1/notifications');
  t.equal(st.status, 200);
  t.same(st.body.problems, [], 'no problems');
  t.ok(st.body.counts.delivered >= rows.length);
  t.same(st.body.channels.map((c: { channel: string }) => c.channel), ['webhook:soc-json', 'webhook:chat', 'email']);
  t.equal((await tg.api('bob', 'GET', '/api/v1/notifications')).status, 403, 'SOC only');
  const doc = (await tg.api(null, 'GET', '/api/v1/openapi.json')).body;
  t.match(doc.paths['/api/v1/notifications'].get.summary, /failed or are being retried/, 'documented in the OpenAPI document');
  t.match(doc.paths['/api/v1/notifications/deliveries/{id}/retry'].post.summary, /again/);
  t.match(doc.paths['/api/v1/siem'].get.summary, /acknowledged/);
});
