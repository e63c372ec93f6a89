/**
 * The governance layers of the policy engine on a real SQLite store and a manual clock:
 * delegation, grant extension, exclusive check-out, working hours on live sessions, the expiry
 * notice, MFA at connect, access reviews (lines, decisions, exclusions, export, schedule,
 * escalation). The API, CLI, SSH and portal sides are tested in test/proxy/governance.test.ts,
 * test/ssh/governance.test.ts and test/portal/governance.test.ts.
 */
import t from 'tap';
import type { WindowEvent } from '../../policies/engine.js';
import { nextWindowEnd } from '../../policies/hours.js';
import { harness, target, who, rejectsPolicy, MIN, HOUR, MONDAY_10_UTC } from './helpers.js';

const DAY = 24 * HOUR;

const base = {
  targets: [
    target('lowbox', 'low'),
    target('medbox', 'medium', ['ops', 'admin']),
    target('vault', 'critical', ['root']),
    target('pw1', 'low', ['shared']),
    target('pw2', 'medium', ['shared']),
    target('pwq', 'low', ['shared']),
    { ...target('flagged', 'low'), options: { mfaAtConnect: true } },
  ],
  policies: [
    { name: 'strict', targets: ['flagged'], requesters: ['devs'], approvers: ['leads'] },
    { name: 'connect-mfa', targets: ['medbox'], roles: ['admin'], requesters: ['devs'], approvers: ['leads'], mfaAtConnect: true, maxDuration: '4h' },
    { name: 'std', targets: ['*'], requesters: ['devs'], approvers: ['leads'], maxDuration: '4h' },
  ],
  breakGlass: { groups: ['oncall'], maxDuration: '2h' },
  idp: { mfaMaxAge: '15m' },
};

const dev = who('dana', ['devs']);
const dev2 = who('dino', ['devs']);
const lead = who('lee', ['leads']);
const peer = who('pat', ['approvers']);

async function identities(h: Awaited<ReturnType<typeof harness>>, list: [string, string[]][]) {
  for (const [sub, groups] of list) await h.store.upsertIdentity({ sub, email: `${sub}@example.test`, name: sub, groups, firstSeen: 1, lastSeen: 1 });
}

