/**
 * The per-session SQL Server login against the TDS TEST DOUBLE, statement by statement: what the
 * gateway sends to create and to remove it — with a hostile identity (quotes, brackets,
 * semicolons, unicode) and hostile database / role names in the configuration — the lease
 * stored before the login exists, the reaper dropping a crashed session's login from the lease
 * data alone (KILL of its live sessions included), a failed or interrupted mint leaving nothing,
 * upstream TLS (verified CA, wrong CA, strict, a server without TLS), and checkTarget.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../support/gateway.js';
import { doubleTarget, startDouble, tediousConnect, tediousEnded, tediousRun, waitFor } from './support.js';
import { mssqlModule } from '../../protocols/mssql/index.js';
import { connectWith, createSessionLogin, randomPassword, sessionLoginName, tediousConfig } from '../../protocols/mssql/provisioner.js';
import { roleOf } from '../../protocols/mssql/config.js';
import { loginUpstream } from '../../protocols/mssql/upstream.js';
import { TDS } from '../../protocols/mssql/login7.js';
import { ensureTlsMaterial } from '../../proxy/tls.js';
import { SystemClock } from '../../policies/clock.js';
import type { LeaseRecord } from '../../proxy/store/types.js';

const WEIRD_DB = 'we]ird; DROP DATABASE x; --';
const UNICODE_DB = '数据库';
const HOSTILE_ROLE = "r'o]le";
const d = await startDouble(t, { databases: ['master', 'sales', WEIRD_DB, UNICODE_DB] });
const otherCa = mkdtempSync(join(tmpdir(), 'tg-other-ca-'));
t.teardown(() => rmSync(otherCa, { recursive: true, force: true }));
const hostile = doubleTarget(d, {
  name: 'hostile-db',
  roles: [{ name: 'ops', databases: [{ name: WEIRD_DB, roles: [HOSTILE_ROLE] }, { name: UNICODE_DB, roles: ['db_datareader'] }], serverRoles: ['##MS_ServerStateReader##'] }],
});
const targets = [
  doubleTarget(d),
  hostile,
  doubleTarget(d, { name: 'wrong-ca-db', options: { ca: { value: ensureTlsMaterial(otherCa, ['127.0.0.1']).ca } } }),
  doubleTarget(d, { name: 'trusting-db', options: { trustServerCertificate: true } }),
  doubleTarget(d, { name: 'strict-db', options: { encrypt: 'strict', ca: { value: d.ca } } }),
  doubleTarget(d, { name: 'badadmin-db', credentials: { admin: { user: d.adminUser, password: { value: 'not-it' } } } }),
];
const tg: TestGateway = await startTestGateway({ targets, policies: DEFAULT_POLICIES, listeners: ['mssql'] });
t.teardown(() => tg.close());
const { host, port } = tg.listener('mssql');

const secretFor = async (target: string, role: string, who = 'alice') => {
  const g = await tg.grant(who, target, role);
  return { grant: g, ...(await tg.secret(who, g.id)) };
};
const noLoginsLeft = () => waitFor(() => d.sessionLogins().length === 0, 15_000, 'session logins dropped on the double');
/** The admin statements from index `from` on, without tedious's own SET batch at connect. */
const adminSince = (from: number) => d.statements.slice(from).filter((s) => s.login === d.adminUser && s.kind === 'batch' && !s.text.startsWith('set ')).map((s) => s.text);

