/**
 * The per-session database user: CREATE USER with a random password, GRANT what the role maps to,
 * and at the end lock it, KILL its connections and DROP USER. Runs as the target's admin through
 * mysql2. Names and literals are quoted here; grants come from validated configuration.
 */
import { adminConnections } from '../bounded.js';
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import type { ProtocolContext, TargetConfig, RoleConfig, LiveSession } from '../types.js';
import type { Secret } from '../../auth/secret.js';
import { connect as netConnect } from 'node:net';
import { DEFAULT_PORT, upstreamTls, verifiesServer } from './upstream.js';
import { parseAddress } from '../net.js';
import { reduceGrant, withheldPrivileges } from './privileges.js';
import { noteIssued } from '../../auth/secret.js';

export const LEASE_KIND = 'mysql-user';

/** MySQL limits user names to 32 characters (MariaDB allows more; we stay within both). */
export const MAX_USER_LEN = 32;

const IDENT = '(`(?:[^`]|``)+`|[A-Za-z0-9_$]+|\\*)';
const OBJECT = new RegExp(`^((TABLE|FUNCTION|PROCEDURE)\\s+)?${IDENT}(\\.${IDENT})?$`, 'i');
const ROLE_NAME = /^[^\0]{1,64}$/; // any name: quoted with quoteId
export const SESSION_USER = /^tg_[a-z0-9]{1,16}_[a-z0-9]{6}$/;
const HOST = /^[A-Za-z0-9_.%:-]{1,60}$/;

export interface AdminCredential { user: string; password: Secret }

/** A grant like "SELECT, INSERT ON shop.*" split into privileges and object; null when it is not one. Linear in the input. */
export function parseGrant(g: string): { privs: string; object: string } | null {
  const s = g.trim();
  // Privileges before the first " ON ", the object after it.
  const on = /\sON\s/i.exec(s);
  if (!on) return null;
  const privs = s.slice(0, on.index).trim();
  const object = s.slice(on.index + on[0].length).trim();
  if (LINE_BREAK.test(privs) || LINE_BREAK.test(object)) return null;
  if (!privileges(privs) || !OBJECT.test(object)) return null;
  if (/\bGRANT\s+OPTION\b|\bWITH\b/i.test(privs)) return null;
  return { privs, object };
}

const LINE_BREAK = /[\n\r\u2028\u2029]/;
const isLetter = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
const isBlank = (c: number) => /\s/.test(String.fromCharCode(c));

/**
 * A privilege list: `NAME [(columns)]` separated by commas, where NAME is a letter then letters,
 * spaces and underscores, and columns are letters, digits, _ , space and backquotes. One pass.
 */
function privileges(p: string): boolean {
  const n = p.length;
  let i = 0;
  for (;;) {
    if (i >= n || !isLetter(p.charCodeAt(i))) return false;
    i++;
    while (i < n) {
      const c = p.charCodeAt(i);
      if (!(isLetter(c) || c === 0x20 || c === 0x5f)) break;
      i++;
    }
    if (p.charCodeAt(i) === 0x28) { // (
      i++;
      while (i < n) {
        const c = p.charCodeAt(i);
        if (!(isLetter(c) || isDigit(c) || c === 0x5f || c === 0x2c || c === 0x20 || c === 0x60)) break;
        i++;
      }
      if (p.charCodeAt(i) !== 0x29) return false; // )
      i++;
    }
    if (i === n) return true;
    while (i < n && isBlank(p.charCodeAt(i))) i++;
    if (p.charCodeAt(i) !== 0x2c) return false; // ,
    i++;
    while (i < n && isBlank(p.charCodeAt(i))) i++;
  }
}

export function roleGrants(role: RoleConfig): string[] {
  return Array.isArray(role['grants']) ? (role['grants'] as unknown[]).map(String) : [];
}

export function roleRoles(role: RoleConfig): string[] {
  return Array.isArray(role['roles']) ? (role['roles'] as unknown[]).map(String) : [];
}