t.test('delegation: a delegate decides for the delegator in the window, both names recorded; never their own request or the delegator\'s', async (t) => {
  const h = await harness(t, { ...base, policies: [...base.policies, { name: 'peers', targets: ['nothing'], requesters: [], approvers: ['approvers'] }] });
  await identities(h, [['lee', ['leads']], ['pat', ['approvers', 'devs']], ['dana', ['devs']], ['otto', ['sales']]]);
  const now = h.clock.now();
  // Bad input: named field, nothing stored.
  await rejectsPolicy(t, h.engine.delegate(dev, { delegate: 'pat', duration: '1d', reason: 'x' }), 'not_approver', { status: 403 });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'lee', duration: '1d', reason: 'x' }), 'invalid', { field: 'delegate' });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'nobody', duration: '1d', reason: 'x' }), 'invalid', { field: 'delegate', message: /has signed in/ });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'otto', duration: '1d', reason: 'x' }), 'invalid', { field: 'delegate', message: /not an approver/ });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'pat', reason: 'x' }), 'invalid', { field: 'until' });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'pat', until: 'tomorrow', reason: 'x' }), 'invalid', { field: 'until' });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'pat', from: now - HOUR, duration: '1d', reason: 'x' }), 'invalid', { field: 'from' });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'pat', from: now + HOUR, until: now + HOUR, reason: 'x' }), 'invalid', { field: 'until' });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'pat', duration: '400d', reason: 'x' }), 'invalid', { field: 'duration' });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'pat', duration: '1d', reason: ' ' }), 'invalid', { field: 'reason' });
  await rejectsPolicy(t, h.engine.delegate(lead, { delegate: 'pat', duration: '1d', reason: 'x', extra: 1 }), 'invalid', { message: /unknown field/ });
  t.same(await h.store.listDelegations(), [], 'refusals store nothing');

  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'fix disk' });
  t.same(await h.engine.pendingFor(peer), [], 'before the delegation: nothing for pat');
  await rejectsPolicy(t, h.engine.approve(peer, r.id), 'not_approver', { message: /or their delegate/ });

  const d = await h.engine.delegate(lead, { delegate: 'pat', from: new Date(now + HOUR).toISOString(), duration: '7d', reason: 'holiday' });
  t.match(d, { delegator: 'lee', delegate: 'pat', startsAt: now + HOUR, endsAt: now + HOUR + 7 * DAY });
  t.match(h.notes.at(-1), { kind: 'delegation.created', to: { identities: ['pat'] }, path: '/portal/delegations', delegator: 'lee' });
  t.match(h.audits.at(-1), { actor: 'lee', action: 'delegation.created', subject: d.id });
  t.same(await h.engine.pendingFor(peer), [], 'not before the window starts');
  h.clock.advance(HOUR);
  t.same((await h.engine.pendingFor(peer)).map((x) => x.id), [r.id], 'in the window the delegate sees the delegator\'s requests');

  // A new request in the window tells the delegate too.
  const r2 = await h.engine.createRequest(dev, { target: 'medbox', role: 'admin', duration: '1h', reason: 'rotate keys' });
  t.match(h.notes.at(-1), { kind: 'request.created', requestId: r2.id, to: { groups: ['leads'], identities: ['pat'] } });

  const done = await h.engine.approve(peer, r.id, 'ok for lee');
  t.equal(done.state, 'approved');
  const [a] = await h.store.listApprovals(r.id);
  t.match(a, { approver: 'pat', onBehalfOf: 'lee', decision: 'approve' }, 'the approval names both');
  t.match(h.audits.find((x) => x.action === 'request.approved' && x.subject === r.id), { actor: 'pat', data: { onBehalfOf: 'lee' } });

  // The delegate's own request: refused, delegation or not.
  const own = await h.engine.createRequest(who('pat', ['approvers', 'devs']), { target: 'medbox', role: 'ops', duration: '1h', reason: 'mine' });
  await rejectsPolicy(t, h.engine.approve(peer, own.id), 'self_approval', { status: 403 });
  t.same((await h.engine.pendingFor(peer)).map((x) => x.id), [r2.id], 'the delegate never sees their own request as actionable');
  // The delegator's own request (lee is also a dev here): the delegate cannot approve it for lee.
  const leeDev = who('lee', ['leads', 'devs']);
  const leeOwn = await h.engine.createRequest(leeDev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'lee needs it' });
  await rejectsPolicy(t, h.engine.approve(peer, leeOwn.id), 'not_approver');
  // And the delegator does not approve what the delegate decided on their behalf... of a two-approver stage.
  const two = await harness(t, { targets: [target('hi', 'high')], policies: [{ name: 'p', targets: ['hi'], requesters: ['devs'], approvers: ['leads'] }, { name: 'peers', targets: ['none'], approvers: ['approvers'] }] });
  await identities(two, [['lee', ['leads']], ['pat', ['approvers']]]);
  await two.engine.delegate(lead, { delegate: 'pat', duration: '1d', reason: 'away' });
  const hr = await two.engine.createRequest(dev, { target: 'hi', duration: '1h', reason: 'x' });
  await two.engine.approve(peer, hr.id);
  await rejectsPolicy(t, two.engine.approve(lead, hr.id), 'conflict', { message: /pat already approved this request on your behalf/ });
  await rejectsPolicy(t, two.engine.approve(peer, hr.id), 'conflict', { message: /already approved/ });
  t.equal((await two.engine.approve(who('lou', ['leads']), hr.id)).state, 'approved', 'a second, different approver completes it');

  // Deny on behalf works and is recorded the same way.
  const dn = await h.engine.deny(peer, r2.id, 'not now');
  t.equal(dn.state, 'denied');
  t.match((await h.store.listApprovals(r2.id))[0], { approver: 'pat', onBehalfOf: 'lee', decision: 'deny' });

  // When the delegator leaves the approver group at the IdP, the delegation confers nothing.
  const r3 = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'again' });
  await identities(h, [['lee', ['devs']]]);
  t.same(await h.engine.pendingFor(peer), [], 'delegated powers follow the delegator\'s groups');
  await identities(h, [['lee', ['leads']]]);
  // Ended early: nothing any more.
  await rejectsPolicy(t, h.engine.revokeDelegation(dev, d.id), 'not_approver');
  const ended = await h.engine.revokeDelegation(lead, d.id);
  t.equal(ended.revokedBy, 'lee');
  await rejectsPolicy(t, h.engine.revokeDelegation(lead, d.id), 'conflict');
  await rejectsPolicy(t, h.engine.approve(peer, r3.id), 'not_approver');
  // Over at its end.
  const d2 = await h.engine.delegate(lead, { delegate: 'pat', duration: '1h', reason: 'meeting' });
  t.same((await h.engine.pendingFor(peer)).map((x) => x.id), [r3.id]);
  h.clock.advance(HOUR);
  t.same(await h.engine.pendingFor(peer), [], 'the window closed');
  await rejectsPolicy(t, h.engine.revokeDelegation(lead, d2.id), 'conflict', { message: /over/ });
  t.same((await h.engine.delegationsFor(lead)).map((x) => x.id), [], 'only delegations that are not over are listed');
});

