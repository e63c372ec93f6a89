/**
 * The store contract: every store implementation runs the same tests — SQLite on a temp file and
 * PostgreSQL on a real cluster started here (test/support/pg.ts), a fresh database per test. "Two
 * handles" are two gateways on one store: a second SQLite connection on the file, a second pool on
 * the database.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Secret } from '../../auth/secret.js';
import { gatewayKey } from '../../auth/keys.js';
import { ManualClock } from '../../policies/clock.js';
import { JitEngine } from '../../policies/engine.js';
import { AUDIT_KEY_LABEL, AuditLog } from '../../proxy/audit.js';
import { ConfigError, validateConfig } from '../../proxy/config.js';
import { openStore, type StoreConfig } from '../../proxy/store/index.js';
import { openPostgresStore } from '../../proxy/store/postgres.js';
import { migrations, tables } from '../../proxy/store/schema.js';
import { pgMigrations } from '../../proxy/store/schema-postgres.js';
import type { SqlStore } from '../../proxy/store/sql.js';
import type {
  ConnectionSecretRecord, GrantRecord, LeaseRecord, QueryLogRecord, RequestRecord, SessionRecord, Store,
} from '../../proxy/store/types.js';
import { requireServerTls, startTestCluster, testDatabase, waitFor } from '../support/pg.js';
import { config, target, who, MIN, HOUR, MONDAY_10_UTC } from '../policies/helpers.js';
import { fromModule } from '../../proxy/audit-events.js';

type Kind = 'sqlite' | 'postgres';

interface Fixture {
  kind: Kind;
  store: Store;
  /** Another handle on the same store (another gateway); closed in teardown. */
  open(): Promise<Store>;
  /**
   * The handle a concurrent transaction of "another gateway" uses. SQLite: the same handle — one
   * process keeps one connection, since a second one would wait for the file's write lock
   * synchronously, blocking the event loop the first transaction needs to finish. PostgreSQL: a
   * second pool.
   */
  txPeer(): Promise<Store>;
  storeConfig: StoreConfig;
  dataDir: string;
}

async function fixture(t: Test, kind: Kind): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-store-'));
  const handles: Store[] = [];
  let storeConfig: StoreConfig;
  if (kind === 'sqlite') {
    storeConfig = { store: { kind: 'sqlite', path: 'db.sqlite' }, file: '<test>', baseDir: dir, gateway: { id: 'test' } };
    t.teardown(async () => { for (const h of handles) await h.close(); rmSync(dir, { recursive: true, force: true }); });
  } else {
    const db = await testDatabase();
    storeConfig = { store: { kind: 'postgres', url: { value: db.url }, poolSize: 10 }, file: '<test>', baseDir: dir, gateway: { id: 'test' } };
    t.teardown(async () => { for (const h of handles) await h.close(); await db.drop(); rmSync(dir, { recursive: true, force: true }); });
  }
  const open = async () => { const s = await openStore(storeConfig, { dataDir: dir }); handles.push(s); return s; };
  const store = await open();
  return { kind, store, open, txPeer: async () => (kind === 'sqlite' ? store : open()), storeConfig, dataDir: dir };
}

const grant = (id: string, over: Partial<GrantRecord> = {}): GrantRecord => ({
  id, requestId: null, identity: 'alice', target: 'web01', role: 'user', state: 'active', startsAt: 0, expiresAt: 1000, breakGlass: false,
  createdAt: 0, endedAt: null, endedBy: null, endReason: null, used: false, notifiedFor: null, ...over,
});
const secret = (id: string, over: Partial<ConnectionSecretRecord> = {}): ConnectionSecretRecord => ({
  id, hash: `h-${id}`, grantId: 'g1', identity: 'alice', target: 'web01', role: 'user', protocol: 'ssh', reusable: false, createdAt: 0,
  expiresAt: 500, usedAt: null, uses: 0, verifiers: { scram: 'v' }, issuedBy: null, linkId: null, ...over,
});
const request = (id: string, over: Partial<RequestRecord> = {}): RequestRecord => ({
  id, requester: 'alice', target: 'web01', role: 'user', durationMs: 3_600_000, reason: 'why', state: 'pending', risk: 'medium', policy: 'p',
  stages: [{ groups: ['leads'], count: 1 }], currentStage: 0, stageDeadline: 5000, escalations: 0, mfaRequired: false, breakGlass: false,
  createdAt: 0, decidedAt: null, decidedBy: null, decisionReason: null, grantId: null, extendsGrant: null, ...over,
});
const session = (id: string, over: Partial<SessionRecord> = {}): SessionRecord => ({
  id, grantId: 'g1', identity: 'alice', target: 'web01', role: 'user', protocol: 'ssh', clientAddr: '127.0.0.1', state: 'active',
  startedAt: 0, endedAt: null, endReason: null, bytesUp: 0, bytesDown: 0, gatewayId: 'gw1', ...over,
});
const lease = (id: string, over: Partial<LeaseRecord> = {}): LeaseRecord => ({
  id, sessionId: 's1', grantId: 'g1', target: 'web01', kind: 'linux-account', state: 'active', data: { user: 'tg_x', nested: { n: 1 } },
  createdAt: 0, activatedAt: null, revokedAt: null, error: null, attempts: null, retryAt: null, ...over,
});
const query = (sessionId: string, n: number, over: Partial<QueryLogRecord> = {}): QueryLogRecord => ({
  sessionId, at: n, statement: `select ${n}`, kind: 'SELECT', params: 0, durationMs: 1, rows: 1, error: null, decision: 'allow', ...over,
});

const quiet = pino({ level: 'silent' });
const auditKey = gatewayKey(randomBytes(32)).deriveKey(AUDIT_KEY_LABEL);
const auditLog = (store: Store, clock = new ManualClock(1_000)) => new AuditLog(store, clock, { key: auditKey });

/** Count calls of a method on one store object (a wrapper installed on the instance). */
function countCalls(obj: object, method: string, pred: (...args: any[]) => boolean = () => true): () => number {
  let n = 0;
  const o = obj as Record<string, (...a: unknown[]) => unknown>;
  const orig = o[method]!.bind(obj);
  o[method] = (...args: unknown[]) => { if (pred(...args)) n++; return orig(...args); };
  return () => n;
}

