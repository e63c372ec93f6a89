import t from 'tap';
import { harness, target, who, rejectsPolicy, MIN, HOUR } from './helpers.js';

const base = {
  targets: [
    target('lowbox', 'low'),
    target('medbox', 'medium', ['ops', 'admin']),
    target('highdb', 'high', ['ro', 'rw']),
    target('vault', 'critical', ['root']),
  ],
  policies: [
    { name: 'critical', targets: ['vault'], requesters: ['devs'], approvers: ['leads'], escalateTo: ['security'], maxDuration: '1h' },
    { name: 'std', targets: ['*'], requesters: ['devs'], approvers: ['leads'], maxDuration: '4h' },
  ],
  breakGlass: { groups: ['oncall'], maxDuration: '2h' },
  idp: { mfaMaxAge: '15m' },
};

const dev = who('dana', ['devs']);
const lead1 = who('lee', ['leads']);
const lead2 = who('lou', ['leads']);
const outsider = who('otto', ['sales']);

t.test('low risk is approved automatically and grants at once', async (t) => {
  const h = await harness(t, base);
  const r = await h.engine.createRequest(dev, { target: 'lowbox', role: 'ops', duration: '2h', reason: 'rotate logs' });
  t.equal(r.state, 'approved');
  t.equal(r.decidedBy, 'system');
  t.ok(r.grantId);
  const g = await h.store.getGrant(r.grantId!);
  t.equal(g?.state, 'active');
  t.equal(g?.identity, 'dana');
  t.equal(g?.startsAt, h.clock.now());
  t.equal(g?.expiresAt, h.clock.now() + 2 * HOUR);
  t.equal(g?.breakGlass, false);
  t.equal((await h.engine.activeGrant('dana', 'lowbox', 'ops'))?.id, g?.id);
  t.equal(await h.engine.activeGrant('dana', 'lowbox', 'other'), null);
  t.same(h.actions(), ['request.created', 'request.approved', 'grant.created']);
  t.equal(h.audits[0]!.actor, 'dana');
  t.equal(h.audits[2]!.actor, 'system');
  const stored = await h.store.getRequest(r.id);
  t.equal(stored?.state, 'approved');
  t.equal(stored?.grantId, g?.id);
});

t.test('medium risk needs one approver from the policy', async (t) => {
  const h = await harness(t, base);
  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'admin', duration: 3600, reason: 'fix disk' });
  t.equal(r.state, 'pending');
  t.same(r.stages, [{ groups: ['leads'], count: 1 }]);
  t.equal(r.durationMs, HOUR);
  t.equal(r.mfaRequired, false);
  t.equal(r.policy, 'std');
  t.equal(await h.engine.activeGrant('dana', 'medbox'), null);
  t.same((await h.engine.pendingFor(lead1)).map((x) => x.id), [r.id]);
  t.same(await h.engine.pendingFor(outsider), []);
  t.same(await h.engine.pendingFor(dev), [], 'the requester never sees their own request as actionable');
  t.equal(h.engine.canApprove(lead1, r), true);
  t.equal(h.engine.canApprove(dev, r), false);
  await rejectsPolicy(t, h.engine.approve(outsider, r.id), 'not_approver', { status: 403 });
  h.clock.advance(5 * MIN);
  const done = await h.engine.approve(lead1, r.id, 'ok');
  t.equal(done.state, 'approved');
  t.equal(done.decidedBy, 'lee');
  const g = await h.engine.activeGrant('dana', 'medbox', 'admin');
  t.ok(g);
  t.equal(g!.id, done.grantId);
  t.equal(g!.startsAt, h.clock.now(), 'grant starts when the last approval lands');
  t.equal(g!.expiresAt, h.clock.now() + HOUR);
  const approvals = await h.store.listApprovals(r.id);
  t.equal(approvals.length, 1);
  t.equal(approvals[0]!.approver, 'lee');
  t.equal(approvals[0]!.comment, 'ok');
  t.same(h.actions(), ['request.created', 'request.approved', 'grant.created']);
  t.equal(h.audits[1]!.data.stage, 0);
  t.equal(h.audits[2]!.actor, 'lee');
  await rejectsPolicy(t, h.engine.approve(lead2, r.id), 'conflict', { status: 409 });
  t.same(await h.engine.pendingFor(lead1), []);
});