/** Quote an identifier with backticks (doubling embedded backticks). */
export function quoteId(name: string): string {
  if (name.includes('\0')) throw new Error('identifier contains NUL');
  return '`' + name.replace(/`/g, '``') + '`';
}

/** Quote a string literal that is safe under any sql_mode (NO_BACKSLASH_ESCAPES or not). */
export function quoteLiteral(s: string): string {
  if (/[\\\0\n\r\x1a]/.test(s)) throw new Error('literal contains characters the gateway does not quote');
  return "'" + s.replace(/'/g, "''") + "'";
}

export function account(user: string, host: string): string {
  return `${quoteLiteral(user)}@${quoteLiteral(host)}`;
}

/** tg_<who>_<random>: lowercase letters and digits of the identity, at most 32 characters. */
export function sessionUserName(identity: string): string {
  const who = identity.toLowerCase().replace(/@.*$/, '').replace(/[^a-z0-9]/g, '').slice(0, 16) || 'user';
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const r = randomBytes(6);
  let suffix = '';
  for (const b of r) suffix += alphabet[b % alphabet.length];
  return `tg_${who}_${suffix}`;
}

export function randomPassword(): string {
  return noteIssued('mysql_password', randomBytes(24).toString('base64url'));
}

/** The admin user and password: from the config, or the vault's current one for {vault: true}. */
export async function adminCredential(ctx: ProtocolContext, target: TargetConfig): Promise<AdminCredential> {
  const admin = target.credentials['admin'] as { user?: unknown; password?: unknown } | undefined;
  if (!admin || typeof admin.user !== 'string') throw new Error(`target ${target.name}: credentials.admin.user is missing`);
  return { user: admin.user, password: await ctx.config.credential(target, 'admin.password') };
}

export function userHost(target: TargetConfig): string {
  const h = target.credentials['userHost'];
  return typeof h === 'string' ? h : '%';
}

/**
 * The admin connection, over TLS whenever the target has options.tls (the same settings as the
 * session login), so CREATE USER … IDENTIFIED BY never crosses the network in clear there.
 */
export async function adminConnect(ctx: ProtocolContext, target: TargetConfig, password?: Secret): Promise<mysql.Connection> {
  const cred = password ? { user: String((target.credentials['admin'] as { user?: unknown }).user), password } : await adminCredential(ctx, target);
  const addr = parseAddress(target.address, DEFAULT_PORT);
  const tls = upstreamTls(target);
  const verify = !!tls && verifiesServer(tls);
  // mysql2 checks the name it dials: to check options.tls.servername, dial the address under that name.
  const named = tls?.servername && tls.servername !== addr.host ? tls.servername : null;
  return mysql.createConnection({
    host: named ?? addr.host,
    port: addr.port,
    ...(named ? { stream: () => netConnect({ host: addr.host, port: addr.port }) } : {}),
    user: cred.user,
    password: cred.password.reveal(),
    connectTimeout: 10_000,
    multipleStatements: false,
    ...(tls ? { ssl: { ca: tls.ca, rejectUnauthorized: verify, verifyIdentity: verify } } : {}),
  });
}

async function withAdmin<T>(ctx: ProtocolContext, target: TargetConfig, fn: (c: mysql.Connection) => Promise<T>, open?: mysql.Connection): Promise<T> {
  if (open) return fn(open);
  const c = await adminConnect(ctx, target);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => c.destroy());
  }
}

/**
 * mysql2 errors carry the statement (err.sql), which for CREATE USER holds the password: rethrow
 * a plain error with the server's code and message only, the password masked just in case.
 */
function cleanError(e: unknown, password: string): Error {
  const err = e as { errno?: number; sqlState?: string; message?: string };
  const text = String(err.message ?? e);
  const msg = password ? text.split(password).join('<secret>') : text;
  return new Error(err.errno ? `${err.errno} (${err.sqlState ?? 'HY000'}): ${msg}` : msg);
}

/** What the session user did not get because the rules deny the statements that need it. */
export interface Withheld { privileges: string[]; grants: { grant: string; withheld: string[] }[]; notReduced: string[] }

/**
 * Create the session user and grant the role (on `admin` when given), without the privileges in
 * `withhold` (see ./privileges.ts); on failure the caller's lease revocation drops it.
 */
export async function createSessionUser(ctx: ProtocolContext, target: TargetConfig, role: RoleConfig, user: string, host: string, password: string, admin?: mysql.Connection, withhold: string[] = []): Promise<{ server: string; withheld: Withheld }> {
  try {
    return await createSessionUserRaw(ctx, target, role, user, host, password, admin, withhold);
  } catch (e) {
    throw cleanError(e, password);
  }
}