async function columnsOf(store: Store, kind: Kind, table: string): Promise<Record<string, string>> {
  const sql = store as unknown as SqlStore;
  const rows = kind === 'sqlite'
    ? (await sql.query('SELECT name, type FROM pragma_table_info(?)', [table])).rows
    : (await sql.query('SELECT column_name AS name, data_type AS type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?', [table])).rows;
  return Object.fromEntries(rows.map((r) => [String(r['name']), String(r['type']).toLowerCase()]));
}

function contract(kind: Kind) {
  t.test(`${kind}: governance records round-trip: delegations, access reviews and their lines, exclusions, who an approval was for`, async (t) => {
    const { store: s } = await fixture(t, kind);
    const d = { id: 'd1', delegator: 'bob', delegate: 'dave', startsAt: 100, endsAt: 200, reason: 'holiday', createdAt: 90, createdBy: 'bob', revokedAt: null, revokedBy: null };
    await s.insertDelegation(d);
    await s.insertDelegation({ ...d, id: 'd2', delegate: 'erin', startsAt: 150, endsAt: 300 });
    await s.insertDelegation({ ...d, id: 'd3', delegator: 'lee', startsAt: 100, endsAt: 400, revokedAt: 120, revokedBy: 'lee' });
    t.same(await s.getDelegation('d1'), d, 'a delegation round-trips');
    t.same((await s.listDelegations({ activeAt: 160 })).map((x) => x.id), ['d1', 'd2'], 'active at a time: in its window and not revoked');
    t.same((await s.listDelegations({ activeAt: 120 })).map((x) => x.id), ['d1'], 'not before its start');
    t.same((await s.listDelegations({ activeAt: 200 })).map((x) => x.id), ['d2'], 'over at its end');
    t.same((await s.listDelegations({ delegate: 'dave', endsAfter: 50 })).map((x) => x.id), ['d1'], 'by delegate, not over');
    t.same((await s.listDelegations({ delegator: 'lee' })).map((x) => x.id), ['d3'], 'by delegator, revoked too without a time');
    t.same((await s.listDelegations({ activeAt: Number.NaN })), [], 'a time that is no number matches nothing');
    t.match(await s.claim('delegations', 'd1', { revokedAt: null }, { revokedAt: 170, revokedBy: 'bob' }), { revokedAt: 170 });
    t.equal(await s.claim('delegations', 'd1', { revokedAt: null }, { revokedAt: 171, revokedBy: 'x' }), null, 'ended once');

    const rv = { id: 'v1', policy: 'eng', state: 'open' as const, reviewers: ['leads'], escalateTo: ['soc'], createdAt: 1, createdBy: 'system', dueAt: 50, escalatedAt: null, completedAt: null, scheduled: true };
    await s.insertAccessReview(rv);
    await s.insertAccessReview({ ...rv, id: 'v2', policy: 'ops', createdAt: 2, scheduled: false, state: 'completed', completedAt: 9 });
    t.same(await s.getAccessReview('v1'), rv, 'an access review with its groups (JSON) and flag');
    t.same((await s.listAccessReviews({ state: 'open' })).map((x) => x.id), ['v1']);
    t.same((await s.listAccessReviews({ policy: 'ops' })).map((x) => x.id), ['v2']);
    t.same((await s.listAccessReviews()).map((x) => x.id), ['v2', 'v1'], 'newest first');
    await s.updateAccessReview({ ...rv, escalatedAt: 60 });
    t.match(await s.getAccessReview('v1'), { escalatedAt: 60 });
    const line = { id: 'l1', reviewId: 'v1', kind: 'eligibility' as const, identity: 'alice', policy: 'eng', grantId: null, detail: { groups: ['engineers'], targets: ['*'] }, decision: null, decidedBy: null, decidedAt: null, comment: null, exclusionId: null };
    await s.insertReviewLine(line);
    await s.insertReviewLine({ ...line, id: 'l2', kind: 'grant', identity: 'erin', grantId: 'g9', detail: { target: 'web01' } });
    t.same(await s.getReviewLine('l1'), line, 'a line round-trips');
    t.same((await s.listReviewLines('v1')).map((x) => x.id), ['l1', 'l2']);
    t.match(await s.claim('reviewLines', 'l1', { decision: null }, { decision: 'revoke', decidedBy: 'lee', decidedAt: 5, comment: 'left', exclusionId: 'x1' }), { decision: 'revoke', exclusionId: 'x1' });
    t.equal(await s.claim('reviewLines', 'l1', { decision: null }, { decision: 'confirm', decidedBy: 'lou', decidedAt: 6, comment: null, exclusionId: null }), null, 'decided once');
    await s.updateReviewLine({ ...line, id: 'l2', kind: 'grant', identity: 'erin', grantId: 'g9', detail: { target: 'web01' }, decision: 'confirm', decidedBy: 'lee', decidedAt: 7 });
    t.match(await s.getReviewLine('l2'), { decision: 'confirm' });
    await t.rejects(s.insertReviewLine({ ...line, id: 'l3', reviewId: 'nope' }), 'a line belongs to a review');

    const ex = { id: 'x1', identity: 'alice', scope: 'policy' as const, policy: 'eng', reason: 'left the team', createdAt: 5, createdBy: 'lee', reviewId: 'v1', lineId: 'l1', removedAt: null, removedBy: null };
    await s.insertExclusion(ex);
    await s.insertExclusion({ ...ex, id: 'x2', scope: 'breakglass', policy: null, removedAt: 8, removedBy: 'carol' });
    t.same(await s.getExclusion('x1'), ex);
    t.same((await s.listExclusions({ identity: 'alice', active: true })).map((x) => x.id), ['x1'], 'lifted exclusions are not active');
    t.same((await s.listExclusions({ identity: 'alice' })).map((x) => x.id), ['x1', 'x2']);
    t.same(await s.listExclusions({ identity: 'bob' }), []);
    await s.updateExclusion({ ...ex, removedAt: 9, removedBy: 'carol' });
    t.same(await s.listExclusions({ active: true }), []);

    await s.insertRequest(request('r1', { extendsGrant: 'g1', state: 'queued' }));
    t.match(await s.getRequest('r1'), { extendsGrant: 'g1', state: 'queued' }, 'an extension request, queued');
    await s.insertApproval({ id: 'a1', requestId: 'r1', stage: 0, approver: 'dave', decision: 'approve', comment: null, at: 1, onBehalfOf: 'bob' });
    t.match(await s.listApprovals('r1'), [{ approver: 'dave', onBehalfOf: 'bob' }], 'a delegate\'s approval names whom it stands for');
    await s.insertGrant(grant('g1', { notifiedFor: 1000 }));
    t.equal((await s.getGrant('g1'))?.notifiedFor, 1000);
    t.match(await s.claim('grants', 'g1', { expiresAt: 1000, notifiedFor: 1000 }, { expiresAt: 2000 }), { expiresAt: 2000, notifiedFor: 1000 });
  });

  t.test(`${kind}: vault credentials round-trip, list by target and due time, claim forward once, delete`, async (t) => {
    const { store: s } = await fixture(t, kind);
    const v = {
      id: 'db1/admin.password', target: 'db1', field: 'admin.password', sealed: 'v1.sealed-a', pendingSealed: null, setAt: 10, setBy: 'carol',
      rotatedAt: null, nextRotationAt: 500, failures: 0, lastFailure: null, lastFailureAt: null, version: 1,
    };
    await s.upsertVaultCredential(v);
    await s.upsertVaultCredential({ ...v, id: 'db2/admin.password', target: 'db2', nextRotationAt: null });
    await s.upsertVaultCredential({ ...v, id: 'db3/admin.password', target: 'db3', nextRotationAt: 900 });
    t.same(await s.getVaultCredential(v.id), v, 'a vault credential round-trips');
    t.same((await s.listVaultCredentials({ target: 'db2' })).map((x) => x.id), ['db2/admin.password']);
    t.same((await s.listVaultCredentials({ dueAt: 600 })).map((x) => x.id), ['db1/admin.password'], 'due by then: scheduled and not later');
    t.same((await s.listVaultCredentials({ dueAt: Number.NaN })), [], 'a due time that is no number matches nothing');
    t.equal((await s.listVaultCredentials()).length, 3);
    const next = { ...v, sealed: 'v1.sealed-b', pendingSealed: 'v1.pending', version: 2, failures: 1, lastFailure: 'refused', lastFailureAt: 20 };
    await s.upsertVaultCredential(next);
    t.same(await s.getVaultCredential(v.id), next, 'an upsert replaces the row');
    t.match(await s.claim('vault', v.id, { nextRotationAt: 500 }, { nextRotationAt: 800 }), { nextRotationAt: 800 }, 'the due rotation is claimed forward');
    t.equal(await s.claim('vault', v.id, { nextRotationAt: 500 }, { nextRotationAt: 801 }), null, 'by one caller only');
    await s.deleteVaultCredential(v.id);
    t.equal(await s.getVaultCredential(v.id), null, 'deleted');
  });

  t.test(`${kind}: every record round-trips; upserts keep what they must`, async (t) => {
    const { store: s } = await fixture(t, kind);
    await s.upsertIdentity({ sub: 'alice', email: 'a@x', name: 'Alice', groups: ['engineers'], firstSeen: 1, lastSeen: 1 });
    await s.upsertIdentity({ sub: 'alice', email: 'a2@x', name: 'Alice', groups: ['engineers', 'x'], firstSeen: 5, lastSeen: 5 });
    t.same(await s.getIdentity('alice'), { sub: 'alice', email: 'a2@x', name: 'Alice', groups: ['engineers', 'x'], firstSeen: 1, lastSeen: 5 }, 'first seen kept');
    await s.upsertIdentity({ sub: 'bob', email: null, name: null, groups: [], firstSeen: 2, lastSeen: 2 });
    t.same((await s.listIdentities()).map((i) => i.sub), ['alice', 'bob']);
    t.equal(await s.getIdentity('nobody'), null);

    const r = request('r1');
    await s.insertRequest(r);
    t.same(await s.getRequest('r1'), r, 'request with its stages (JSON) and booleans');
    await s.updateRequest({ ...r, state: 'approved', stageDeadline: null, mfaRequired: true, stages: [] });
    t.match(await s.getRequest('r1'), { state: 'approved', stageDeadline: null, mfaRequired: true, stages: [] });
    await s.insertApproval({ id: 'a2', requestId: 'r1', stage: 0, approver: 'dave', decision: 'approve', comment: null, at: 20 });
    await s.insertApproval({ id: 'a1', requestId: 'r1', stage: 0, approver: 'bob', decision: 'approve', comment: 'ok', at: 10 });
    t.same((await s.listApprovals('r1')).map((a) => a.id), ['a1', 'a2'], 'approvals in time order');
    await t.rejects(s.insertApproval({ id: 'a3', requestId: 'r1', stage: 0, approver: 'bob', decision: 'deny', comment: null, at: 30 }), 'one decision per approver');

    const g = grant('g1', { requestId: 'r1', used: true, breakGlass: true });
    await s.insertGrant(g);
    t.same(await s.getGrant('g1'), g);
    await t.rejects(s.insertGrant(grant('g2', { requestId: 'r1' })), 'one grant per request');
    await s.insertReview({ id: 'v1', grantId: 'g1', identity: 'alice', reason: 'fire', state: 'open', openedAt: 1, closedAt: null, closedBy: null, comment: null });
    await s.updateReview({ id: 'v1', grantId: 'g1', identity: 'alice', reason: 'fire', state: 'closed', openedAt: 1, closedAt: 2, closedBy: 'bob', comment: 'fine' });
    t.match(await s.getReview('v1'), { state: 'closed', closedBy: 'bob' });
    t.same((await s.listReviews({ state: 'open' })), []);

    await s.insertConnectionSecret(secret('s1'));
    t.same(await s.getConnectionSecretByHash('h-s1'), secret('s1'), 'secret with its verifiers');
    t.equal(await s.getConnectionSecretByHash('h-none'), null);
    await s.insertApiToken({ id: 't1', hash: 'th', identity: 'alice', name: 'ci', createdAt: 1, expiresAt: 9, lastUsedAt: null, revokedAt: null, mfaAt: 3 });
    await s.updateApiToken({ id: 't1', hash: 'th', identity: 'alice', name: 'ci', createdAt: 1, expiresAt: 9, lastUsedAt: 4, revokedAt: 5, mfaAt: 3 });
    t.match(await s.getApiTokenByHash('th'), { lastUsedAt: 4, revokedAt: 5 });
    t.equal((await s.listApiTokens('alice')).length, 1);
    t.match(await s.getApiToken('t1'), { id: 't1', revokedAt: 5 }, 'token by id');
    t.equal(await s.getApiToken('nope'), null);
    const link = { id: 'L1', identity: 'alice', refreshSealed: 'v1.sealed', accessSealed: null, accessExpiresAt: null, createdAt: 1, validatedAt: 10, expiresAt: 100, state: 'ok' as const, failedAt: null, failKind: null, failReason: null };
    await s.insertIdpLink(link);
    await s.insertIdpLink({ ...link, id: 'L2', identity: 'bob', validatedAt: 50, expiresAt: 20 });
    t.same(await s.getIdpLink('L1'), link, 'IdP link round-trips');
    t.same((await s.listIdpLinks({ validatedBefore: 11 })).map((l) => l.id), ['L1'], 'links validated before a time');
    t.same((await s.listIdpLinks({ liveAt: 30 })).map((l) => l.id), ['L1'], 'links still live at a time');
    t.same((await s.listIdpLinks({ identity: 'bob' })).map((l) => l.id), ['L2']);
    await s.updateIdpLink({ ...link, state: 'failed', failedAt: 12, failKind: 'refused', failReason: 'user disabled' });
    t.same((await s.listIdpLinks({ state: 'failed' })).map((l) => l.id), ['L1'], 'failed links by state');
    await s.insertWebSession({ id: 'w1', hash: 'wh', identity: 'alice', createdAt: 1, expiresAt: 9, mfaAt: null, revokedAt: null });
    await s.updateWebSession({ id: 'w1', hash: 'wh', identity: 'alice', createdAt: 1, expiresAt: 9, mfaAt: 2, revokedAt: null });
    t.match(await s.getWebSessionByHash('wh'), { mfaAt: 2 });
    await s.insertPublicKey({ id: 'k1', identity: 'alice', publicKey: 'ssh-ed25519 AAA', fingerprint: 'SHA256:x', name: 'laptop', createdAt: 1 });
    t.equal((await s.listPublicKeys({ fingerprint: 'SHA256:x' })).length, 1);
    await s.deletePublicKey('k1');
    t.same(await s.listPublicKeys({ identity: 'alice' }), []);

    await s.insertLease(lease('l1'));
    await s.updateLease(lease('l1', { state: 'revoked', revokedAt: 7 }));
    t.same(await s.getLease('l1'), lease('l1', { state: 'revoked', revokedAt: 7 }), 'lease data (nested JSON)');
    await s.insertSession(session('s1'));
    await s.updateSession(session('s1', { state: 'ended', bytesUp: 2 ** 40, bytesDown: 3, endedAt: 9, endReason: 'done' }));
    t.same(await s.getSession('s1'), session('s1', { state: 'ended', bytesUp: 2 ** 40, bytesDown: 3, endedAt: 9, endReason: 'done' }), 'byte counts past 32 bits');
    await s.insertRecording({ id: 'rc1', sessionId: 's1', kind: 'cast', path: '/x', state: 'open', sha256: null, bytes: 0, createdAt: 1, sealedAt: null });
    await s.updateRecording({ id: 'rc1', sessionId: 's1', kind: 'cast', path: '/x', state: 'sealed', sha256: 'ab', bytes: 5, createdAt: 1, sealedAt: 2 });
    t.match(await s.getRecording('rc1'), { state: 'sealed', sha256: 'ab' });
    t.equal((await s.listRecordings({ sessionId: 's1' })).length, 1);
    await s.insertLock({ id: 'lk1', scope: 'identity', value: 'alice', reason: 'x', createdBy: 'carol', createdAt: 1, expiresAt: null, removedAt: null, removedBy: null });
    await s.updateLock({ id: 'lk1', scope: 'identity', value: 'alice', reason: 'x', createdBy: 'carol', createdAt: 1, expiresAt: null, removedAt: 3, removedBy: 'carol' });
    t.same(await s.listLocks({ active: true, at: 5 }), [], 'a removed lock is not active');

    t.equal(await s.getKv('k'), null);
    await s.setKv('k', 'v1');
    await s.setKv('k', 'v2');
    t.equal(await s.getKv('k'), 'v2', 'set overwrites');
    await s.deleteKv('k');
    t.equal(await s.getKv('k'), null);
  });

  t.test(`${kind}: a single-use secret is consumed once by concurrent consumers on two handles`, async (t) => {
    const f = await fixture(t, kind);
    const peer = await f.open();
    await f.store.insertConnectionSecret(secret('once'));
    await f.store.insertConnectionSecret(secret('many', { reusable: true }));
    const tries = Array.from({ length: 24 }, (_, i) => (i % 2 ? peer : f.store).useConnectionSecret('once', 10 + i));
    const won = (await Promise.all(tries)).filter((r) => r !== null);
    t.equal(won.length, 1, 'exactly one consumer wins');
    t.match(won[0], { id: 'once', uses: 1 });
    t.equal((await peer.getConnectionSecretByHash('h-once'))?.uses, 1, 'counted once');
    const many = await Promise.all(Array.from({ length: 24 }, (_, i) => (i % 2 ? peer : f.store).useConnectionSecret('many', 10 + i)));
    t.ok(many.every((r) => r !== null), 'a reusable secret serves every connection');
    const after = await f.store.getConnectionSecretByHash('h-many');
    t.equal(after?.uses, 24);
    t.ok(after!.usedAt! >= 10 && after!.usedAt! <= 33, 'first use time kept');
    t.equal(await f.store.useConnectionSecret('many', 500), null, 'refused at its expiry');
    t.equal(await f.store.useConnectionSecret('nope', 10), null, 'unknown id');
  });

  t.test(`${kind}: transactions commit or roll back whole; outside callers are never rolled back with them`, async (t) => {
    const { store: s } = await fixture(t, kind);
    t.equal(await s.transaction(async (tx) => { await tx.setKv('c', '1'); await tx.insertGrant(grant('gt')); return 42; }), 42);
    t.equal(await s.getKv('c'), '1', 'committed');
    await t.rejects(s.transaction(async (tx) => {
      await tx.setKv('k', 'v');
      await tx.insertGrant(grant('gr'));
      await tx.transaction(async (inner) => { await inner.setKv('nested', 'x'); });
      throw new Error('boom');
    }), /boom/);
    t.equal(await s.getKv('k'), null, 'rolled back');
    t.equal(await s.getGrant('gr'), null, 'rolled back');
    t.equal(await s.getKv('nested'), null, 'a nested transaction joined the outer one and rolled back with it');
    await t.rejects(s.transaction(async (tx) => { await tx.insertGrant(grant('gt')); }), 'a failing statement fails the transaction');

    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const failing = s.transaction(async (tx) => {
      await tx.setKv('a', 'from-failing');
      await gate;
      throw new Error('boom');
    });
    const outside = s.setKv('b', 'outside');
    const second = s.transaction(async (tx) => { await tx.setKv('c', 'second'); return 1; });
    release();
    await t.rejects(failing, /boom/);
    await outside;
    t.equal(await second, 1);
    t.equal(await s.getKv('a'), null, 'the failed transaction rolled back');
    t.equal(await s.getKv('b'), 'outside', 'a write made meanwhile survived the rollback');
    t.equal(await s.getKv('c'), 'second', 'the next transaction ran');
  });

  t.test(`${kind}: concurrent read-modify-write transactions from two gateways lose no update`, async (t) => {
    const f = await fixture(t, kind);
    const peer = await f.txPeer();
    await f.store.setKv('counter', '0');
    const bump = (s: Store) => s.transaction(async (tx) => {
      const n = Number(await tx.getKv('counter'));
      await new Promise((r) => setTimeout(r, 5));
      await tx.setKv('counter', String(n + 1));
    });
    await Promise.all(Array.from({ length: 6 }, (_, i) => bump(i % 2 ? peer : f.store)));
    t.equal(await f.store.getKv('counter'), '6', 'each transaction saw the others as if run one after another');
  });

  t.test(`${kind}: claim is a compare-and-set that one caller wins, and rolls back with its transaction`, async (t) => {
    const f = await fixture(t, kind);
    const peer = await f.open();
    await f.store.insertRequest(request('r1', { stageDeadline: 5000 }));
    const claims = await Promise.all(Array.from({ length: 10 }, (_, i) =>
      (i % 2 ? peer : f.store).claim('requests', 'r1', { state: 'pending', stageDeadline: 5000 }, { stageDeadline: null })));
    t.equal(claims.filter((c) => c !== null).length, 1, 'one claim matched');
    t.match(claims.find((c) => c !== null), { id: 'r1', stageDeadline: null, state: 'pending', stages: [{ groups: ['leads'] }] }, 'the updated record');
    t.equal(await f.store.claim('requests', 'r1', { stageDeadline: null }, { escalations: 1 }).then((r) => r?.escalations), 1, 'null expects IS NULL');
    t.equal(await f.store.claim('requests', 'nope', {}, { escalations: 1 }), null, 'a missing row');
    await f.store.insertGrant(grant('g1'));
    await t.rejects(f.store.transaction(async (tx) => {
      t.ok(await tx.claim('grants', 'g1', { state: 'active', expiresAt: 1000 }, { state: 'expired', endedAt: 1000, endedBy: 'system' }));
      throw new Error('crash after the claim');
    }));
    t.equal((await f.store.getGrant('g1'))?.state, 'active', 'the claim rolled back: the timer can fire again');
    await t.rejects(f.store.claim('requests', 'r1', {}, {}), /nothing to set/);
  });

  t.test(`${kind}: audit appends from two clients at once make one chain that verifies, in batches`, async (t) => {
    const f = await fixture(t, kind);
    const peer = await f.open();
    const a = auditLog(f.store);
    const b = auditLog(peer);
    const callsA = countCalls(f.store, 'appendAudit');
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < 60; i++) {
      all.push(a.append('alice', 'request.created', `a${i}`, { i }));
      all.push(b.append('bob', 'request.approved', `b${i}`, { i, password: 'hunter2' }));
    }
    const recs = await Promise.all(all) as { seq: number }[];
    t.same(recs.map((r) => r.seq).sort((x, y) => x - y), Array.from({ length: 120 }, (_, i) => i + 1), 'every seq once, no gap');
    t.ok(callsA() <= 3, `60 queued events took ${callsA()} store operations`);
    for (const log of [a, b]) {
      const v = await log.verify();
      t.ok(v.ok && v.count === 120, `verifies: ${JSON.stringify(v)}`);
    }
    // Interleaved appends awaited one by one, alternating clients, keep linking to each other.
    for (let i = 0; i < 10; i++) await (i % 2 ? a : b).append('system', 'notify', null, { i });
    const v = await a.verify();
    t.ok(v.ok && v.count === 130, JSON.stringify(v));
    const rows = await f.store.listAudit({ afterSeq: 120 });
    t.ok(rows.every((r, i) => i === 0 || r.prevHash === rows[i - 1]!.hash), 'each links to the one before');
    t.equal((await f.store.listAudit({ actor: 'bob', limit: 1 }))[0]!.data['password'], '<redacted>');
    await a.close();
    await t.rejects(a.append('x', 'notify', null), /closed/);
  });

  t.test(`${kind}: listing filters, pages and hostile filter values answer alike`, async (t) => {
    const { store: s } = await fixture(t, kind);
    for (const [i, id] of ['s1', 's2', 's3'].entries()) {
      await s.insertSession(session(id, { startedAt: 1000 * (i + 1), identity: i === 1 ? 'bob' : 'alice', state: i === 2 ? 'ended' : 'active' }));
    }
    const ids = (l: { id: string }[]) => l.map((x) => x.id);
    t.same(ids(await s.listSessions({})), ['s3', 's2', 's1'], 'newest first');
    t.same(ids(await s.listSessions({ since: 1500 })), ['s3', 's2']);
    t.same(ids(await s.listSessions({ since: 1500.5, until: 3000 })), ['s3', 's2'], 'a fraction');
    t.same(ids(await s.listSessions({ until: 2000 })), ['s2', 's1']);
    t.same(ids(await s.listSessions({ since: Number.NaN })), [], 'NaN matches nothing');
    t.same(ids(await s.listSessions({ since: -Infinity, until: Infinity })), ['s3', 's2', 's1']);
    t.same(ids(await s.listSessions({ since: 1e300 })), []);
    t.same(ids(await s.listSessions({ state: 'active', identity: 'alice' })), ['s1']);
    t.same(ids(await s.listSessions({ limit: 2 })), ['s3', 's2']);
    t.same(ids(await s.listSessions({ limit: 2, offset: 2 })), ['s1']);
    t.same(ids(await s.listSessions({ limit: -1 })), ['s3', 's2', 's1'], 'a negative limit is no limit');
    t.same(ids(await s.listSessions({ limit: Number.NaN, offset: -5 })), ['s3', 's2', 's1']);
    t.same(ids(await s.listSessions({ limit: 1e20, offset: 1.7 })), ['s2', 's1']);
    t.same(ids(await s.listSessions({ identity: 'x\u0000y' })), [], 'a NUL in a filter is no error');

    for (const [i, id] of ['r1', 'r2', 'r3'].entries()) await s.insertRequest(request(id, { createdAt: i, requester: i ? 'bob' : 'alice', state: i === 2 ? 'denied' : 'pending' }));
    t.same(ids(await s.listRequests({ state: 'pending' })), ['r2', 'r1']);
    t.same(ids(await s.listRequests({ requester: 'bob', limit: 1 })), ['r3']);
    t.same(ids(await s.listRequests({ target: 'web01', offset: 1, limit: 5 })), ['r2', 'r1']);
    for (const id of ['g1', 'g2']) await s.insertGrant(grant(id, { identity: id === 'g1' ? 'alice' : 'bob', state: id === 'g1' ? 'active' : 'revoked' }));
    t.same(ids(await s.listGrants({ identity: 'alice', state: 'active' })), ['g1']);

    await s.insertLease(lease('l1', { state: 'active' }));
    await s.insertLease(lease('l2', { state: 'revoking', sessionId: 's2', createdAt: 1 }));
    await s.insertLease(lease('l3', { state: 'revoked', createdAt: 2 }));
    t.same(ids(await s.listLeases({ state: ['active', 'revoking'] })), ['l1', 'l2']);
    t.same(ids(await s.listLeases({ state: [] })), [], 'an empty state list matches nothing');
    t.same(ids(await s.listLeases({ sessionId: 's2' })), ['l2']);

    await s.insertConnectionSecret(secret('c1', { expiresAt: 100 }));
    await s.insertConnectionSecret(secret('c2', { expiresAt: 100, uses: 1, createdAt: 1 }));
    await s.insertConnectionSecret(secret('c3', { expiresAt: 100, uses: 3, reusable: true, createdAt: 2 }));
    await s.insertConnectionSecret(secret('c4', { expiresAt: 10, createdAt: 3, protocol: 'postgres' }));
    t.same(ids(await s.listConnectionSecrets({ unusedAt: 50 })), ['c3', 'c1'], 'usable: unexpired and unused or reusable');
    t.same(ids(await s.listConnectionSecrets({ protocol: 'postgres' })), ['c4']);
    t.same(ids(await s.listConnectionSecrets({ unusedAt: Number.NaN })), []);

    await s.insertLock({ id: 'k1', scope: 'target', value: 'web01', reason: 'x', createdBy: 'c', createdAt: 1, expiresAt: 100, removedAt: null, removedBy: null });
    await s.insertLock({ id: 'k2', scope: 'grant', value: 'g1', reason: 'x', createdBy: 'c', createdAt: 2, expiresAt: null, removedAt: null, removedBy: null });
    t.same(ids(await s.listLocks({ active: true, at: 50 })), ['k1', 'k2']);
    t.same(ids(await s.listLocks({ active: true, at: 100 })), ['k2'], 'an expired lock is not active');
    t.same(ids(await s.listLocks({})), ['k1', 'k2']);

    const clock = new ManualClock(1_000);
    const log = auditLog(s, clock);
    const actions = ['request.created', 'request.approved', 'grant.created', 'session.started', 'Request.odd'];
    for (const [i, action] of actions.entries()) { clock.advance(1000); await log.append(i % 2 ? 'bob' : 'alice', fromModule(action), `x${i}`, {}); }
    const seqs = (l: { seq: number }[]) => l.map((x) => x.seq);
    t.same(seqs(await s.listAudit({ action: 'request.*' })), [1, 2], 'an action prefix, case-sensitive');
    t.same(seqs(await s.listAudit({ action: 'request.%*' })), [], '% is no wildcard');
    t.same(seqs(await s.listAudit({ action: 'request_created*' })), [], '_ is no wildcard');
    t.same(seqs(await s.listAudit({ action: '*' })), [1, 2, 3, 4, 5]);
    t.same(seqs(await s.listAudit({ action: 'grant.created' })), [3]);
    t.same(seqs(await s.listAudit({ actor: 'bob' })), [2, 4]);
    t.same(seqs(await s.listAudit({ subject: 'x4' })), [5]);
    t.same(seqs(await s.listAudit({ since: 3000, until: 4000 })), [2, 3]);
    t.same(seqs(await s.listAudit({ afterSeq: 3 })), [4, 5]);
    t.same(seqs(await s.listAudit({ afterSeq: 2.5, limit: 1 })), [3]);
    t.same(seqs(await s.listAudit({ afterSeq: Number.NaN })), []);
    t.same(seqs(await s.listAudit({ limit: 2, offset: 1 })), [2, 3]);
    t.equal((await s.lastAudit())?.seq, 5);
  });

  t.test(`${kind}: the query log is batched and flushed by its timer, by reads and by close`, async (t) => {
    const f = await fixture(t, kind);
    const peer = await f.open();
    const writes = kind === 'sqlite'
      ? countCalls(f.store, 'flushQueryLog', () => ((f.store as unknown as { queryQueue: unknown[] }).queryQueue.length > 0))
      : countCalls(f.store, 'query', (sql: string) => sql.startsWith('INSERT INTO query_log'));
    for (let i = 1; i <= 1234; i++) void f.store.insertQuery(query('q1', i));
    const rows = await f.store.listQueries('q1');
    t.equal(rows.length, 1234, 'a read flushes first');
    t.same(rows.slice(0, 3).map((r) => r.statement), ['select 1', 'select 2', 'select 3'], 'in order');
    t.ok(rows.every((r, i) => i === 0 || r.id! > rows[i - 1]!.id!), 'ids ascending, assigned by the database');
    t.ok(writes() >= 1 && writes() <= 4, `1234 rows in ${writes()} writes`);
    t.same((await f.store.listQueries('q1', { limit: 2, offset: 1233 })).map((r) => r.statement), ['select 1234']);

    await f.store.insertQuery(query('q2', 1, { statement: 'select \u0000', durationMs: 2.6, rows: null, error: 'x', decision: 'deny' }));
    const seen = await waitFor(async () => { const r = await peer.listQueries('q2'); return r.length ? r : null; }, 5000, 'the timer flush');
    t.match(seen[0], { sessionId: 'q2', kind: 'SELECT', rows: null, error: 'x', decision: 'deny' }, 'written by the timer, seen by another handle');
    t.equal(seen[0]!.statement, kind === 'sqlite' ? 'select \u0000' : 'select \uFFFD');

    const last = await f.open();
    for (let i = 0; i < 3; i++) void last.insertQuery(query('q3', i));
    await last.close();
    t.equal((await peer.listQueries('q3')).length, 3, 'close flushes');
  });

  t.test(`${kind}: migrations are idempotent; both dialects have the same versions and columns`, async (t) => {
    const f = await fixture(t, kind);
    await f.store.insertGrant(grant('g1'));
    await f.store.migrate();
    await f.store.migrate();
    const again = await f.open();
    t.same(await again.getGrant('g1'), grant('g1'), 'reopened: data intact');
    t.same(migrations.map((m) => m.version), pgMigrations.map((m) => m.version), 'every SQLite migration has its PostgreSQL twin');
    for (const spec of Object.values(tables)) {
      const cols = await columnsOf(f.store, kind, spec.name);
      const want = Object.fromEntries(Object.entries(spec.columns).map(([c, k]) => [c.replace(/[A-Z]/g, (x) => `_${x.toLowerCase()}`),
        kind === 'sqlite' ? (k === 'int' || k === 'bool' ? 'integer' : 'text') : ({ int: 'bigint', bool: 'boolean', text: 'text', json: 'text' })[k]]));
      t.same(cols, want, `${spec.name}: the columns of its spec, with the dialect's types`);
    }
    const sql = f.store as unknown as SqlStore;
    const versions = (await sql.query('SELECT version FROM schema_migrations ORDER BY version', [])).rows.map((r) => Number(r['version']));
    t.same(versions, migrations.map((m) => m.version).sort((a, b) => a - b), 'each version recorded once');
  });

  t.test(`${kind}: text with U+0000 is stored without an error; JSON keeps it exactly`, async (t) => {
    const { store: s } = await fixture(t, kind);
    await s.upsertIdentity({ sub: 'n', email: null, name: 'a\u0000b', groups: ['x\u0000y'], firstSeen: 1, lastSeen: 1 });
    const id = await s.getIdentity('n');
    t.equal(id?.name, kind === 'sqlite' ? 'a\u0000b' : 'a\uFFFDb');
    t.same(id?.groups, ['x\u0000y'], 'JSON columns keep it (as an escape)');
    const log = auditLog(s);
    await log.append('mal\u0000lory', 'request.created', 'sub\u0000ject', { reason: 'r\u0000' });
    const v = await log.verify();
    t.ok(v.ok, `the chain still verifies: ${JSON.stringify(v)}`);
    t.equal((await s.lastAudit())?.actor, 'mal\uFFFDlory', 'the audit log cleans it before hashing');
  });

  t.test(`${kind}: two policy engines on one store decide once (approvals, escalation, expiry)`, async (t) => {
    const f = await fixture(t, kind);
    const peer = await f.txPeer();
    const clock = new ManualClock(MONDAY_10_UTC);
    const cfg = config({
      targets: [target('highdb', 'high'), target('medbox', 'medium')],
      policies: [{ name: 'p', requesters: ['devs'], approvers: ['leads'], approvalTimeout: '30m', onTimeout: 'escalate', escalateTo: ['security'] }],
    });
    const audits: string[] = [];
    const ended: string[] = [];
    const engines: JitEngine[] = [];
    const engine = async (store: Store) => {
      const e = new JitEngine({
        store, clock, config: cfg, sweepMs: 0, log: quiet,
        audit: async (_actor, action) => { audits.push(action); },
        onGrantEnded: (g) => { ended.push(g.id); },
      });
      engines.push(e);
      await e.start();
      return e;
    };
    t.teardown(() => { for (const e of engines) e.stop(); });
    const idle = () => Promise.all(engines.map((e) => e.idle()));
    const a = await engine(f.store);
    const dev = who('dana', ['devs']);
    const high = await a.createRequest(dev, { target: 'highdb', role: 'ops', duration: '1h', reason: 'x' });
    const med = await a.createRequest(dev, { target: 'medbox', role: 'ops', duration: '1h', reason: 'x' });
    const b = await engine(peer);
    // Two approvers on two gateways at the same moment, for a stage that needs both.
    await Promise.all([a.approve(who('lee', ['leads']), high.id), b.approve(who('lou', ['leads']), high.id)]);
    const done = await f.store.getRequest(high.id);
    t.equal(done?.state, 'approved', 'the stage saw both approvals');
    t.equal((await f.store.listApprovals(high.id)).length, 2);
    t.equal((await f.store.listGrants({})).length, 1, 'one grant');
    await engine(peer); // a third gateway, started after the grant exists, arms its expiry too
    clock.advance(30 * MIN);
    await idle();
    t.equal(audits.filter((x) => x === 'request.escalated').length, 1, 'escalated once across gateways');
    const esc = await f.store.getRequest(med.id);
    t.match(esc, { state: 'pending', escalations: 1, stageDeadline: MONDAY_10_UTC + 60 * MIN, stages: [{ groups: ['security'] }] });
    clock.advance(30 * MIN);
    await idle();
    t.equal(audits.filter((x) => x === 'request.expired').length, 1, 'expired once');
    t.equal(audits.filter((x) => x === 'grant.expired').length, 1, 'the grant expired once');
    t.same(ended, [done!.grantId], 'its sessions were ended once');
    clock.advance(HOUR);
    await idle();
    t.equal(audits.filter((x) => x.endsWith('.expired')).length, 2, 'nothing fires again');
  });
}

