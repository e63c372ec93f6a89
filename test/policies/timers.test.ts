import t from 'tap';
import { inHours } from '../../policies/engine.js';
import type { HoursConfig } from '../../policies/config.js';
import type { GrantRecord } from '../../proxy/store/types.js';
import { harness, target, who, rejectsPolicy, MIN, HOUR, MONDAY_10_UTC } from './helpers.js';

const targets = [target('lowbox', 'low'), target('medbox', 'medium', ['ops', 'admin']), target('highdb', 'high')];
const dev = who('dana', ['devs']);
const lead = who('lee', ['leads']);
const sec = who('sam', ['security']);

t.test('grants expire at expiresAt by the clock', async (t) => {
  const h = await harness(t, { targets, policies: [{ name: 'p', requesters: ['devs'], approvers: ['leads'] }] });
  const r = await h.engine.createRequest(dev, { target: 'lowbox', role: 'ops', duration: '1h', reason: 'x' });
  const gid = r.grantId!;
  h.clock.advance(59 * MIN);
  await h.engine.idle();
  t.equal((await h.engine.activeGrant('dana', 'lowbox'))?.id, gid);
  t.same(h.ended, []);
  h.clock.advance(MIN);
  // activeGrant never returns a grant past its end, even before the timer work has finished.
  t.equal(await h.engine.activeGrant('dana', 'lowbox'), null);
  await h.engine.idle();
  const g = await h.store.getGrant(gid);
  t.equal(g?.state, 'expired');
  t.equal(g?.endedAt, MONDAY_10_UTC + HOUR);
  t.equal(g?.endedBy, 'system');
  t.same(h.ended.map((e) => [e.grant.id, e.reason]), [[gid, 'expired']]);
  const ev = h.audits.filter((a) => a.action === 'grant.expired');
  t.equal(ev.length, 1);
  t.equal(ev[0]!.actor, 'system');
  t.equal(ev[0]!.subject, gid);
  await rejectsPolicy(t, h.engine.revokeGrant(dev, gid, 'late'), 'conflict');
  h.clock.advance(HOUR);
  await h.engine.idle();
  t.equal(h.ended.length, 1, 'an expiry fires once');
});

t.test('approval timeout with onTimeout deny expires the request', async (t) => {
  const h = await harness(t, {
    targets,
    policies: [{ name: 'p', requesters: ['devs'], approvers: ['leads'], approvalTimeout: '30m', onTimeout: 'deny' }],
  });
  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
  t.equal(r.stageDeadline, MONDAY_10_UTC + 30 * MIN);
  h.clock.advance(29 * MIN);
  await h.engine.idle();
  t.equal((await h.store.getRequest(r.id))?.state, 'pending');
  h.clock.advance(MIN);
  await h.engine.idle();
  const x = await h.store.getRequest(r.id);
  t.equal(x?.state, 'expired');
  t.match(x?.decisionReason, /timed out/);
  t.equal(x?.decidedBy, 'system');
  t.equal(x?.grantId, null);
  t.same(h.actions(), ['request.created', 'request.expired']);
  t.equal(h.audits[1]!.actor, 'system');
  await rejectsPolicy(t, h.engine.approve(lead, r.id), 'conflict', { message: /expired/ });
  t.same(await h.store.listGrants({}), []);
});

t.test('a decision in time stops the timeout; each stage gets its own deadline', async (t) => {
  const h = await harness(t, {
    targets,
    policies: [{ name: 'p', requesters: ['devs'], approvalTimeout: '30m', stages: [{ groups: ['leads'] }, { groups: ['security'] }] }],
  });
  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
  h.clock.advance(20 * MIN);
  const s1 = await h.engine.approve(lead, r.id);
  t.equal(s1.stageDeadline, MONDAY_10_UTC + 50 * MIN, 'stage 2 deadline counts from the stage 1 decision');
  h.clock.advance(20 * MIN); // past the first stage's deadline, inside the second's
  await h.engine.idle();
  t.equal((await h.store.getRequest(r.id))?.state, 'pending');
  const s2 = await h.engine.approve(sec, r.id);
  t.equal(s2.state, 'approved');
  t.equal(s2.stageDeadline, null);
  h.clock.advance(5 * HOUR);
  await h.engine.idle();
  t.equal((await h.store.getRequest(r.id))?.state, 'approved');
  t.notOk(h.actions().includes('request.expired'));
});

