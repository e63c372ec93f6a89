/**
 * One store outage under live sessions through real targets (an ssh session through a real sshd and,
 * when `pg` is given, a psql session to a real PostgreSQL), the way every store fault must go:
 * a new connection is refused with a clear message before anything is minted, the live sessions are
 * ended fail-closed (`store_unavailable`) and their account and role removed from the targets
 * anyway, audit events are held meanwhile; once the store takes writes again the held events, the
 * sessions' final records and the recovery are written, new sessions open again and the audit chain
 * verifies. `fail` breaks the store (a full disk, a read-only server), `restore` mends it.
 *
 * The phases are exported for an outage the gateway cannot ride out live (a file system the kernel
 * turned read-only is mended by unmounting it: the gateway is restarted): liveSessions, then
 * failClosed after the fault, then opensAgain on whichever gateway serves afterwards.
 */
import type tap from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAIL_CLOSED } from '../../proxy/gateway.js';
import type { TestGateway } from './gateway.js';
import { runClient as runPg } from './pg.js';
import { runClient, Terminal, until, userExists } from './sshd.js';

type Checks = Pick<typeof tap, 'equal' | 'ok' | 'match' | 'same' | 'not' | 'notOk' | 'notMatch' | 'teardown'>;

export interface OutageTargets {
  /** The ssh target (ephemeral accounts), role 'user'. */
  target: string;
  /** A PostgreSQL target (role 'read', database app) and how to list its session roles. */
  pg?: { target: string; roles(): Promise<string[]> };
}

type Secret = { secret: string; username: string };

/** psql through the gateway with one statement (a new session). */
function psqlOnce(tg: TestGateway, caFile: string, s: Secret) {
  const { host, port } = tg.listener('postgres');
  return runPg('psql', ['-X', '-A', '-t', `host=${host} port=${port} user=${s.username} dbname=app password=${s.secret} sslmode=verify-full sslrootcert=${caFile}`, '-c', "select 'opened-' || 'ok'"], { timeoutMs: 20_000 });
}

/** An interactive psql through the gateway (statements on stdin, as typed). */
class LivePsql {
  out = '';
  code: number | null | undefined = undefined;
  readonly closed: Promise<number | null>;
  private readonly proc;
  constructor(tg: TestGateway, caFile: string, s: Secret) {
    const { host, port } = tg.listener('postgres');
    this.proc = spawn('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=0', `host=${host} port=${port} user=${s.username} dbname=app password=${s.secret} sslmode=verify-full sslrootcert=${caFile}`], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdout.on('data', (d: Buffer) => { this.out += d.toString(); });
    this.proc.stdin.on('error', () => undefined); // psql ended by the gateway before reading what was typed
    this.proc.stderr.on('data', (d: Buffer) => { this.out += d.toString(); });
    this.closed = new Promise((r) => this.proc.on('close', (c) => { this.code = c; r(c); }));
  }
  type(sql: string): void { if (this.code === undefined) this.proc.stdin.write(`${sql}\n`); }
  waitFor(re: RegExp, ms = 20_000): Promise<true> { return until(() => re.test(this.out) || (this.code !== undefined && re.test(this.out)), ms, `psql to print ${re} (it printed: ${this.out.slice(-300)})`); }
  kill(): void { if (this.code === undefined) this.proc.kill('SIGKILL'); }
}

export interface Live {
  term: Terminal;
  account: string;
  sshSession: string;
  psql?: LivePsql;
  role?: string;
  pgSession?: string;
  caFile: string;
  /** Unused secrets: [0] for the refused attempt, [1] for the attempt after recovery. */
  sshSecrets: Secret[];
  pgSecrets: Secret[];
  /** Audit events in the store before the fault. */
  auditBefore: number;
}

/** Open the live sessions (and mint the secrets the later phases use). */
export async function liveSessions(t: Checks, tg: TestGateway, o: OutageTargets): Promise<Live> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-outage-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, tg.gw.tls.ca);
  const { port } = tg.listener('ssh');
  const grant = await tg.grant('alice', o.target, 'user');
  const sshSecrets = [await tg.secret('alice', grant.id), await tg.secret('alice', grant.id), await tg.secret('alice', grant.id)];
  const term = new Terminal(sshSecrets[0]!.secret, ['-p', String(port), `${sshSecrets[0]!.username}@127.0.0.1`]);
  t.teardown(() => term.kill());
  term.type('echo hello-$((6*7))\n');
  await term.waitFor(/hello-42/);
  const [lease] = await tg.store.listLeases({ target: o.target, state: ['active'] });
  const account = lease!.data['account'] as string;
  t.ok(userExists(account), 'the live ssh session has its account');
  const live: Live = { term, account, sshSession: lease!.sessionId!, caFile, sshSecrets: sshSecrets.slice(1), pgSecrets: [], auditBefore: 0 };
  if (o.pg) {
    const g = await tg.grant('alice', o.pg.target, 'read');
    const secrets = [await tg.secret('alice', g.id), await tg.secret('alice', g.id), await tg.secret('alice', g.id)];
    const psql = new LivePsql(tg, caFile, secrets[0]!);
    t.teardown(() => psql.kill());
    psql.type("select 'hello-' || 6*7;");
    await psql.waitFor(/hello-42/);
    const [pl] = await tg.store.listLeases({ target: o.pg.target, state: ['active'] });
    const roles = await o.pg.roles();
    t.equal(roles.length, 1, 'the live psql session has its role');
    Object.assign(live, { psql, role: roles[0], pgSession: pl!.sessionId!, pgSecrets: secrets.slice(1) });
  }
  live.auditBefore = (await tg.store.listAudit({})).length;
  return live;
}