contract('sqlite');
contract('postgres');

t.test('postgres: the store URL is a secret: errors show it without the password', async (t) => {
  const db = await testDatabase();
  t.teardown(() => db.drop());
  const dir = mkdtempSync(join(tmpdir(), 'tg-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const u = new URL(db.url);
  const envCfg: StoreConfig = { store: { kind: 'postgres', url: { env: 'TG_TEST_DB_URL' }, poolSize: 10 }, file: 'gw.yaml', baseDir: dir, gateway: { id: 't' } };
  const cfg = (url: string): StoreConfig => { process.env['TG_TEST_DB_URL'] = url; return envCfg; };
  t.teardown(() => { delete process.env['TG_TEST_DB_URL']; });
  const fails = async (url: string) => {
    const e = await openStore(cfg(url), { dataDir: dir }).then(async (s) => { await s.close(); return null; }, (x: Error) => x);
    t.ok(e instanceof ConfigError, `a ConfigError: ${e?.message}`);
    t.notOk(e!.message.includes(u.password), 'the password is never in the message');
    t.notOk(e!.message.includes('wrong-pw-123'), 'nor a wrong one');
    return e!.message;
  };
  const wrong = `postgres://${u.username}:wrong-pw-123@${u.host}${u.pathname}`;
  const m = await fails(wrong);
  t.ok(m.startsWith('gw.yaml: store.url: a PostgreSQL database'), m);
  t.ok(m.includes(`postgres://tollgate_store:<secret>@${u.host}${u.pathname}: password authentication failed`), 'names the URL without its password, and the reason');
  t.match(await fails(`postgres://${u.username}:${u.password}@127.0.0.1:1/x`), /postgres:\/\/tollgate_store:<secret>@127\.0\.0\.1:1\/x: connect ECONNREFUSED/);
  t.match(await fails(`postgres://${u.username}:${u.password}@${u.host}/no_such_db`), /database "no_such_db" does not exist/);
  t.match(await fails(`${u.password}-not-a-url`), /store\.url: a PostgreSQL URL such as/);
  t.match(await fails(`mysql://${u.username}:${u.password}@${u.host}/x`), /store\.url: a URL that starts with postgres:\/\//);
  t.match(await fails(`${db.url}?sslmode=require&password=x`), /postgres:\/\/tollgate_store:<secret>@[^ ]+\?…: /, 'no query string either');
  delete process.env['TG_TEST_DB_URL'];
  const e = await openStore(envCfg, { dataDir: dir }).catch((x: Error) => x);
  t.match((e as Error).message, 'gw.yaml: store.url: environment variable TG_TEST_DB_URL to be set');
  const ok = await openStore(cfg(db.url), { dataDir: dir });
  t.equal(ok.kind, 'postgres');
  await ok.close();
});

t.test('postgres: nodes starting together migrate once; a tx handle refuses calls after its transaction', async (t) => {
  const db = await testDatabase();
  t.teardown(() => db.drop());
  const stores = await Promise.all([1, 2, 3].map(() => openPostgresStore({ url: new Secret(db.url) })));
  t.teardown(async () => { for (const s of stores) await s.close(); });
  const v = await stores[0]!.query('SELECT version FROM schema_migrations ORDER BY version', []);
  t.same(v.rows.map((r) => Number(r['version'])), pgMigrations.map((m) => m.version), 'each version applied once, in order');
  const idle = await stores[0]!.query('SHOW idle_in_transaction_session_timeout', []);
  t.equal(idle.rows[0]?.['idle_in_transaction_session_timeout'], '1min', 'a stuck open transaction cannot hold the audit lock for ever');
  let leaked: Store | null = null;
  await stores[1]!.transaction(async (tx) => { leaked = tx; await tx.setKv('x', '1'); });
  await t.rejects(leaked!.getKv('x'), /transaction has ended/);
  t.equal(await stores[2]!.getKv('x'), '1');
});

t.test('postgres: TLS to the store from the URL (sslmode=verify-full, sslrootcert)', async (t) => {
  const c = await startTestCluster(t, 'tls-store');
  const cert = await requireServerTls(c);
  const db = await testDatabase('tg_store_tls', c);
  const certFile = join(c.dir, 'store-ca.pem');
  writeFileSync(certFile, cert);
  const plain = await openPostgresStore({ url: new Secret(db.url) }).then(async (s) => { await s.close(); return null; }, (e: Error) => e);
  t.match(plain?.message, /pg_hba\.conf rejects connection .* no encryption/, 'the server refuses a connection without TLS');
  const s = await openPostgresStore({ url: new Secret(`${db.url}?sslmode=verify-full&sslrootcert=${encodeURIComponent(certFile)}`) });
  t.teardown(() => s.close());
  const r = await (s as unknown as SqlStore).query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()', []);
  t.equal(r.rows[0]?.['ssl'], true, 'the store connection is TLS');
  await s.setKv('k', 'v');
  t.equal(await s.getKv('k'), 'v');
});

t.test('store config errors name the key and what was expected', async (t) => {
  const check = (store: unknown) => { try { validateConfig({ store }, 'gw.yaml', new Map()); return 'ok'; } catch (e) { return (e as Error).message; } };
  t.equal(check({ kind: 'mysql' }), 'gw.yaml: store.kind: expected one of "sqlite", "postgres"');
  t.match(check({ kind: 'postgres' }), /^gw\.yaml: store\.url: a secret reference/);
  t.match(check({ kind: 'postgres', url: 'postgres://u:pw@h/db' }), /^gw\.yaml: store\.url: a secret reference/, 'an inline URL is refused: it holds a password');
  t.match(check({ kind: 'postgres', url: { env: 'X' }, poolSize: 1 }), /^gw\.yaml: store\.poolSize: /);
  t.equal(check({ kind: 'sqlite', url: { env: 'X' } }), 'gw.yaml: store: unknown key(s) url');
  t.equal(check({ kind: 'postgres', url: { env: 'X' } }), 'ok');
  t.equal(check(undefined), 'ok', 'SQLite by default');
});