/**
 * Mint the session's user under a lease. The admin connection (TLS and the server's certificate
 * checked when options.tls says so) is open before the lease is stored: a server that is not who
 * it should be leaves no lease behind, only the refusal.
 */
export async function mintSessionUser(ctx: ProtocolContext, session: LiveSession, target: TargetConfig, role: RoleConfig, user: string, host: string): Promise<string> {
  const admin = await adminConnect(ctx, target).catch((e: unknown) => { throw cleanError(e, ''); });
  const withhold = withheldPrivileges(session.commandRules);
  try {
    return await session.lease<string>(LEASE_KIND, { user, host }, async () => {
      const pw = randomPassword();
      const { server, withheld } = await createSessionUser(ctx, target, role, user, host, pw, admin, withhold);
      if (withhold.length) session.audit('mysql.privileges', { ...withheld });
      return { credential: pw, data: { server } };
    });
  } finally {
    await admin.end().catch(() => admin.destroy());
  }
}

async function createSessionUserRaw(ctx: ProtocolContext, target: TargetConfig, role: RoleConfig, user: string, host: string, password: string, admin: mysql.Connection | undefined, withhold: string[]): Promise<{ server: string; withheld: Withheld }> {
  return withAdmin(ctx, target, async (c) => {
    const [rows] = await c.query('SELECT VERSION() AS v');
    const version = String((rows as { v: string }[])[0]?.v ?? '');
    const mariadb = /mariadb/i.test(version);
    const acct = account(user, host);
    // MySQL 8 defaults to caching_sha2_password; both are handled by our upstream login.
    await c.query(`CREATE USER ${acct} IDENTIFIED BY ${quoteLiteral(password)}`);
    const withheld: Withheld = { privileges: withhold, grants: [], notReduced: [] };
    for (const g of roleGrants(role)) {
      const parsed = parseGrant(g);
      if (!parsed) throw new Error(`role ${role.name}: not a grant: ${g}`);
      // Privileges the rules deny are never granted (ALL: revoked on the same object right after).
      const r = reduceGrant(parsed.privs, parsed.object, withhold);
      if (r.privs) await c.query(`GRANT ${r.privs} ON ${parsed.object} TO ${acct}`);
      for (const p of r.revoke) await c.query(`REVOKE ${p} ON ${parsed.object} FROM ${acct}`);
      if (r.withheld.length) withheld.grants.push({ grant: g, withheld: r.withheld });
    }
    const roles = roleRoles(role);
    if (withhold.length) withheld.notReduced = roles;
    for (const r of roles) await c.query(`GRANT ${quoteId(r)} TO ${acct}`);
    if (roles.length) {
      if (mariadb) await c.query(`SET DEFAULT ROLE ${quoteId(roles[0]!)} FOR ${acct}`);
      else await c.query(`SET DEFAULT ROLE ALL TO ${acct}`);
    }
    return { server: version, withheld };
  }, admin);
}

/** Lock the user, kill its connections, drop it. Idempotent: a user that is gone is fine. */
export async function dropSessionUser(ctx: ProtocolContext, target: TargetConfig, user: string, host: string): Promise<{ killed: number }> {
  if (!SESSION_USER.test(user)) throw new Error(`refusing to drop ${JSON.stringify(user.slice(0, 40))}: not a session user name`);
  if (!HOST.test(host)) throw new Error('refusing to drop a user with an unexpected host part');
  // At most ADMIN_CONNECTIONS_PER_TARGET drops at once per target: a burst of ended sessions stays under max_connections.
  return adminConnections.run(target.name, () => withAdmin(ctx, target, async (c) => {
    const acct = account(user, host);
    try {
      await c.query(`ALTER USER ${acct} ACCOUNT LOCK`);
    } catch (e) {
      const code = (e as { errno?: number }).errno;
      if (code !== 1396 && code !== 1064) throw e; // 1396: no such user; 1064: server without ACCOUNT LOCK
    }
    const [rows] = await c.query('SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = ?', [user]);
    let killed = 0;
    for (const r of rows as { id: number }[]) {
      try {
        await c.query(`KILL CONNECTION ${Number(r.id)}`);
        killed++;
      } catch (e) {
        if ((e as { errno?: number }).errno !== 1094) throw e; // 1094: unknown thread (already gone)
      }
    }
    await c.query(`DROP USER IF EXISTS ${acct}`);
    return { killed };
  }));
}