t.test('extension: the same policy as a new request; the grant keeps its id and its end moves; timers follow', async (t) => {
  const extended: string[] = [];
  const h = await harness(t, base, MONDAY_10_UTC, undefined, { onGrantExtended: (g) => { extended.push(`${g.id}:${g.expiresAt}`); } });
  const r = await h.engine.createRequest(dev, { target: 'lowbox', duration: '1h', reason: 'logs' });
  const g0 = (await h.store.getGrant(r.grantId!))!;
  // Bad input, someone else's grant, too long: refused with the field.
  await rejectsPolicy(t, h.engine.extendGrant(dev, g0.id, { duration: '1h' }), 'invalid', { field: 'reason' });
  await rejectsPolicy(t, h.engine.extendGrant(dev, g0.id, { duration: 'soon', reason: 'x' }), 'invalid', { field: 'duration' });
  await rejectsPolicy(t, h.engine.extendGrant(dev2, g0.id, { duration: '1h', reason: 'x' }), 'not_found', { status: 404 });
  await rejectsPolicy(t, h.engine.extendGrant(dev, 'nope', { duration: '1h', reason: 'x' }), 'not_found');
  h.clock.advance(30 * MIN);
  // 30 minutes left + 4h would be 4h30 from now: over the policy's 4h.
  await rejectsPolicy(t, h.engine.extendGrant(dev, g0.id, { duration: '4h', reason: 'x' }), 'invalid', { field: 'duration', message: /would last 4h30m|would last 270m/ });
  const x = await h.engine.extendGrant(dev, g0.id, { duration: '1h', reason: 'still digging' });
  t.match(x, { state: 'approved', extendsGrant: g0.id, grantId: g0.id, durationMs: HOUR, decidedBy: 'system' }, 'low risk: approved at once');
  const g1 = (await h.store.getGrant(g0.id))!;
  t.equal(g1.expiresAt, g0.expiresAt + HOUR, 'the same grant ends an hour later');
  t.same(extended, [`${g0.id}:${g1.expiresAt}`], 'the gateway is told (its live sessions move)');
  t.equal((await h.store.listGrants({ identity: 'dana' })).length, 1, 'no second grant');
  t.match(h.audits.find((a) => a.action === 'grant.extended'), { subject: g0.id, data: { from: g0.expiresAt, to: g1.expiresAt, byMs: HOUR } });
  t.match(h.notes.find((n) => n.kind === 'grant.extended'), { to: { identities: ['dana'] }, grantId: g0.id, expiresAt: g1.expiresAt });
  h.clock.advance(HOUR);
  await h.engine.idle();
  t.equal((await h.store.getGrant(g0.id))?.state, 'active', 'past the old end: still active (the timer moved)');
  h.clock.advance(31 * MIN);
  await h.engine.idle();
  t.equal((await h.store.getGrant(g0.id))?.state, 'expired', 'ends at the new end');
  await rejectsPolicy(t, h.engine.extendGrant(dev, g0.id, { duration: '1h', reason: 'x' }), 'conflict', { message: /expired; request access anew/ });

  // Medium risk: an approver decides the extension like a request.
  const m = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
  await h.engine.approve(lead, m.id);
  const mg = (await h.store.getRequest(m.id))!.grantId!;
  const before = (await h.store.getGrant(mg))!.expiresAt;
  const mx = await h.engine.extendGrant(dev, mg, { duration: '30m', reason: 'more' });
  t.equal(mx.state, 'pending');
  t.match(h.notes.at(-1), { kind: 'request.created', requestId: mx.id, extendsGrant: mg });
  await rejectsPolicy(t, h.engine.extendGrant(dev, mg, { duration: '30m', reason: 'again' }), 'conflict', { message: /already waiting/ });
  await h.engine.approve(lead, mx.id);
  t.equal((await h.store.getGrant(mg))?.expiresAt, before + 30 * MIN);
  t.match(h.notes.at(-1), { kind: 'request.decided', decision: 'approved', extendsGrant: mg });
  // A pending extension of a grant that ends expires with it.
  const my = await h.engine.extendGrant(dev, mg, { duration: '30m', reason: 'and more' });
  await h.engine.revokeGrant(dev, mg, 'done');
  t.match(await h.store.getRequest(my.id), { state: 'expired', decisionReason: /grant ended \(revoked\) before the extension was decided/ });
  await rejectsPolicy(t, h.engine.approve(lead, my.id), 'conflict');

  // Break-glass grants are not extended.
  const bg = await h.engine.breakGlass(who('oli', ['oncall'], h.clock.now()), { target: 'lowbox', duration: '1h', reason: 'fire' });
  await rejectsPolicy(t, h.engine.extendGrant(who('oli', ['oncall']), bg.id, { duration: '1h', reason: 'x' }), 'invalid', { message: /break-glass/ });
});