t.test('escalation replaces the stage groups once, then auto-denies', async (t) => {
  const h = await harness(t, {
    targets,
    policies: [{ name: 'p', requesters: ['devs'], approvers: ['leads'], approvalTimeout: '1h', onTimeout: 'escalate', escalateTo: ['security'] }],
  });
  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
  h.clock.advance(HOUR);
  await h.engine.idle();
  const e = await h.store.getRequest(r.id);
  t.equal(e?.state, 'pending');
  t.equal(e?.escalations, 1);
  t.same(e?.stages, [{ groups: ['security'], count: 1 }]);
  t.equal(e?.stageDeadline, MONDAY_10_UTC + 2 * HOUR);
  t.same(h.actions(), ['request.created', 'request.escalated']);
  t.same(h.audits[1]!.data.to, ['security']);
  const note = h.notes.find((n) => n.kind === 'request.escalated');
  t.ok(note, 'escalation notified');
  t.same(note?.groups, ['security']);
  await rejectsPolicy(t, h.engine.approve(lead, r.id), 'not_approver');
  t.same(await h.engine.pendingFor(lead), []);
  t.same((await h.engine.pendingFor(sec)).map((x) => x.id), [r.id]);
  h.clock.advance(HOUR);
  await h.engine.idle();
  const x = await h.store.getRequest(r.id);
  t.equal(x?.state, 'expired');
  t.match(x?.decisionReason, /timed out.*after escalation/);
  t.same(h.actions(), ['request.created', 'request.escalated', 'request.expired']);
});

t.test('an escalated request can still be approved by the escalation group', async (t) => {
  const h = await harness(t, {
    targets,
    policies: [{ name: 'p', requesters: ['devs'], approvers: ['leads'], approvalTimeout: '10m', onTimeout: 'escalate', escalateTo: ['security'] }],
  });
  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
  h.clock.advance(10 * MIN);
  await h.engine.idle();
  t.equal((await h.engine.approve(sec, r.id)).state, 'approved');
  h.clock.advance(HOUR);
  await h.engine.idle();
  t.notOk(h.actions().includes('request.expired'));
  t.ok(h.actions().includes('grant.expired'));
});

t.test('start() catches up on what fell due while no engine ran, and re-arms the rest', async (t) => {
  const h = await harness(t, {
    targets,
    policies: [{ name: 'p', requesters: ['devs'], approvers: ['leads'], approvalTimeout: '30m' }],
  });
  const overdueReq = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'a' });
  const shortGrant = await h.engine.createRequest(dev, { target: 'lowbox', role: 'ops', duration: '10m', reason: 'b' });
  h.engine.stop();
  h.clock.advance(20 * MIN);
  const laterReq = await h.engine.createRequest(dev, { target: 'medbox', role: 'admin', duration: '1h', reason: 'c' });
  const longGrant = await h.engine.createRequest(dev, { target: 'lowbox', role: 'ops', duration: '2h', reason: 'd' });
  h.clock.advance(15 * MIN); // overdueReq (deadline 30m) and shortGrant (10m) are now overdue, nobody noticed
  await h.engine.idle();
  t.equal((await h.store.getRequest(overdueReq.id))?.state, 'pending', 'a stopped engine does nothing');
  t.equal((await h.store.getGrant(shortGrant.grantId!))?.state, 'active');
  const e2 = await h.restart();
  t.equal((await h.store.getRequest(overdueReq.id))?.state, 'expired');
  t.equal((await h.store.getGrant(shortGrant.grantId!))?.state, 'expired');
  t.equal((await h.store.getRequest(laterReq.id))?.state, 'pending');
  t.same(h.ended.map((e) => e.grant.id), [shortGrant.grantId]);
  h.clock.advance(15 * MIN); // laterReq deadline: 20m + 30m = 50m from start
  await e2.idle();
  t.equal((await h.store.getRequest(laterReq.id))?.state, 'expired');
  h.clock.advance(2 * HOUR);
  await e2.idle();
  t.equal((await h.store.getGrant(longGrant.grantId!))?.state, 'expired');
  t.equal(h.actions().filter((a) => a === 'grant.expired').length, 2);
  t.equal(h.actions().filter((a) => a === 'request.expired').length, 2);
});