t.test('a hostile identity and hostile names: the exact statements to create and to drop the login', async (t) => {
  // An identity whose name is an injection attempt, with unicode.
  const sub = "o'brien]; DROP LOGIN sa; --ü";
  const now = tg.gw.clock.now();
  await tg.store.upsertIdentity({ sub, email: 'ob@test', name: sub, groups: ['engineers'], firstSeen: now, lastSeen: now });
  const token = (await tg.gw.tokens.create(sub, 'test', tg.gw.tokens.maxTtlMs, now)).token.reveal();
  const call = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(tg.url + path, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
    return { status: r.status, body: await r.json() as any };
  };
  const req = await call('POST', '/api/v1/requests', { target: 'hostile-db', role: 'ops', duration: '1h', reason: 'test' });
  t.equal(req.status, 201, JSON.stringify(req.body));
  let state = req.body;
  for (const approver of ['bob', 'dave']) {
    if (state.state !== 'pending') break;
    state = (await tg.api(approver, 'POST', `/api/v1/requests/${state.id}/approve`, { comment: 'ok' })).body;
  }
  const sec = await call('POST', `/api/v1/grants/${state.grantId}/secret`, {});
  t.equal(sec.status, 201);

  const from = d.statements.length;
  const c = await tediousConnect(host, port, 'hostile-db', sec.body.secret);
  const r = await tediousRun(c, 'exec', 'SELECT SUSER_SNAME() AS u, DB_NAME() AS d');
  const login = String(r.rows[0]!['u']);
  t.match(login, /^tg_obriendroplogins_[a-z0-9]{6}$/, 'only letters and digits of the identity reach the name');
  t.equal(r.rows[0]!['d'], WEIRD_DB, 'the session starts in the role\'s first database');
  const created = adminSince(from);
  const pw = /PASSWORD = N'([^']+)'/.exec(created[0]!)?.[1] ?? '';
  t.match(pw, /^Tg1-[A-Za-z0-9_-]{32}$/, 'a random password');
  t.same(created, [
    `CREATE LOGIN [${login}] WITH PASSWORD = N'${pw}', CHECK_POLICY = OFF, DEFAULT_DATABASE = [we]]ird; DROP DATABASE x; --]`,
    `ALTER SERVER ROLE [##MS_ServerStateReader##] ADD MEMBER [${login}]`,
    'USE [we]]ird; DROP DATABASE x; --]',
    `CREATE USER [${login}] FOR LOGIN [${login}]`,
    `ALTER ROLE [r'o]]le] ADD MEMBER [${login}]`,
    'USE [数据库]',
    `CREATE USER [${login}] FOR LOGIN [${login}]`,
    `ALTER ROLE [db_datareader] ADD MEMBER [${login}]`,
  ], 'creation, every name quoted with QUOTENAME rules');
  t.same([...d.users.get(WEIRD_DB)!.get(login)!.roles], [HOSTILE_ROLE], 'the double read the names back exactly');
  t.same([...d.logins.get(login)!.serverRoles], ['##MS_ServerStateReader##']);
  const leases = await tg.store.listLeases({ target: 'hostile-db' });
  t.same(leases.map((l) => [l.kind, l.state, l.data]), [['mssql-login', 'active', { login, databases: [WEIRD_DB, UNICODE_DB] }]], 'the lease holds what revocation needs, and no secret');
  t.notOk(JSON.stringify(leases).includes(pw));

  const before = d.statements.length;
  c.close();
  await tediousEnded(c);
  await noLoginsLeft();
  t.same(adminSince(before), [
    `ALTER LOGIN [${login}] DISABLE`,
    `SELECT session_id FROM sys.dm_exec_sessions WHERE login_name = N'${login.replace(/'/g, "''")}'`,
    'USE [we]]ird; DROP DATABASE x; --]',
    `DROP USER IF EXISTS [${login}]`,
    'USE [数据库]',
    `DROP USER IF EXISTS [${login}]`,
    'USE [master]',
    `DROP LOGIN [${login}]`,
  ], 'revocation: disable, find its sessions, drop the users, drop the login');
  t.equal(d.users.get(WEIRD_DB)!.size, 0);
  t.equal(d.users.get(UNICODE_DB)!.size, 0);
  const after = await tg.store.listLeases({ target: 'hostile-db' });
  t.equal(after[0]!.state, 'revoked');
});

t.test('the reaper drops a crashed session\'s login from the lease alone, killing its live sessions', async (t) => {
  const ctx = tg.gw.ctx('mssql');
  const target = tg.gw.config.targets.find((x) => x.name === 'sales-db')!;
  const login = sessionLoginName('crashed');
  const pw = randomPassword();
  await createSessionLogin(ctx, target, roleOf(target.roles[0]!), login, pw);
  // A connection of that login still open, as after a gateway crash.
  const orphan = await connectWith(tediousConfig(ctx, target, { user: login, password: pw }, 'sales'));
  t.equal(d.liveSessionsOf(login), 1);
  const spid = d.connections.filter((c) => c.login === login).at(-1)!.spid;
  const g = await tg.grant('alice', 'sales-db', 'read');
  const lease: LeaseRecord = { id: randomUUID(), sessionId: null, grantId: g.id, target: 'sales-db', kind: 'mssql-login', state: 'active', data: { login, databases: ['sales'] }, createdAt: Date.now(), activatedAt: Date.now(), revokedAt: null, error: null, attempts: 0, retryAt: null };
  await tg.store.insertLease(lease);
  const from = d.statements.length;
  const reaped = await tg.gw.sessions.reap();
  t.equal(reaped.leases, 1);
  t.same(adminSince(from), [
    `ALTER LOGIN [${login}] DISABLE`,
    `SELECT session_id FROM sys.dm_exec_sessions WHERE login_name = N'${login}'`,
    `KILL ${spid}`,
    'USE [sales]',
    `DROP USER IF EXISTS [${login}]`,
    'USE [master]',
    `DROP LOGIN [${login}]`,
  ], 'the orphan\'s session killed before the login is dropped');
  t.equal(d.liveSessionsOf(login), 0);
  t.notOk(d.logins.has(login));
  t.equal((await tg.store.listLeases({ target: 'sales-db' })).find((l) => l.id === lease.id)!.state, 'revoked');
  orphan.close();
  // Idempotent: revoking again finds nothing and succeeds.
  await mssqlModule.leaseKinds['mssql-login']!.revoke(ctx, target, lease);
  t.pass('a second revocation of the same lease is harmless');
  await t.rejects(mssqlModule.leaseKinds['mssql-login']!.revoke(ctx, target, { ...lease, data: { login: 'sa', databases: [] } }), /not a session login name/, 'revocation never touches a login it did not make');
});