t.test('check-out: one holder at a time; refused with the holder and expected end, or queued; check-in hands it on', async (t) => {
  const accounts: Record<string, { key: string; whenHeld: 'refuse' | 'queue' }> = {
    pw1: { key: 'host:shared', whenHeld: 'refuse' }, pw2: { key: 'host:shared', whenHeld: 'refuse' }, pwq: { key: 'host:queued', whenHeld: 'queue' },
  };
  const h = await harness(t, base, MONDAY_10_UTC, undefined, { checkoutAccount: (name) => accounts[name] ?? null });
  const a = await h.engine.createRequest(dev, { target: 'pw1', duration: '2h', reason: 'db maintenance' });
  t.equal(a.state, 'approved');
  const until = new Date(MONDAY_10_UTC + 2 * HOUR).toISOString();
  await rejectsPolicy(t, h.engine.createRequest(dev2, { target: 'pw1', duration: '1h', reason: 'me too' }), 'conflict', { status: 409, message: new RegExp(`checked out by dana until ${until.replace(/[.]/g, '\\.')} \\(in 2h\\)`) });
  await rejectsPolicy(t, h.engine.createRequest(dev2, { target: 'pw2', duration: '1h', reason: 'same account' }), 'conflict', { message: /checked out by dana/ }, );
  t.equal((await h.engine.createRequest(dev, { target: 'pw2', duration: '1h', reason: 'second window' })).state, 'pending', 'the holder may ask again');
  t.same((await h.engine.checkouts()).map((c) => [c.key, c.holder?.identity ?? null, c.targets]), [['host:shared', 'dana', ['pw1', 'pw2']], ['host:queued', null, ['pwq']]]);
  await rejectsPolicy(t, h.engine.checkIn(dev, 'nope'), 'not_found');
  await rejectsPolicy(t, h.engine.checkIn(dev2, a.grantId!), 'not_approver');
  const lowbox = await h.engine.createRequest(dev, { target: 'lowbox', duration: '1h', reason: 'x' });
  await rejectsPolicy(t, h.engine.checkIn(dev, lowbox.grantId!), 'invalid', { message: /not a checked-out account/ });
  const before = h.ended.length;
  const g = await h.engine.checkIn(dev, a.grantId!);
  t.match(g, { state: 'revoked', endReason: 'checked in by dana' });
  t.equal(h.ended.length, before + 1, 'the grant-end hook runs (the module rotates the password there)');
  t.equal(h.ended.at(-1)!.grant.id, a.grantId);
  t.match(h.audits.find((x) => x.action === 'grant.checked_in'), { actor: 'dana', subject: a.grantId });
  // Filed while the account is free, approved once someone holds it: the approval stands, the request waits.
  const p2 = await h.engine.createRequest(who('dora', ['devs']), { target: 'pw2', duration: '1h', reason: 'medium risk' });
  t.equal(p2.state, 'pending');
  t.equal((await h.engine.createRequest(dev2, { target: 'pw1', duration: '1h', reason: 'now free' })).state, 'approved', 'free after check-in');
  await h.engine.approve(lead, p2.id);
  t.match(await h.store.getRequest(p2.id), { state: 'queued', grantId: null }, 'queued behind dino, even in refuse mode');

  // Queue: the second request is approved but waits; it gets its grant when the holder is done.
  const q1 = await h.engine.createRequest(dev, { target: 'pwq', duration: '1h', reason: 'first' });
  const q2 = await h.engine.createRequest(dev2, { target: 'pwq', duration: '30m', reason: 'second' });
  t.match(q2, { state: 'queued', grantId: null, decisionReason: /queued until dana checks pwq in/ });
  t.match(h.notes.at(-1), { kind: 'request.decided', decision: 'queued', holder: 'dana', to: { identities: ['dino'] } });
  const q3 = await h.engine.createRequest(who('dora', ['devs']), { target: 'pwq', duration: '30m', reason: 'third' });
  t.equal(q3.state, 'queued');
  t.same((await h.engine.checkouts()).find((c) => c.key === 'host:queued')?.queue.map((x) => x.requester), ['dino', 'dora'], 'in order');
  t.equal(await h.engine.activeGrant('dino', 'pwq'), null, 'no access while queued');
  await rejectsPolicy(t, h.engine.cancel(dev, q3.id), 'not_eligible');
  t.equal((await h.engine.cancel(who('dora', ['devs']), q3.id)).state, 'cancelled', 'a queued request can be withdrawn');
  h.clock.advance(10 * MIN);
  await h.engine.checkIn(lead, q1.grantId!);
  const next = await h.store.getRequest(q2.id);
  t.equal(next?.state, 'approved');
  const ng = (await h.store.getGrant(next!.grantId!))!;
  t.match(ng, { identity: 'dino', state: 'active', startsAt: h.clock.now(), expiresAt: h.clock.now() + 30 * MIN }, 'the grant runs from the hand-over, for its duration');
  t.match(h.notes.at(-1), { kind: 'checkout.ready', to: { identities: ['dino'] }, grantId: ng.id });
  // The holder's grant expiring hands it on too (no-one left queued here).
  h.clock.advance(30 * MIN);
  await h.engine.idle();
  t.equal((await h.engine.checkouts()).find((c) => c.key === 'host:queued')?.holder, null);
  // dino's pw1 grant (1h) ends: dora's queued pw2 request gets the shared account.
  h.clock.advance(HOUR);
  await h.engine.idle();
  t.match(await h.store.getRequest(p2.id), { state: 'approved' });
  t.equal((await h.engine.checkouts()).find((c) => c.key === 'host:shared')?.holder?.identity, 'dora', 'handed on at the holder\'s grant end');
});