/** After the fault: new sessions refused clearly, live ones ended with the reason, their account and role removed, audit held. */
export async function failClosed(t: Checks, tg: TestGateway, live: Live, o: OutageTargets & { code: RegExp | string }): Promise<void> {
  const { port } = tg.listener('ssh');
  const clear = FAIL_CLOSED.replace(/^Tollgate: /, '');
  const s = live.sshSecrets[0]!;
  const refused = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'echo opened-ok'], { timeoutMs: 20_000 });
  t.not(refused.code, 0, 'a new ssh session is refused');
  t.notMatch(refused.stdout, /opened-ok/);
  t.ok(refused.stderr.includes(clear), `with a clear message: ${refused.stderr.trim().slice(0, 300)}`);
  t.match(tg.gw.storeGuard.state, { ok: false, code: o.code }, `the store guard is failing (${JSON.stringify(tg.gw.storeGuard.state)})`);
  if (o.pg) {
    const r = await psqlOnce(tg, live.caFile, live.pgSecrets[0]!);
    t.not(r.code, 0, 'a new psql session is refused');
    t.notMatch(r.stdout, /opened-ok/);
    t.ok(r.stderr.includes(clear), `psql shows the clear message: ${r.stderr.trim().slice(0, 300)}`);
  }

  const code = await live.term.exited(30_000);
  t.not(code, 0, 'the live ssh session is ended');
  t.match(live.term.out, /cannot write its audit store/, 'the ssh client is told why');
  if (live.psql) {
    // psql learns of the FATAL when it next talks to the server.
    live.psql.type("select 'still-' || 'here';");
    await live.psql.waitFor(/cannot write its audit store/, 30_000);
    t.match(live.psql.out, /FATAL: +Tollgate: the gateway cannot write its audit store \([A-Z0-9_]+\); the session was ended \(fail-closed\)/, 'the psql client is told why (FATAL)');
    t.notMatch(live.psql.out, /still-here/, 'and runs nothing more');
    live.psql.type('\\q');
    await live.psql.closed;
  }
  // Generous: userdel on a loaded machine; the bound here is "removed at all while the store fails".
  await until(() => !userExists(live.account), 30_000, 'the account to be removed');
  t.notOk(userExists(live.account), 'its account is removed from the target although the store cannot record it');
  if (o.pg) {
    await until(async () => (await o.pg!.roles()).length === 0, 30_000, 'the session role to be dropped');
    t.same(await o.pg.roles(), [], 'its PostgreSQL role is dropped too');
  }
  // The revoke and the session's end are audited after the account is gone: wait (bounded) for them.
  await until(() => tg.gw.audit.held > 0, 15_000, 'audit events to be held').catch(() => undefined);
  t.ok(tg.gw.audit.held > 0, `audit events are held meanwhile (${tg.gw.audit.held})`);
  const dash = await tg.api('carol', 'GET', '/api/v1/portal/dashboard');
  t.equal(dash.status, 200, 'the dashboard is served from a store that cannot be written');
  t.match(dash.body?.failsafe?.store, { ok: false }, 'and shows the store failing');
}

/** The store is back (on tg): new ssh (and psql) sessions open, no live lease is left, the audit chain verifies. */
export async function opensAgain(t: Checks, tg: TestGateway, live: Live, o: OutageTargets): Promise<void> {
  writeFileSync(live.caFile, tg.gw.tls.ca);
  const { port } = tg.listener('ssh');
  const s = live.sshSecrets[1]!;
  const ok = await until(async () => {
    const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'echo opened-ok'], { timeoutMs: 20_000 });
    return r.code === 0 ? r : null;
  }, 30_000, 'an ssh session to open again');
  t.match(ok.stdout, /opened-ok/, 'the store is back: new ssh sessions open');
  if (o.pg) {
    const r = await psqlOnce(tg, live.caFile, live.pgSecrets[1]!);
    t.equal(r.code, 0, `and psql sessions (${r.stderr.trim().slice(0, 200)})`);
    t.match(r.stdout, /opened-ok/);
    await until(async () => (await o.pg!.roles()).length === 0, 30_000, 'the new session role to be dropped');
  }
  await until(async () => (await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] })).length === 0, 10_000, 'no live lease');
  t.same(await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] }), [], 'no live lease left in the store');
  t.match((await tg.api('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true }, 'the audit chain verifies');
}

export async function storeOutage(t: Checks, tg: TestGateway, o: OutageTargets & { fail(): Promise<void> | void; restore(): Promise<void> | void; code: RegExp | string }): Promise<void> {
  const live = await liveSessions(t, tg, o);
  await o.fail();
  await failClosed(t, tg, live, o);
  await o.restore();
  await opensAgain(t, tg, live, o);
  t.equal(tg.gw.audit.held, 0, 'the held audit events are written');
  for (const [id, what] of [[live.sshSession, 'ssh'], ...(live.pgSession ? [[live.pgSession, 'psql']] : [])] as [string, string][]) {
    const s = await tg.store.getSession(id);
    t.match(s, { state: 'ended', endReason: /^store_unavailable: / }, `the ended ${what} session's final record is written with its reason`);
    const ended = await tg.store.listAudit({ action: 'session.ended', subject: id });
    t.same(ended.map((e) => e.data['reason']), ['store_unavailable'], `its end is audited (held, then written)`);
  }
  t.equal((await tg.store.listAudit({ action: 'store.failing' })).length, 1, 'the failure is audited');
  t.equal((await tg.store.listAudit({ action: 'store.recovered' })).length, 1, 'the recovery is audited');
}
