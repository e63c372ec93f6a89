/**
 * The dashboard's JIT health figures from a real SQLite store filled with known records: each
 * figure checked against a hand-computed value, and the per-day series.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../proxy/store/sqlite.js';
import { computeHealth, quantile } from '../../proxy/portal/dashboard.js';
import type { GrantRecord, RequestRecord, SessionRecord, LeaseRecord } from '../../proxy/store/types.js';

const NOW = Date.UTC(2026, 10, 23, 12, 0, 0);
const MIN = 60_000;
const DAY = 86_400_000;

t.test('quantile is nearest-rank', async (t) => {
  t.equal(quantile([], 0.5), null);
  t.equal(quantile([5], 0.9), 5);
  t.equal(quantile([1, 2, 3, 4], 0.5), 2);
  t.equal(quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), 9);
  t.equal(quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5), 5);
});

t.test('health figures from the store', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-dash-'));
  const store = await openSqliteStore(join(dir, 'db.sqlite'));
  t.teardown(async () => { await store.close(); rmSync(dir, { recursive: true, force: true }); });

  const empty = await computeHealth(store, NOW, () => false);
  t.equal(empty.standingPrivileges.count, 0);
  t.equal(empty.jitShare.ratio, null, 'no sessions: no ratio (not 0%)');
  t.equal(empty.avgPrivilegeMs, null);
  t.same(empty.approvalResponse, { count: 0, medianMs: null, p90Ms: null });
  t.equal(empty.series.sessions.length, 14);

  const req = (id: string, createdAt: number, decidedAt: number | null, state: RequestRecord['state'], extra: Partial<RequestRecord> = {}): RequestRecord => ({
    id, requester: 'alice', target: 'web', role: 'user', durationMs: 3_600_000, reason: 'r', state, risk: 'medium', policy: 'p',
    stages: [{ groups: ['approvers'], count: 1 }], currentStage: state === 'pending' ? 0 : 1, stageDeadline: null, escalations: 0, mfaRequired: false,
    breakGlass: false, createdAt, decidedAt, decidedBy: decidedAt ? 'bob' : null, decisionReason: null, grantId: null, ...extra,
  });
  // Person-decided requests, response times 2, 4, 10 minutes; one auto-approved (no approval row); one pending.
  const decided: [string, number, number][] = [['r1', NOW - DAY - 30 * MIN, 2 * MIN], ['r2', NOW - 3 * 60 * MIN, 4 * MIN], ['r3', NOW - 2 * 60 * MIN, 10 * MIN]];
  for (const [id, at, ms] of decided) {
    await store.insertRequest(req(id, at, at + ms, id === 'r3' ? 'denied' : 'approved'));
    await store.insertApproval({ id: `a-${id}`, requestId: id, stage: 0, approver: 'bob', decision: id === 'r3' ? 'deny' : 'approve', comment: null, at: at + ms });
  }
  await store.insertRequest(req('auto', NOW - 60 * MIN, NOW - 60 * MIN, 'approved', { stages: [] }));
  await store.insertRequest(req('pend', NOW - 5 * MIN, null, 'pending'));

  const grant = (id: string, extra: Partial<GrantRecord>): GrantRecord => ({
    id, requestId: 'r1', identity: 'alice', target: 'web', role: 'user', state: 'active', startsAt: NOW - DAY, expiresAt: NOW + DAY, breakGlass: false,
    createdAt: NOW - DAY, endedAt: null, endedBy: null, endReason: null, used: true, ...extra,
  });
  await store.insertGrant(grant('g-jit', {}));
  await store.insertGrant(grant('g-bg', { requestId: null, breakGlass: true, createdAt: NOW - 2 * DAY }));
  await store.insertGrant(grant('g-bg-old', { requestId: null, breakGlass: true, createdAt: Date.UTC(2026, 9, 30), state: 'expired', used: true }));
  await store.insertGrant(grant('g-unused', { requestId: 'r2', state: 'expired', used: false, expiresAt: NOW - DAY }));
  await store.insertGrant(grant('g-revoked-unused', { requestId: null, state: 'revoked', used: false }));

  const sess = (id: string, grantId: string, startedAt: number, endedAt: number | null): SessionRecord => ({
    id, grantId, identity: 'alice', target: 'web', role: 'user', protocol: 'ssh', clientAddr: null, state: endedAt ? 'ended' : 'active',
    startedAt, endedAt, endReason: endedAt ? 'client_exit' : null, bytesUp: 0, bytesDown: 0, gatewayId: 'gw',
  });
  await store.insertSession(sess('s1', 'g-jit', NOW - DAY - 10 * MIN, NOW - DAY)); // 10 min, yesterday
  await store.insertSession(sess('s2', 'g-jit', NOW - 30 * MIN, NOW - 10 * MIN)); // 20 min
  await store.insertSession(sess('s3', 'g-bg', NOW - 6 * MIN, null)); // live, 6 min so far

  const lease = (id: string, sessionId: string | null, state: LeaseRecord['state']): LeaseRecord => ({
    id, sessionId, grantId: 'g-jit', target: 'web', kind: 'linux-account', state, data: { account: id }, createdAt: NOW - 20 * MIN, activatedAt: null, revokedAt: null, error: null,
  });
  await store.insertLease(lease('l-live', 's3', 'active'));      // in a live session: not standing
  await store.insertLease(lease('l-orphan', 's2', 'active'));    // its session ended: standing
  await store.insertLease(lease('l-stuck', null, 'revoking'));   // never attached: standing
  await store.insertLease(lease('l-done', 's1', 'revoked'));     // gone

  const h = await computeHealth(store, NOW, (id) => id === 's3', { gatewayId: 'gw' });
  t.equal(h.standingPrivileges.count, 2);
  t.same(h.standingPrivileges.leases.map((l) => l.id).sort(), ['l-orphan', 'l-stuck']);
  t.same(h.jitShare, { jit: 2, total: 3, ratio: 2 / 3 }, 'the break-glass session is not JIT');
  t.equal(h.avgPrivilegeMs, Math.round((10 + 20 + 6) * MIN / 3));
  t.same(h.approvalResponse, { count: 3, medianMs: 4 * MIN, p90Ms: 10 * MIN }, 'auto-approved and pending requests are not response times');
  t.equal(h.breakGlassThisMonth, 1, 'last month\'s break-glass is not counted');
  t.equal(h.expiredUnusedGrants, 1, 'revoked grants are not "expired unused"');
  const today = h.series.sessions.at(-1)!;
  t.equal(today.day, '2026-11-23');
  t.equal(today.value, 2);
  t.equal(h.series.sessions.at(-2)!.value, 1);
  t.equal(h.series.requests.at(-1)!.value, 4);
  t.equal(h.series.approvalMedianMs.at(-1)!.value, 4 * MIN, 'today: 4 and 10 minutes, nearest-rank median 4');
  t.equal(h.series.approvalMedianMs.at(-2)!.value, 2 * MIN);
  t.equal(h.series.approvalMedianMs.at(-3)!.value, null, 'no decisions that day');
  t.equal(h.series.avgPrivilegeMs.at(-1)!.value, 13 * MIN);

  // A session live on another gateway sharing the store: its lease is not standing; once that
  // session is recorded as ended while the lease is still active, it is.
  const other = { ...sess('s-other', 'g-jit', NOW - 60 * DAY, null), gatewayId: 'gw2' };
  await store.insertSession(other);
  await store.insertLease(lease('l-other', 's-other', 'active'));
  t.equal((await computeHealth(store, NOW, (id) => id === 's3', { gatewayId: 'gw' })).standingPrivileges.count, 2, 'live on another gateway: not standing');
  await store.updateSession({ ...other, state: 'ended', endedAt: NOW - 59 * DAY, endReason: 'gateway_crash' });
  t.equal((await computeHealth(store, NOW, (id) => id === 's3', { gatewayId: 'gw' })).standingPrivileges.count, 3, 'its session ended, the lease still active: standing');
});