t.test('working hours on live sessions: a warning before the window closes, the end at the close, then the next window', async (t) => {
  const events: (WindowEvent & { at: number })[] = [];
  const cfg = {
    targets: [target('office', 'low'), target('any', 'low')],
    policies: [
      { name: 'office-hours', targets: ['office'], requesters: ['devs'], hours: { days: ['mon', 'tue'], from: '08:00', to: '18:00', tz: 'Europe/Berlin' } },
      { name: 'always', targets: ['*'], requesters: ['devs'] },
    ],
  };
  const h = await harness(t, cfg, MONDAY_10_UTC, undefined, { sweepMs: 0, expiryWarningMs: 5 * MIN, onWindow: (e) => { events.push({ ...e, at: h.clock.now() }); } });
  t.equal(h.engine.hoursPolicy('office', 'ops')?.name, 'office-hours');
  t.equal(h.engine.hoursPolicy('any', 'ops'), undefined);
  const close = Date.UTC(2026, 10, 23, 17, 0); // 18:00 in Berlin (UTC+1 in November)
  t.equal(h.engine.windowEnd('office-hours'), close);
  h.clock.advance(close - 5 * MIN - h.clock.now() - 1);
  t.same(events, [], 'nothing before the warning');
  h.clock.advance(1);
  t.same(events, [{ policy: 'office-hours', phase: 'closing', closesAt: close, at: close - 5 * MIN }], 'warned 5 minutes before');
  h.clock.advance(5 * MIN);
  t.same(events.map((e) => [e.phase, e.at]), [['closing', close - 5 * MIN], ['closed', close]], 'ended at the close');
  const tue = Date.UTC(2026, 10, 24, 17, 0);
  h.clock.advance(tue - h.clock.now());
  t.same(events.map((e) => [e.phase, e.at]).slice(2), [['closing', tue - 5 * MIN], ['closed', tue]], 'and again at the next window\'s close (Tuesday)');
  h.clock.advance(6 * DAY);
  t.same(events.map((e) => e.at).slice(4), [close + 7 * DAY - 5 * MIN, close + 7 * DAY], 'nothing on Wednesday to Sunday; next Monday again');
  t.equal(nextWindowEnd({ days: ['sun'], from: '01:00', to: '02:30', tz: 'Europe/Berlin' }, Date.UTC(2026, 2, 29, 0, 10)), Date.UTC(2026, 2, 29, 1, 0), 'a close inside a skipped hour (DST) is when the clock jumps');
  t.equal(nextWindowEnd({ days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], from: '00:00', to: '00:00', tz: 'UTC' }, MONDAY_10_UTC), null, 'a window that never closes');
  t.equal(nextWindowEnd({ days: ['mon'], from: '22:00', to: '06:00', tz: 'UTC' }, Date.UTC(2026, 10, 23, 23, 0)), Date.UTC(2026, 10, 24, 6, 0), 'overnight windows close the next morning');
});

t.test('the holder hears once that a grant is about to end; again after an extension', async (t) => {
  const h = await harness(t, base, MONDAY_10_UTC, undefined, { expiryWarningMs: 10 * MIN });
  const short = await h.engine.createRequest(dev, { target: 'lowbox', duration: '5m', reason: 'quick' });
  const r = await h.engine.createRequest(dev2, { target: 'lowbox', duration: '1h', reason: 'x' });
  h.clock.advance(50 * MIN - 1);
  t.same(h.notes.filter((n) => n.kind === 'grant.expiring'), [], 'not yet; and never for a grant shorter than the warning');
  h.clock.advance(1);
  await h.engine.idle();
  const first = h.notes.filter((n) => n.kind === 'grant.expiring');
  t.match(first, [{ grantId: r.grantId, to: { identities: ['dino'] }, msLeft: 10 * MIN, path: '/portal/access' }]);
  t.equal((await h.store.getGrant(r.grantId!))?.notifiedFor, MONDAY_10_UTC + HOUR, 'remembered in the store (one notice across gateways)');
  const other = await h.restart();
  await other.idle();
  t.equal(h.notes.filter((n) => n.kind === 'grant.expiring').length, 1, 'a restarted engine does not send it again');
  await h.engine.extendGrant(dev2, r.grantId!, { duration: '30m', reason: 'more' });
  h.clock.advance(30 * MIN);
  await h.engine.idle();
  await other.idle();
  t.equal(h.notes.filter((n) => n.kind === 'grant.expiring').length, 2, 'the new end gets its own notice, once');
  t.notOk(h.notes.some((n) => n.kind === 'grant.expiring' && n.grantId === short.grantId));
});