t.test('the requester never approves their own request', async (t) => {
  const h = await harness(t, base);
  const both = who('bea', ['devs', 'leads']);
  const r = await h.engine.createRequest(both, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
  t.equal(h.engine.canApprove(both, r), false);
  await rejectsPolicy(t, h.engine.approve(both, r.id), 'self_approval', { status: 403 });
  await rejectsPolicy(t, h.engine.deny(both, r.id), 'self_approval', { status: 403 });
  t.equal((await h.store.getRequest(r.id))?.state, 'pending');
  t.same(await h.store.listApprovals(r.id), []);
  t.same(h.actions(), ['request.created'], 'refusals change nothing and audit nothing');
});

t.test('high risk needs two distinct approvers', async (t) => {
  const h = await harness(t, base);
  const r = await h.engine.createRequest(dev, { target: 'highdb', role: 'rw', duration: '30m', reason: 'migration' });
  t.same(r.stages, [{ groups: ['leads'], count: 2 }]);
  const a1 = await h.engine.approve(lead1, r.id);
  t.equal(a1.state, 'pending');
  t.equal(await h.engine.activeGrant('dana', 'highdb'), null);
  await rejectsPolicy(t, h.engine.approve(lead1, r.id), 'conflict', { message: /already approved/ });
  t.same(await h.engine.pendingFor(lead1), [], 'an approver who already approved has nothing to do');
  t.same((await h.engine.pendingFor(lead2)).map((x) => x.id), [r.id]);
  const a2 = await h.engine.approve(lead2, r.id);
  t.equal(a2.state, 'approved');
  t.ok(await h.engine.activeGrant('dana', 'highdb', 'rw'));
  t.same(h.actions(), ['request.created', 'request.approved', 'request.approved', 'grant.created']);
  t.equal(h.audits[1]!.data.final, false);
  t.equal(h.audits[2]!.data.final, true);
});

t.test('critical: staged approvals with fresh MFA for requester and approvers', async (t) => {
  const h = await harness(t, base);
  const now = h.clock.now();
  const body = { target: 'vault', role: 'root', duration: '30m', reason: 'rotate master key' };
  await rejectsPolicy(t, h.engine.createRequest(who('dana', ['devs'], null), body), 'mfa_required', { status: 403, message: /fresh MFA sign-in/ });
  await rejectsPolicy(t, h.engine.createRequest(who('dana', ['devs'], now - 16 * MIN), body), 'mfa_required');
  t.same(h.actions(), []);
  const r = await h.engine.createRequest(who('dana', ['devs'], now - 14 * MIN), body);
  t.equal(r.mfaRequired, true);
  t.same(r.stages, [{ groups: ['leads'], count: 1 }, { groups: ['security'], count: 1 }], 'stage 1 approvers, stage 2 escalateTo');
  const sec = who('sam', ['security'], now);
  await rejectsPolicy(t, h.engine.approve(sec, r.id), 'not_approver', { message: /stage 1/ });
  await rejectsPolicy(t, h.engine.approve(who('lee', ['leads'], now - 20 * MIN), r.id), 'mfa_required');
  const both = who('bo', ['leads', 'security'], now);
  const s1 = await h.engine.approve(both, r.id);
  t.equal(s1.state, 'pending');
  t.equal(s1.currentStage, 1);
  await rejectsPolicy(t, h.engine.approve(both, r.id), 'conflict', { message: /already approved/ });
  await rejectsPolicy(t, h.engine.approve(who('lee', ['leads'], now), r.id), 'not_approver', { message: /stage 2/ });
  await rejectsPolicy(t, h.engine.approve(who('sam', ['security'], null), r.id), 'mfa_required');
  const s2 = await h.engine.approve(sec, r.id);
  t.equal(s2.state, 'approved');
  t.equal(s2.currentStage, 2);
  const g = await h.engine.activeGrant('dana', 'vault', 'root');
  t.equal(g?.expiresAt, now + 30 * MIN);
  const approvals = await h.store.listApprovals(r.id);
  t.same(approvals.map((a) => [a.stage, a.approver]).sort(), [[0, 'bo'], [1, 'sam']]);
  t.same(h.audits.filter((a) => a.action === 'request.approved').map((a) => a.data.stage), [0, 1]);
});

t.test('a deny at any stage denies the request', async (t) => {
  const h = await harness(t, base);
  const now = h.clock.now();
  const r = await h.engine.createRequest(who('dana', ['devs'], now), { target: 'vault', role: 'root', duration: '10m', reason: 'x' });
  await h.engine.approve(who('lee', ['leads'], now), r.id);
  await rejectsPolicy(t, h.engine.deny(lead2, r.id), 'not_approver', { message: /stage 2/ });
  const d = await h.engine.deny(who('sam', ['security']), r.id, 'not today');
  t.equal(d.state, 'denied');
  t.equal(d.decidedBy, 'sam');
  t.equal(d.decisionReason, 'not today');
  t.equal(d.grantId, null);
  t.equal(await h.engine.activeGrant('dana', 'vault'), null);
  t.same(await h.store.listGrants({ identity: 'dana' }), []);
  await rejectsPolicy(t, h.engine.approve(who('sam2', ['security'], now), r.id), 'conflict');
  t.equal(h.actions().at(-1), 'request.denied');
  t.match(h.notes.at(-1), { kind: 'request.decided', decision: 'denied', to: { identities: ['dana'], groups: [] }, path: '/portal/access' });
});

t.test('policy overrides: explicit stages, approval mode, mfa flag', async (t) => {
  const h = await harness(t, {
    ...base,
    targets: [target('a', 'high'), target('b', 'low'), target('c', 'medium'), target('d', 'low')],
    policies: [
      { name: 'staged', targets: ['a'], requesters: ['devs'], approvers: ['leads'], stages: [{ groups: ['dba'], count: 1 }, { groups: ['leads', 'cto'], count: 2 }] },
      { name: 'forced', targets: ['b'], requesters: ['devs'], approvers: ['leads'], approval: 'one' },
      { name: 'mfa', targets: ['c'], requesters: ['devs'], approvers: ['leads'], mfa: true },
      { name: 'auto', targets: ['d'], requesters: ['devs'], approval: 'auto' },
    ],
  });
  const now = h.clock.now();
  const a = await h.engine.createRequest(dev, { target: 'a', role: 'ops', duration: '1h', reason: 'r' });
  t.same(a.stages, [{ groups: ['dba'], count: 1 }, { groups: ['leads', 'cto'], count: 2 }]);
  t.equal(a.mfaRequired, false);
  await h.engine.approve(who('dee', ['dba']), a.id);
  await h.engine.approve(who('lee', ['leads']), a.id);
  const a3 = await h.engine.approve(who('cy', ['cto']), a.id);
  t.equal(a3.state, 'approved');
  const b = await h.engine.createRequest(dev, { target: 'b', role: 'ops', duration: '1h', reason: 'r' });
  t.equal(b.state, 'pending', 'approval: one overrides low risk auto-approve');
  t.same(b.stages, [{ groups: ['leads'], count: 1 }]);
  await rejectsPolicy(t, h.engine.createRequest(dev, { target: 'c', role: 'ops', duration: '1h', reason: 'r' }), 'mfa_required');
  const c = await h.engine.createRequest(who('dana', ['devs'], now), { target: 'c', role: 'ops', duration: '1h', reason: 'r' });
  t.equal(c.mfaRequired, true);
  await rejectsPolicy(t, h.engine.approve(lead1, c.id), 'mfa_required');
  t.equal((await h.engine.approve(who('lee', ['leads'], now), c.id)).state, 'approved');
  const d = await h.engine.createRequest(dev, { target: 'd', role: 'ops', duration: '1h', reason: 'r' });
  t.equal(d.state, 'approved');
});

t.test('cancel: only the requester, only while pending', async (t) => {
  const h = await harness(t, base);
  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
  await rejectsPolicy(t, h.engine.cancel(lead1, r.id), 'not_eligible', { status: 403 });
  const c = await h.engine.cancel(dev, r.id);
  t.equal(c.state, 'cancelled');
  await rejectsPolicy(t, h.engine.cancel(dev, r.id), 'conflict', { status: 409 });
  await rejectsPolicy(t, h.engine.approve(lead1, r.id), 'conflict');
  await rejectsPolicy(t, h.engine.approve(lead1, 'no-such-id'), 'not_found', { status: 404 });
  await rejectsPolicy(t, h.engine.deny(lead1, ''), 'not_found');
  t.same(h.actions(), ['request.created', 'request.cancelled']);
});

t.test('eligibility: first matching policy in config order, requesters by group', async (t) => {
  const h = await harness(t, {
    ...base,
    policies: [
      { name: 'ops-admin', targets: ['med*'], roles: ['admin'], requesters: ['sre'], approvers: ['leads'], maxDuration: '8h' },
      { name: 'std', targets: ['*'], roles: ['*'], requesters: ['devs', 'sre'], approvers: ['leads'], maxDuration: '4h' },
    ],
  });
  await rejectsPolicy(t, h.engine.createRequest(outsider, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' }), 'not_eligible', { status: 403 });
  t.same(h.engine.eligible(outsider), []);
  const sre = who('sid', ['sre']);
  const r1 = await h.engine.createRequest(sre, { target: 'medbox', role: 'admin', duration: '6h', reason: 'x' });
  t.equal(r1.policy, 'ops-admin');
  const r2 = await h.engine.createRequest(dev, { target: 'medbox', role: 'admin', duration: '1h', reason: 'x' });
  t.equal(r2.policy, 'std', 'devs are not requesters of the first policy, so the next one applies');
  await rejectsPolicy(t, h.engine.createRequest(dev, { target: 'medbox', role: 'admin', duration: '6h', reason: 'x' }), 'invalid', { field: 'duration', message: /at most 4h/ });
  const el = h.engine.eligible(sre);
  const med = el.filter((e) => e.target.name === 'medbox').map((e) => ({ policy: e.policy, roles: e.roles, max: e.maxDurationMs, risk: e.risk }));
  t.same(med, [{ policy: 'std', roles: ['ops'], max: 4 * HOUR, risk: 'medium' }, { policy: 'ops-admin', roles: ['admin'], max: 8 * HOUR, risk: 'medium' }]);
  t.same(el.map((e) => e.target.name).sort(), ['highdb', 'lowbox', 'medbox', 'medbox', 'vault']);
  const devEl = h.engine.eligible(dev);
  t.same(devEl.find((e) => e.target.name === 'highdb')?.roles, ['ro', 'rw']);
  t.equal(devEl.find((e) => e.target.name === 'highdb')?.risk, 'high');
});

t.test('bad request bodies get invalid with the field named', async (t) => {
  const h = await harness(t, base);
  const ok = { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' };
  const cases: [unknown, string][] = [
    [null, 'body'],
    ['drop table', 'body'],
    [{ ...ok, target: undefined }, 'target'],
    [{ ...ok, target: 42 }, 'target'],
    [{ ...ok, target: 'nope' }, 'target'],
    [{ ...ok, target: '../../etc/passwd' }, 'target'],
    [{ ...ok, role: 'root' }, 'role'],
    [{ ...ok, role: undefined }, 'role'],
    [{ ...ok, reason: undefined }, 'reason'],
    [{ ...ok, reason: '   ' }, 'reason'],
    [{ ...ok, duration: undefined }, 'duration'],
    [{ ...ok, duration: 'forever' }, 'duration'],
    [{ ...ok, duration: -5 }, 'duration'],
    [{ ...ok, duration: 0 }, 'duration'],
    [{ ...ok, duration: '5h' }, 'duration'],
    [{ ...ok, duration: 4 * 3600 + 1 }, 'duration'],
    [{ ...ok, duration: '99999999999d' }, 'duration'],
  ];
  for (const [body, field] of cases) {
    await rejectsPolicy(t, h.engine.createRequest(dev, body), 'invalid', { status: 400, field });
  }
  t.same(h.actions(), [], 'nothing was filed');
  t.same(await h.store.listRequests({}), []);
  // Accepted forms: "2h", a number of seconds, a numeric string of seconds; single-role targets need no role.
  t.equal((await h.engine.createRequest(dev, { ...ok, duration: '4h' })).durationMs, 4 * HOUR);
  t.equal((await h.engine.createRequest(dev, { ...ok, duration: '90' })).durationMs, 90_000);
  const lone = await h.engine.createRequest(dev, { target: 'lowbox', duration: 60, reason: '  trimmed  ' });
  t.equal(lone.role, 'ops');
  t.equal(lone.reason, 'trimmed');
});

t.test('revoke: the owner or an approver; others are refused', async (t) => {
  const h = await harness(t, base);
  const r1 = await h.engine.createRequest(dev, { target: 'lowbox', role: 'ops', duration: '1h', reason: 'x' });
  await rejectsPolicy(t, h.engine.revokeGrant(outsider, r1.grantId!, 'nope'), 'not_approver', { status: 403 });
  await rejectsPolicy(t, h.engine.revokeGrant(who('dan2', ['devs']), r1.grantId!, 'nope'), 'not_approver');
  await rejectsPolicy(t, h.engine.revokeGrant(lead1, 'missing', 'x'), 'not_found', { status: 404 });
  const g1 = await h.engine.revokeGrant(dev, r1.grantId!, 'done early');
  t.equal(g1.state, 'revoked');
  t.equal(g1.endedBy, 'dana');
  t.equal(g1.endReason, 'done early');
  t.equal(await h.engine.activeGrant('dana', 'lowbox'), null);
  await rejectsPolicy(t, h.engine.revokeGrant(dev, r1.grantId!, 'again'), 'conflict', { status: 409 });
  const r2 = await h.engine.createRequest(dev, { target: 'lowbox', role: 'ops', duration: '1h', reason: 'y' });
  // A member of any approver group may revoke (here: the escalation group of another policy).
  const g2 = await h.engine.revokeGrant(who('sam', ['security']), r2.grantId!, 'suspicious');
  t.equal(g2.state, 'revoked');
  t.same(h.ended.map((e) => [e.grant.id, e.reason]), [[g1.id, 'revoked'], [g2.id, 'revoked']]);
  t.same(h.audits.filter((a) => a.action === 'grant.revoked').map((a) => [a.actor, a.subject, a.data.reason]), [['dana', g1.id, 'done early'], ['sam', g2.id, 'suspicious']]);
  // A revoked grant's expiry timer does not fire later.
  h.clock.advance(2 * HOUR);
  await h.engine.idle();
  t.equal(h.ended.length, 2);
  t.notOk(h.actions().includes('grant.expired'));
});

t.test('break-glass: immediate grant with a fresh MFA, alert, review closed from outside the break-glass groups', async (t) => {
  const h = await harness(t, base);
  const body = { target: 'vault', role: 'root', duration: '1h', reason: 'prod down' };
  // No approver stands in the way, so a fresh second factor must.
  await rejectsPolicy(t, h.engine.breakGlass(who('oli', ['oncall']), body), 'mfa_required', { status: 403, message: /break-glass access needs a fresh MFA sign-in \(within the last 15m\)/ });
  await rejectsPolicy(t, h.engine.breakGlass(who('oli', ['oncall'], h.clock.now() - 16 * MIN), body), 'mfa_required', { status: 403 });
  t.same(h.actions(), [], 'nothing granted or audited without MFA');
  const oncall = who('oli', ['oncall'], h.clock.now() - 14 * MIN);
  await rejectsPolicy(t, h.engine.breakGlass(dev, body), 'not_eligible', { status: 403 });
  await rejectsPolicy(t, h.engine.breakGlass(oncall, { ...body, duration: '3h' }), 'invalid', { field: 'duration', message: /at most 2h/ });
  await rejectsPolicy(t, h.engine.breakGlass(oncall, { ...body, reason: ' ' }), 'invalid', { field: 'reason' });
  await rejectsPolicy(t, h.engine.breakGlass(oncall, { ...body, target: 'nope' }), 'invalid', { field: 'target' });
  t.same(h.actions(), []);
  const g = await h.engine.breakGlass(oncall, body);
  t.equal(g.state, 'active');
  t.equal(g.breakGlass, true);
  t.equal(g.expiresAt, h.clock.now() + HOUR);
  t.equal((await h.engine.activeGrant('oli', 'vault', 'root'))?.id, g.id, 'no MFA, hours or approvals in the way');
  const note = h.notes.find((n) => n.kind === 'breakglass');
  t.ok(note, 'an alert went out');
  t.equal(note?.identity, 'oli');
  t.equal(note?.target, 'vault');
  t.equal(note?.reason, 'prod down');
  t.ok(h.actions().includes('breakglass.used'));
  t.ok(h.actions().includes('grant.created'));
  const req = await h.store.getRequest(g.requestId!);
  t.equal(req?.breakGlass, true);
  t.equal(req?.state, 'approved');
  const [review] = await h.store.listReviews({ state: 'open' });
  t.ok(review);
  t.equal(review!.grantId, g.id);
  t.equal(review!.identity, 'oli');
  const sec = who('sue', ['security']);
  await rejectsPolicy(t, h.engine.closeReview(oncall, review!.id, 'all fine'), 'self_approval', { status: 403 });
  await rejectsPolicy(t, h.engine.closeReview(outsider, review!.id, 'all fine'), 'not_approver', { status: 403 });
  await rejectsPolicy(t, h.engine.closeReview(lead1, review!.id, 'all fine'), 'not_approver', { status: 403, message: /only members of security can close/ });
  // Another member of the break-glass group does not review its own kind, even when also in security.
  await rejectsPolicy(t, h.engine.closeReview(who('ona', ['oncall']), review!.id, 'all fine'), 'self_approval', { status: 403, message: /outside the break-glass groups \(you are in oncall\)/ });
  await rejectsPolicy(t, h.engine.closeReview(who('sam', ['security', 'oncall']), review!.id, 'all fine'), 'self_approval', { status: 403 });
  await rejectsPolicy(t, h.engine.closeReview(sec, review!.id, '  '), 'invalid', { field: 'comment' });
  await rejectsPolicy(t, h.engine.closeReview(sec, 'missing', 'x'), 'not_found', { status: 404 });
  t.equal((await h.store.getReview(review!.id))?.state, 'open', 'refusals leave the review open');
  const closed = await h.engine.closeReview(sec, review!.id, 'checked the session recording');
  t.equal(closed.state, 'closed');
  t.equal(closed.closedBy, 'sue');
  t.equal(closed.closedAt, h.clock.now());
  await rejectsPolicy(t, h.engine.closeReview(who('sid', ['security']), review!.id, 'again'), 'conflict', { status: 409 });
  t.equal(h.actions().at(-1), 'breakglass.reviewed');
  // Default duration is the break-glass maximum.
  const g2 = await h.engine.breakGlass(who('ona', ['oncall'], h.clock.now()), { target: 'medbox', role: 'admin', reason: 'again' });
  t.equal(g2.expiresAt - g2.startsAt, 2 * HOUR);
  const [rv2] = await h.store.listReviews({ state: 'open' });
  t.equal((await h.engine.closeReview(sec, rv2!.id, 'ok')).state, 'closed');
});

t.test('racing approvals create exactly one grant', async (t) => {
  const h = await harness(t, base);
  const leads = ['l1', 'l2', 'l3', 'l4', 'l5'].map((s) => who(s, ['leads']));
  for (let round = 0; round < 5; round++) {
    const med = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: `race ${round}` });
    const high = await h.engine.createRequest(dev, { target: 'highdb', role: 'rw', duration: '1h', reason: `race ${round}` });
    const results = await Promise.allSettled([
      ...leads.map((l) => h.engine.approve(l, med.id)),
      ...leads.map((l) => h.engine.approve(l, high.id)),
    ]);
    const medOk = results.slice(0, 5).filter((x) => x.status === 'fulfilled').length;
    const highOk = results.slice(5).filter((x) => x.status === 'fulfilled').length;
    t.equal(medOk, 1, 'one approval lands on the medium request');
    t.equal(highOk, 2, 'two approvals land on the high request');
    for (const x of results) {
      if (x.status === 'rejected') t.equal((x.reason as { code?: string }).code, 'conflict');
    }
    const medGrants = (await h.store.listGrants({ identity: 'dana', target: 'medbox' })).filter((g) => g.requestId === med.id);
    const highGrants = (await h.store.listGrants({ identity: 'dana', target: 'highdb' })).filter((g) => g.requestId === high.id);
    t.equal(medGrants.length, 1);
    t.equal(highGrants.length, 1);
    t.equal((await h.store.getRequest(med.id))?.grantId, medGrants[0]!.id);
    t.equal((await h.store.listApprovals(high.id)).length, 2);
  }
  t.equal(h.actions().filter((a) => a === 'grant.created').length, 10);
});

t.test('a policy without approvers cannot take requests that need approval', async (t) => {
  const h = await harness(t, {
    targets: [target('m', 'medium'), target('l', 'low')],
    policies: [{ name: 'lonely', requesters: ['devs'] }],
  });
  await rejectsPolicy(t, h.engine.createRequest(dev, { target: 'm', duration: '1h', reason: 'x' }), 'not_eligible', { message: /names no approvers/ });
  t.equal((await h.engine.createRequest(dev, { target: 'l', duration: '1h', reason: 'x' })).state, 'approved', 'low risk needs none');
  t.same(h.notes.filter((n) => n.kind === 'request.created'), []);
});

t.test('approvers are told when a stage waits for them', async (t) => {
  const h = await harness(t, base);
  const now = h.clock.now();
  const r = await h.engine.createRequest(who('dana', ['devs'], now), { target: 'vault', role: 'root', duration: '10m', reason: 'x' });
  t.same(h.notes.map((n) => [n.kind, n.stage, n.groups]), [['request.created', 0, ['leads']]]);
  t.match(h.notes[0], { to: { groups: ['leads'], identities: [] }, path: `/portal/approvals?request=${r.id}`, requester: 'dana', reason: 'x' }, 'to the stage groups, with a link to the request');
  await h.engine.approve(who('lee', ['leads'], now), r.id);
  t.same(h.notes.map((n) => [n.kind, n.stage, n.groups]), [['request.created', 0, ['leads']], ['request.created', 1, ['security']]]);
  await h.engine.approve(who('sam', ['security'], now), r.id);
  t.match(h.notes.at(-1), { kind: 'request.decided', decision: 'approved', to: { identities: ['dana'] }, decidedBy: 'sam' });
  t.equal(h.notes.at(-1)?.grantId, (await h.store.getRequest(r.id))?.grantId);
});

t.test('hostile names are echoed quoted and cut short', async (t) => {
  const h = await harness(t, base);
  const long = `<script>${'x'.repeat(5000)}`;
  const messageOf = async (body: unknown) => {
    try { await h.engine.createRequest(dev, body); } catch (e) { return (e as Error).message; }
    return 'no error';
  };
  t.equal(await messageOf({ target: 'medbox', role: 'a"\n\u0000b', duration: '1h', reason: 'x' }), 'role: target "medbox" has no role "a\\"\\n\\u0000b"');
  const m = await messageOf({ target: long, role: 'ops', duration: '1h', reason: 'x' });
  t.match(m, /^target: no target named "<script>x+…"$/);
  t.ok(m.length < 200, 'message stays short');
});