t.test('a mint that fails half-way, or a session killed while minting, leaves no login behind', async (t) => {
  d.failOn = { pattern: /^ALTER ROLE/, number: 15151, message: 'Cannot add the principal, because it does not exist or you do not have permission.' };
  const s = await secretFor('sales-db', 'read');
  await t.rejects(tediousConnect(host, port, 'sales-db', s.secret), { message: /could not create a login on sales-db for this session/ });
  d.failOn = null;
  await noLoginsLeft();
  const leases = await tg.store.listLeases({ grantId: s.grant.id });
  t.equal(leases[0]!.state, 'revoked', 'the half-made login was revoked through its lease');

  // The session is killed while CREATE USER is on its way.
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  d.onStatement = async (st) => { if (st.text.startsWith('CREATE USER')) await gate; };
  const s2 = await secretFor('sales-db', 'read');
  const attempt = tediousConnect(host, port, 'sales-db', s2.secret);
  attempt.catch(() => {});
  const live = await waitFor(async () => (await tg.api('carol', 'GET', '/api/v1/sessions?state=active&target=sales-db')).body[0] as { id: string } | undefined, 10_000, 'a live session');
  // The kill answers once the session has ended, and so once the mint in flight finished and was revoked.
  const killed = tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'stop' });
  await waitFor(async () => (await tg.store.listAudit({ action: 'session.kill', subject: live.id })).length > 0, 10_000, 'the kill to land');
  release();
  d.onStatement = null;
  t.equal((await killed).status, 200);
  t.same((await tg.store.listLeases({ grantId: s2.grant.id })).map((l) => l.state), ['revoked'], 'by the kill\'s answer the login made meanwhile is revoked');
  await t.rejects(attempt, { message: /terminated by carol: stop/ }, 'the client hears why');
  await noLoginsLeft();
  t.pass('the login made after the kill was dropped too');
});

t.test('upstream TLS: a wrong CA is refused, a trusted certificate and TDS 8.0 strict work; a server without TLS is refused', async (t) => {
  const wrong = await secretFor('wrong-ca-db', 'read');
  await t.rejects(tediousConnect(host, port, 'wrong-ca-db', wrong.secret), { message: /could not create a login on wrong-ca-db/ });
  const trusting = await secretFor('trusting-db', 'read');
  let c = await tediousConnect(host, port, 'trusting-db', trusting.secret);
  t.match(String((await tediousRun(c, 'exec', 'SELECT SUSER_SNAME() AS u')).rows[0]!['u']), /^tg_alice_/);
  c.close();
  const strict = await secretFor('strict-db', 'read');
  c = await tediousConnect(host, port, 'strict-db', strict.secret);
  const u = String((await tediousRun(c, 'exec', 'SELECT SUSER_SNAME() AS u')).rows[0]!['u']);
  t.ok(d.connections.some((x) => x.login === u && x.strict), 'the session login reached the server over TDS 8.0 strict TLS');
  c.close();
  await noLoginsLeft();

  d.noEncryption = true;
  try {
    await t.rejects(loginUpstream({
      host: d.host, port: d.port, clock: new SystemClock(), timeoutMs: 5000, tls: { strict: false, rejectUnauthorized: true, ca: d.ca },
      login: { tdsVersion: TDS.V7_4, packetSize: 4096, userName: d.adminUser, password: d.adminPassword },
    }), { message: /does not support encryption; Tollgate connects to SQL Server over TLS only/ });
  } finally {
    d.noEncryption = false;
  }
  await t.rejects(loginUpstream({
    host: d.host, port: d.port, clock: new SystemClock(), timeoutMs: 5000, tls: { strict: false, rejectUnauthorized: true },
    login: { tdsVersion: TDS.V7_4, packetSize: 4096, userName: d.adminUser, password: d.adminPassword },
  }), { message: /TLS to the server failed: self-signed certificate in certificate chain/ }, 'the gateway\'s own upstream login verifies the certificate');
});

t.test('checkTarget dials with the admin login', async (t) => {
  const ctx = tg.gw.ctx('mssql');
  const ok = await mssqlModule.checkTarget!(ctx, tg.gw.config.targets.find((x) => x.name === 'sales-db')!);
  t.same(ok, { ok: true, detail: 'reachable, credentials work (Microsoft SQL Server 2022 (TDS test double), as tollgate_admin)' });
  const bad = await mssqlModule.checkTarget!(ctx, tg.gw.config.targets.find((x) => x.name === 'badadmin-db')!);
  t.equal(bad.ok, false);
  t.match(bad.detail, /cannot log in with the admin credential: .*Login failed for user 'tollgate_admin'/);
});