t.test('MFA at connect: critical targets, the target option and the policy option', async (t) => {
  const h = await harness(t, base);
  const g = (target: string, role: string, requestId: string | null = null) => ({ target, role, requestId });
  t.equal(await h.engine.connectMfaNeeded(g('vault', 'root')), true, 'critical: always');
  t.equal(await h.engine.connectMfaNeeded(g('flagged', 'ops')), true, 'options.mfaAtConnect');
  t.equal(await h.engine.connectMfaNeeded(g('lowbox', 'ops')), false);
  t.equal(await h.engine.connectMfaNeeded(g('medbox', 'admin')), true, 'the policy covering it sets mfaAtConnect');
  t.equal(await h.engine.connectMfaNeeded(g('medbox', 'ops')), false, 'another role, another policy');
  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'admin', duration: '1h', reason: 'x' });
  await h.engine.approve(lead, r.id);
  const grant = (await h.store.getGrant((await h.store.getRequest(r.id))!.grantId!))!;
  t.equal(await h.engine.connectMfaNeeded(grant), true, 'by the grant\'s own policy');
  t.equal(await h.engine.connectMfaNeeded(g('gone', 'x')), false, 'unknown target: nothing to ask (access refuses it anyway)');
  t.equal(h.engine.hasFreshMfa(who('x', [], h.clock.now() - 14 * MIN)), true);
  t.equal(h.engine.hasFreshMfa(who('x', [], h.clock.now() - 16 * MIN)), false);
});