/** KILL [QUERY] a thread on the target as the admin (a session user may not touch another's threads). */
export async function killThread(ctx: ProtocolContext, target: TargetConfig, threadId: number, queryOnly: boolean): Promise<void> {
  if (!Number.isSafeInteger(threadId) || threadId < 0) throw new Error('bad thread id');
  await withAdmin(ctx, target, async (c) => {
    await c.query(`KILL ${queryOnly ? 'QUERY' : 'CONNECTION'} ${threadId}`);
  });
}

export async function userExists(ctx: ProtocolContext, target: TargetConfig, user: string): Promise<boolean> {
  return withAdmin(ctx, target, async (c) => {
    const [rows] = await c.query('SELECT COUNT(*) AS n FROM mysql.user WHERE User = ?', [user]);
    return Number((rows as { n: number }[])[0]?.n ?? 0) > 0;
  });
}

export function validateMysqlTarget(target: TargetConfig): { path: string; expected: string } | null {
  try {
    parseAddress(target.address, DEFAULT_PORT);
  } catch {
    return { path: 'address', expected: 'host:port of the MySQL/MariaDB server' };
  }
  const admin = target.credentials['admin'] as Record<string, unknown> | undefined;
  if (!admin || typeof admin !== 'object') return { path: 'credentials.admin', expected: '{ user, password } of an admin that may create users and grant' };
  if (typeof admin['user'] !== 'string' || !admin['user']) return { path: 'credentials.admin.user', expected: 'a user name' };
  if (!admin['password'] || typeof admin['password'] !== 'object') return { path: 'credentials.admin.password', expected: 'a secret reference' };
  const host = target.credentials['userHost'];
  if (host !== undefined && (typeof host !== 'string' || !HOST.test(host))) return { path: 'credentials.userHost', expected: "a host pattern such as '%' or '10.0.0.%'" };
  const auth = target.options['clientAuth'];
  if (auth !== undefined && !['mysql_native_password', 'caching_sha2_password', 'mysql_clear_password'].includes(String(auth))) {
    return { path: 'options.clientAuth', expected: 'mysql_native_password, caching_sha2_password or mysql_clear_password' };
  }
  const plain = target.options['allowPlain'];
  if (plain !== undefined && typeof plain !== 'boolean') return { path: 'options.allowPlain', expected: 'true or false (accept clients without TLS)' };
  const tls = target.options['tls'];
  if (tls !== undefined && typeof tls !== 'boolean') {
    const o = tls as Record<string, unknown>;
    if (!o || typeof o !== 'object' || Object.entries(o).some(([k, v]) => !(
      (k === 'ca' && typeof v === 'string') || (k === 'servername' && typeof v === 'string') || (k === 'rejectUnauthorized' && typeof v === 'boolean')))) {
      return { path: 'options.tls', expected: 'true, or { ca: PEM, servername?: string, rejectUnauthorized?: boolean }' };
    }
  }
  for (const [i, role] of target.roles.entries()) {
    const g = role['grants'];
    if (g !== undefined && !(Array.isArray(g) && g.every((x) => typeof x === 'string'))) return { path: `roles[${i}].grants`, expected: 'a list of grants like "SELECT ON shop.*"' };
    for (const [j, s] of roleGrants(role).entries()) {
      if (!parseGrant(s)) return { path: `roles[${i}].grants[${j}]`, expected: 'a grant like "SELECT, INSERT ON shop.*" (privileges ON db.table)' };
    }
    const r = role['roles'];
    if (r !== undefined && !(Array.isArray(r) && r.every((x) => typeof x === 'string' && ROLE_NAME.test(x)))) return { path: `roles[${i}].roles`, expected: 'a list of database role names' };
    if (!roleGrants(role).length && !roleRoles(role).length) return { path: `roles[${i}].grants`, expected: 'at least one grant or database role' };
    const l = role['allowLoadDataLocal'];
    if (l !== undefined && typeof l !== 'boolean') return { path: `roles[${i}].allowLoadDataLocal`, expected: 'true or false' };
    const d = role['database'];
    if (d !== undefined && typeof d !== 'string') return { path: `roles[${i}].database`, expected: 'a database name' };
  }
  return null;
}