const berlinHours = { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00', tz: 'Europe/Berlin' };

t.test('working hours in a non-UTC time zone', async (t) => {
  // 07:30 UTC on Monday is 08:30 in Berlin (CET, UTC+1): before hours.
  const h = await harness(t, {
    targets,
    policies: [{ name: 'office', targets: ['medbox'], requesters: ['devs'], approvers: ['leads'], hours: berlinHours }],
  }, Date.UTC(2026, 10, 23, 7, 30));
  const body = { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' };
  await rejectsPolicy(t, h.engine.createRequest(dev, body), 'outside_hours', { status: 403, message: /09:00-17:00 Europe\/Berlin/ });
  t.equal(h.engine.withinHours('medbox', 'ops'), false);
  h.clock.advance(HOUR); // 09:30 Berlin
  t.equal(h.engine.withinHours('medbox', 'ops'), true);
  const r = await h.engine.createRequest(dev, body);
  t.equal(r.state, 'pending');
  t.equal(h.engine.withinHours('medbox', 'ops', Date.UTC(2026, 10, 23, 15, 59)), true, '16:59 Berlin');
  t.equal(h.engine.withinHours('medbox', 'ops', Date.UTC(2026, 10, 23, 16, 0)), false, '17:00 Berlin');
  t.equal(h.engine.withinHours('medbox', 'ops', Date.UTC(2026, 10, 28, 10, 0)), false, 'Saturday');
  // Summer time: 07:30 UTC in July is 09:30 in Berlin (CEST, UTC+2).
  t.equal(h.engine.withinHours('medbox', 'ops', Date.UTC(2026, 6, 6, 7, 30)), true, 'CEST Monday 09:30');
  t.equal(h.engine.withinHours('medbox', 'ops', Date.UTC(2026, 6, 6, 6, 30)), false, 'CEST Monday 08:30');
  t.equal(h.engine.withinHours('lowbox', 'ops', Date.UTC(2026, 10, 28, 3, 0)), true, 'no hours policy: always');
  t.equal(h.engine.withinHours('nope', 'ops'), false, 'unknown target: never');
  const sat = Date.UTC(2026, 10, 28, 10, 0);
  t.equal(h.engine.withinHours('medbox', 'ops', sat, { breakGlass: false }), false);
  t.equal(h.engine.withinHours('medbox', 'ops', sat, { breakGlass: true }), true, 'break-glass grants are not bound to hours');
});

t.test('windows across midnight belong to the day they start', async (t) => {
  const night: HoursConfig = { days: ['fri'], from: '22:00', to: '06:00', tz: 'America/New_York' };
  // Friday 27 Nov 2026, 23:00 New York (EST, UTC-5) = Saturday 04:00 UTC.
  t.equal(inHours(night, Date.UTC(2026, 10, 28, 4, 0)), true, 'Fri 23:00 NY');
  t.equal(inHours(night, Date.UTC(2026, 10, 28, 10, 0)), true, 'Sat 05:00 NY (the Friday night window)');
  t.equal(inHours(night, Date.UTC(2026, 10, 28, 11, 30)), false, 'Sat 06:30 NY');
  t.equal(inHours(night, Date.UTC(2026, 10, 27, 10, 0)), false, 'Fri 05:00 NY (Thursday night is not in the window)');
  t.equal(inHours(night, Date.UTC(2026, 10, 29, 4, 0)), false, 'Sat 23:00 NY');
  const tokyo: HoursConfig = { days: ['mon'], from: '00:00', to: '01:00', tz: 'Asia/Tokyo' };
  t.equal(inHours(tokyo, Date.UTC(2026, 10, 22, 15, 30)), true, 'Sun 15:30 UTC is Mon 00:30 Tokyo');
  t.equal(inHours(tokyo, Date.UTC(2026, 10, 23, 0, 30)), false, 'Mon 00:30 UTC is Mon 09:30 Tokyo');
});

t.test('a failed expiry is retried, not forgotten', async (t) => {
  let failures = 1;
  const h = await harness(t, { targets, policies: [{ name: 'p', requesters: ['devs'] }] }, MONDAY_10_UTC, (real) => new Proxy(real, {
    get(target, prop, receiver) {
      if (prop === 'claim') {
        return async (...args: Parameters<typeof target.claim>) => {
          if (args[0] === 'grants' && 'state' in args[3] && failures > 0) { failures--; throw new Error('disk I/O error'); }
          return target.claim(...args);
        };
      }
      return Reflect.get(target, prop, receiver);
    },
  }), { sweepMs: 0 });
  const r = await h.engine.createRequest(dev, { target: 'lowbox', role: 'ops', duration: '10m', reason: 'x' });
  h.clock.advance(10 * MIN);
  await h.engine.idle();
  t.equal((await h.store.getGrant(r.grantId!))?.state, 'active', 'the first attempt failed');
  t.equal(await h.engine.activeGrant('dana', 'lowbox'), null, 'but the grant is not usable past its end');
  t.same(h.ended, []);
  h.clock.advance(5_000);
  await h.engine.idle();
  t.equal((await h.store.getGrant(r.grantId!))?.state, 'expired');
  t.equal(h.ended.length, 1);
  t.equal(h.actions().filter((a) => a === 'grant.expired').length, 1);
});

t.test('a gateway that missed the deadline timer still refuses late decisions and runs the timeout', async (t) => {
  const h = await harness(t, {
    targets,
    policies: [{ name: 'p', requesters: ['devs'], approvers: ['leads'], approvalTimeout: '30m', onTimeout: 'escalate', escalateTo: ['security'] }],
  }, MONDAY_10_UTC, undefined, { sweepMs: 0 });
  const other = await h.restart(); // a second gateway, started before the request existed
  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
  h.engine.stop(); // the gateway that armed the timer goes away
  h.clock.advance(31 * MIN);
  await other.idle();
  t.equal((await h.store.getRequest(r.id))?.escalations, 0, 'nobody noticed yet');
  await rejectsPolicy(t, other.approve(lead, r.id), 'conflict', { message: /run out/ });
  await other.idle();
  const e = await h.store.getRequest(r.id);
  t.equal(e?.escalations, 1);
  t.same(e?.stages[0]?.groups, ['security']);
  t.equal((await other.approve(sec, r.id)).state, 'approved');
});

t.test('the periodic sweep picks up requests and grants filed by another gateway', async (t) => {
  const h = await harness(t, {
    targets,
    policies: [{ name: 'p', requesters: ['devs'], approvers: ['leads'], approvalTimeout: '30m' }],
  }, MONDAY_10_UTC, undefined, { sweepMs: 60_000 });
  const other = await h.restart(); // started before anything was filed
  const r = await h.engine.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
  const low = await h.engine.createRequest(dev, { target: 'lowbox', role: 'ops', duration: '10m', reason: 'y' });
  h.engine.stop();
  h.clock.advance(MIN);
  await other.idle();
  h.clock.advance(9 * MIN);
  await other.idle();
  t.equal((await h.store.getGrant(low.grantId!))?.state, 'expired', 'expired on time by the gateway that swept it in');
  t.same(h.ended.map((e) => e.grant.id), [low.grantId]);
  h.clock.advance(20 * MIN);
  await other.idle();
  t.equal((await h.store.getRequest(r.id))?.state, 'expired');
  t.equal(h.actions().filter((a) => a === 'request.expired').length, 1);
  t.equal(h.actions().filter((a) => a === 'grant.expired').length, 1);
});