t.test('access reviews: lines from IdP groups, break-glass members and long grants; decisions, exclusions, live grants end', async (t) => {
  const h = await harness(t, { ...base, reviews: [{ policy: 'std', every: '90d', reviewers: ['leads'], escalateTo: ['security'], dueIn: '7d' }] });
  await identities(h, [['dana', ['devs']], ['dino', ['devs', 'oncall']], ['lee', ['leads', 'devs']], ['otto', ['sales']], ['oli', ['oncall']]]);
  // A grant longer than a day under std, a short one, and one under another policy.
  const long = await h.engine.createRequest(dev, { target: 'lowbox', duration: '4h', reason: 'short' });
  // 25h grant: write it as the engine would (the std policy caps new requests at 4h).
  const longId = 'g-long';
  await h.store.insertRequest({ ...(await h.store.getRequest(long.id))!, id: 'r-long', grantId: longId, durationMs: 25 * HOUR });
  await h.store.insertGrant({ ...(await h.store.getGrant(long.grantId!))!, id: longId, requestId: 'r-long', identity: 'dino', expiresAt: h.clock.now() + 25 * HOUR });

  await rejectsPolicy(t, h.engine.startReview(lead, { policy: 'nope' }), 'invalid', { field: 'policy' });
  await rejectsPolicy(t, h.engine.startReview(lead, { policy: 'std', dueIn: 'soon' }), 'invalid', { field: 'dueIn' });
  await rejectsPolicy(t, h.engine.startReview(lead, { policy: 'std', reviewers: [] }), 'invalid', { field: 'reviewers' });
  const v = await h.engine.startReview(who('carol', ['soc']), { policy: 'std' });
  t.match(v, { policy: 'std', state: 'open', reviewers: ['leads'], escalateTo: ['security'], createdBy: 'carol', scheduled: false, dueAt: h.clock.now() + 7 * DAY });
  const kinds = v.lines.map((l) => `${l.kind}:${l.identity}`).sort();
  t.same(kinds, ['breakglass:dino', 'breakglass:oli', 'eligibility:dana', 'eligibility:dino', 'eligibility:lee', 'grant:dino'], 'every eligibility, break-glass member and grant longer than a day');
  t.match(v.lines.find((l) => l.kind === 'eligibility' && l.identity === 'dana'), { policy: 'std', detail: { groups: ['devs'], targets: ['*'] } });
  t.match(v.lines.find((l) => l.kind === 'grant'), { grantId: longId, detail: { target: 'lowbox' } });
  t.match(h.notes.at(-1), { kind: 'review.due', to: { groups: ['leads'] }, reviewId: v.id, path: `/portal/access-reviews?review=${v.id}`, lines: 6 });

  const line = (kind: string, id: string) => v.lines.find((l) => l.kind === kind && l.identity === id)!;
  await rejectsPolicy(t, h.engine.decideLine(dev, v.id, line('eligibility', 'dino').id, { decision: 'confirm' }), 'not_approver', { message: /only members of leads/ });
  await rejectsPolicy(t, h.engine.decideLine(who('lee', ['leads', 'devs']), v.id, line('eligibility', 'lee').id, { decision: 'confirm' }), 'self_approval', { message: /your own access/ });
  await rejectsPolicy(t, h.engine.decideLine(lead, v.id, line('eligibility', 'dana').id, { decision: 'revoke' }), 'invalid', { field: 'comment' });
  await rejectsPolicy(t, h.engine.decideLine(lead, v.id, line('eligibility', 'dana').id, { decision: 'maybe' }), 'invalid', { field: 'decision' });
  await rejectsPolicy(t, h.engine.decideLine(lead, v.id, 'nope', { decision: 'confirm' }), 'not_found');
  await rejectsPolicy(t, h.engine.decideLine(lead, 'nope', line('eligibility', 'dana').id, { decision: 'confirm' }), 'not_found');

  // Revoke dana's eligibility: an exclusion (the IdP group stays), her live grant under std ends.
  const ended0 = h.ended.length;
  const d = await h.engine.decideLine(lead, v.id, line('eligibility', 'dana').id, { decision: 'revoke', comment: 'moved to sales' });
  t.match(d, { decision: 'revoke', decidedBy: 'lee', comment: 'moved to sales' });
  t.ok(d.exclusionId);
  t.match(await h.store.getExclusion(d.exclusionId!), { identity: 'dana', scope: 'policy', policy: 'std', reviewId: v.id, createdBy: 'lee' });
  t.equal((await h.store.getGrant(long.grantId!))?.state, 'revoked', 'her live grant under the policy ended');
  t.match((await h.store.getGrant(long.grantId!))?.endReason, /access review .*eligibility under std revoked by lee \(moved to sales\)/);
  t.equal(h.ended.length, ended0 + 1);
  await rejectsPolicy(t, h.engine.createRequest(dev, { target: 'lowbox', duration: '1h', reason: 'again' }), 'not_eligible', { status: 403 });
  t.same((await h.engine.eligibility(dev)).filter((e) => e.policy === 'std'), [], 'no longer eligible under std');
  t.same((await h.engine.eligibility(dev)).map((e) => e.policy).sort(), ['connect-mfa', 'strict'], 'other policies still apply');
  await rejectsPolicy(t, h.engine.decideLine(lead, v.id, d.id, { decision: 'confirm' }), 'conflict', { message: /already decided \(revoke\) by lee/ });

  // Revoke a break-glass membership: break-glass refused from now on; confirm the other.
  const bgLine = await h.engine.decideLine(lead, v.id, line('breakglass', 'oli').id, { decision: 'revoke', comment: 'no longer on call' });
  t.match(await h.store.getExclusion(bgLine.exclusionId!), { scope: 'breakglass', policy: null });
  await rejectsPolicy(t, h.engine.breakGlass(who('oli', ['oncall'], h.clock.now()), { target: 'lowbox', duration: '1h', reason: 'fire' }), 'not_eligible', { message: /access review removed your break-glass/ });
  await h.engine.decideLine(lead, v.id, line('breakglass', 'dino').id, { decision: 'confirm' });
  // Revoke the long grant itself.
  await h.engine.decideLine(lead, v.id, line('grant', 'dino').id, { decision: 'revoke', comment: 'a day is plenty' });
  t.equal((await h.store.getGrant(longId))?.state, 'revoked');
  await h.engine.decideLine(lead, v.id, line('eligibility', 'dino').id, { decision: 'confirm', comment: '=HYPERLINK("http://evil")' });
  t.equal((await h.store.getAccessReview(v.id))?.state, 'open', 'one line left (lee\'s own, for another lead)');
  await h.engine.decideLine(who('lou', ['leads']), v.id, line('eligibility', 'lee').id, { decision: 'confirm' });
  t.match(await h.engine.reviewView(v.id), { state: 'completed', counts: { total: 6, decided: 6, revoked: 3 } });
  t.ok(h.actions().includes('review.completed'));
  await rejectsPolicy(t, h.engine.decideLine(lead, v.id, line('eligibility', 'dino').id, { decision: 'revoke', comment: 'x' }), 'conflict');

  // Export: CSV with one row per line (a formula in a comment is neutralised) and JSON.
  const csv = (await h.engine.exportReview(v.id, 'csv'))!;
  t.equal(csv.contentType, 'text/csv; charset=utf-8');
  const rows = csv.body.trim().split('\r\n');
  t.equal(rows[0], 'review,policy,line,kind,identity,grant,detail,decision,decided_by,decided_at,comment');
  t.equal(rows.length, 7);
  t.ok(rows.some((r) => r.includes(`eligibility,dana,,`) && r.endsWith(',revoke,lee,' + new Date(h.clock.now()).toISOString() + ',moved to sales')), 'dana\'s line as a row');
  t.ok(rows.some((r) => r.endsWith(`,"'=HYPERLINK(""http://evil"")"`)), 'a comment starting with = is quoted and prefixed, so spreadsheets show it as text');
  const json = JSON.parse((await h.engine.exportReview(v.id, 'json'))!.body);
  t.equal(json.lines.length, 6);
  t.equal(json.counts.revoked, 3);

  // Exclusions are lifted by someone else, with a reason; then dana may ask again.
  await rejectsPolicy(t, h.engine.liftExclusion(dev, d.exclusionId!, 'mine'), 'self_approval');
  await rejectsPolicy(t, h.engine.liftExclusion(who('carol', ['soc']), d.exclusionId!, ' '), 'invalid', { field: 'reason' });
  await h.engine.liftExclusion(who('carol', ['soc']), d.exclusionId!, 'back in engineering');
  await rejectsPolicy(t, h.engine.liftExclusion(who('carol', ['soc']), d.exclusionId!, 'again'), 'conflict');
  t.equal((await h.engine.createRequest(dev, { target: 'lowbox', duration: '1h', reason: 'back' })).state, 'approved');
  // A new review skips exclusions that still stand (oli's break-glass) and lists dana again.
  const v2 = await h.engine.startReview(who('carol', ['soc']), { policy: 'std', reviewers: ['security'], dueIn: '1d' });
  t.same(v2.lines.filter((l) => l.kind === 'breakglass').map((l) => l.identity), ['dino']);
  t.ok(v2.lines.some((l) => l.kind === 'eligibility' && l.identity === 'dana'));
  t.same(v2.reviewers, ['security']);
});

t.test('access reviews on a schedule, once per slot across gateways; an overdue review escalates once', async (t) => {
  // No periodic sweep: months pass on the manual clock; each engine times what it saw at start.
  const h = await harness(t, { ...base, reviews: [{ policy: 'std', every: '90d', reviewers: ['leads'], escalateTo: ['security'], dueIn: '14d' }] }, MONDAY_10_UTC, undefined, { sweepMs: 0 });
  await identities(h, [['dana', ['devs']], ['dino', ['devs']]]);
  const other = await h.restart(); // a second gateway on the same store
  t.same(await h.store.listAccessReviews(), [], 'nothing at first start: the schedule counts from now');
  h.clock.advance(90 * DAY);
  await h.engine.idle();
  await other.idle();
  const [v, ...more] = await h.store.listAccessReviews();
  t.same(more, [], 'one review for the slot, though two engines timed it');
  t.match(v, { policy: 'std', scheduled: true, createdBy: 'system', reviewers: ['leads'], dueAt: MONDAY_10_UTC + 104 * DAY });
  t.equal((await h.store.listReviewLines(v!.id)).length, 2);
  t.equal(h.notes.filter((n) => n.kind === 'review.due').length, 1, 'the reviewers are told once');
  const peer2 = await h.restart(); // one more gateway, started after the review: it arms its due date too
  // Overdue: escalates once (several engines time it), the escalation group may decide from then on.
  const sec = who('sam', ['security']);
  const [l1, l2] = await h.store.listReviewLines(v!.id);
  await rejectsPolicy(t, h.engine.decideLine(sec, v!.id, l1!.id, { decision: 'confirm' }), 'not_approver', { message: /only members of leads decide/ });
  await h.engine.decideLine(lead, v!.id, l1!.id, { decision: 'confirm' });
  h.clock.advance(14 * DAY);
  await h.engine.idle();
  await other.idle();
  await peer2.idle();
  t.equal(h.actions().filter((a) => a === 'review.escalated').length, 1, 'escalated once');
  t.match(h.notes.filter((n) => n.kind === 'review.escalated'), [{ to: { groups: ['leads', 'security'] }, undecided: 1, reviewId: v!.id }]);
  t.ok((await h.store.getAccessReview(v!.id))?.escalatedAt);
  await h.engine.decideLine(sec, v!.id, l2!.id, { decision: 'confirm' });
  t.equal((await h.store.getAccessReview(v!.id))?.state, 'completed');
  // The next slot 90 days after the first.
  h.clock.advance(76 * DAY);
  await h.engine.idle();
  await other.idle();
  t.equal((await h.store.listAccessReviews()).length, 2, 'the next slot');
  // Engines that were down over a slot run it on start (catch-up), still once.
  for (const e of [h.engine, other, peer2]) e.stop();
  h.clock.advance(95 * DAY);
  const third = await h.restart();
  await third.idle();
  t.equal((await h.store.listAccessReviews()).length, 3, 'caught up at start');
  const fourth = await h.restart();
  await fourth.idle();
  t.equal((await h.store.listAccessReviews()).length, 3, 'and not twice');
});
