/**
 * The per-session SQL Server login, made and removed with the target's admin login through
 * tedious: CREATE LOGIN with a random password (CHECK_POLICY = OFF), CREATE USER ... FOR LOGIN in
 * each of the role's databases with its database roles, ALTER SERVER ROLE for its server roles;
 * at the end ALTER LOGIN ... DISABLE, KILL every session of the login, DROP USER in each
 * database, DROP LOGIN. Names are quoted with QUOTENAME rules and literals as N'' with ' doubled.
 * Revocation works from the lease data alone ({login, databases}) and is idempotent.
 */
import { randomBytes } from 'node:crypto';
import tedious from 'tedious';
import type { ProtocolContext, TargetConfig } from '../types.js';
import { adminOf, optionsOf, parseAddress, type MssqlRole } from './config.js';
import { quoteLiteral, quoteName } from './tsql.js';
import { noteIssued } from '../../auth/secret.js';

export const LEASE_KIND = 'mssql-login';
/** tg_<who>_<6 random>: what revocation accepts as a session login. */
export const SESSION_LOGIN = /^tg_[\p{Ll}\p{Lo}\p{N}]{1,16}_[a-z0-9]{6}$/u;

/** tg_<letters and digits of the identity, lower-cased, at most 16>_<6 random>. Quotes, brackets and the like never reach a name. */
export function sessionLoginName(identity: string): string {
  const who = [...identity.normalize('NFC').toLowerCase().replace(/@.*$/, '').replace(/[^\p{Ll}\p{Lo}\p{N}]/gu, '')].slice(0, 16).join('') || 'user';
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let suffix = '';
  for (const b of randomBytes(6)) suffix += alphabet[b % alphabet.length];
  return `tg_${who}_${suffix}`;
}

export function randomPassword(): string {
  return noteIssued('mssql_password', `Tg1-${randomBytes(24).toString('base64url')}`);
}

/** The statements that create a session login for a role, in order. */
export function createStatements(login: string, password: string, role: MssqlRole): string[] {
  const l = quoteName(login);
  const db = role.defaultDatabase ?? role.databases[0]?.name;
  const out = [`CREATE LOGIN ${l} WITH PASSWORD = ${quoteLiteral(password)}, CHECK_POLICY = OFF${db ? `, DEFAULT_DATABASE = ${quoteName(db)}` : ''}`];
  for (const r of role.serverRoles) out.push(`ALTER SERVER ROLE ${quoteName(r)} ADD MEMBER ${l}`);
  for (const d of role.databases) {
    out.push(`USE ${quoteName(d.name)}`, `CREATE USER ${l} FOR LOGIN ${l}`);
    for (const r of d.roles) out.push(`ALTER ROLE ${quoteName(r)} ADD MEMBER ${l}`);
  }
  return out;
}

export interface AdminConnection {
  /** Run one batch; resolves with its rows (arrays of column values). Rejects with the server's error number and message. */
  run(sql: string): Promise<unknown[][]>;
  close(): void;
}

export class SqlError extends Error {
  constructor(readonly number: number, message: string) {
    super(message);
    this.name = 'SqlError';
  }
}

/** tedious connection options towards the target (TLS as its options say). */
export function tediousConfig(ctx: ProtocolContext, target: TargetConfig, login: { user: string; password: string }, database = 'master'): tedious.ConnectionConfiguration {
  const { host, port } = parseAddress(target.address);
  const o = optionsOf(target);
  const ca = o.ca !== undefined ? ctx.config.resolveSecret(o.ca, `targets.${target.name}.options.ca`).reveal() : undefined;
  return {
    server: host,
    authentication: { type: 'default', options: { userName: login.user, password: login.password } },
    options: {
      port,
      database,
      encrypt: o.encrypt === 'strict' ? 'strict' : true,
      trustServerCertificate: o.trustServerCertificate,
      ...(o.serverName ? { serverName: o.serverName } : {}),
      ...(ca ? { cryptoCredentialsDetails: { ca } } : {}),
      connectTimeout: o.connectTimeout * 1000,
      requestTimeout: 30_000,
      appName: 'Tollgate',
    },
  };
}

export function connectAdmin(ctx: ProtocolContext, target: TargetConfig): Promise<AdminConnection> {
  return connectWith(tediousConfig(ctx, target, adminOf(ctx, target)));
}

export function connectWith(config: tedious.ConnectionConfiguration): Promise<AdminConnection> {
  return new Promise((resolve, reject) => {
    const c = new tedious.Connection(config);
    let connected = false;
    c.on('error', () => { /* a lost connection fails the request in flight */ });
    c.connect((err) => {
      if (err) {
        c.close();
        return reject(new Error(cleanTediousMessage(err)));
      }
      connected = true;
      resolve({
        run: (sql) => new Promise<unknown[][]>((res, rej) => {
          const rows: unknown[][] = [];
          const req = new tedious.Request(sql, (e) => {
            if (e) {
              const n = (e as { number?: number }).number ?? 0;
              rej(new SqlError(n, n ? `${n}: ${e.message}` : e.message));
            } else res(rows);
          });
          req.on('row', (cols: { value: unknown }[]) => rows.push(cols.map((x) => x.value)));
          c.execSqlBatch(req);
        }),
        close: () => { if (connected) c.close(); },
      });
    });
  });
}

function cleanTediousMessage(err: Error): string {
  const e = err as Error & { code?: string; cause?: Error };
  const why = e.cause?.message ? ` (${e.cause.message})` : '';
  return `${e.code ? `${e.code}: ` : ''}${e.message}${why}`;
}

async function withAdmin<T>(ctx: ProtocolContext, target: TargetConfig, fn: (c: AdminConnection) => Promise<T>): Promise<T> {
  const c = await connectAdmin(ctx, target);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** Create the login; the caller's lease revokes whatever part of it exists if this fails. */
export async function createSessionLogin(ctx: ProtocolContext, target: TargetConfig, role: MssqlRole, login: string, password: string): Promise<void> {
  await withAdmin(ctx, target, async (c) => {
    for (const sql of createStatements(login, password, role)) {
      try {
        await c.run(sql);
      } catch (e) {
        // A server error never echoes the statement, but mask the password should one ever do.
        throw new Error(String((e as Error).message).split(password).join('<secret>'));
      }
    }
  });
}

/** Error numbers that mean "already gone". */
const GONE = { LOGIN: 15151, PROCESS: 6106, DATABASE: 911 } as const;
const LOGIN_IN_USE = 15434;

async function ignoring(p: Promise<unknown>, ...numbers: number[]): Promise<boolean> {
  try {
    await p;
    return true;
  } catch (e) {
    if (e instanceof SqlError && numbers.includes(e.number)) return false;
    throw e;
  }
}

/** Disable the login, kill its sessions, drop its users and the login. Idempotent. */
export async function dropSessionLogin(ctx: ProtocolContext, target: TargetConfig, login: string, databases: string[]): Promise<{ killed: number }> {
  if (!SESSION_LOGIN.test(login)) throw new Error(`refusing to drop ${JSON.stringify(login.slice(0, 40))}: not a session login name`);
  return withAdmin(ctx, target, async (c) => {
    const l = quoteName(login);
    await ignoring(c.run(`ALTER LOGIN ${l} DISABLE`), GONE.LOGIN);
    let killed = 0;
    const killAll = async () => {
      const rows = await c.run(`SELECT session_id FROM sys.dm_exec_sessions WHERE login_name = ${quoteLiteral(login)}`);
      for (const r of rows) {
        const spid = Number(r[0]);
        if (!Number.isSafeInteger(spid) || spid <= 0) continue;
        if (await ignoring(c.run(`KILL ${spid}`), GONE.PROCESS)) killed++;
      }
    };
    await killAll();
    for (const d of databases) {
      if (!(await ignoring(c.run(`USE ${quoteName(d)}`), GONE.DATABASE))) continue;
      await c.run(`DROP USER IF EXISTS ${l}`);
    }
    if (databases.length) await c.run('USE [master]');
    for (let i = 0; ; i++) {
      try {
        await ignoring(c.run(`DROP LOGIN ${l}`), GONE.LOGIN);
        break;
      } catch (e) {
        // A killed session may still be rolling back: kill again and retry for a few seconds.
        if (!(e instanceof SqlError && e.number === LOGIN_IN_USE) || i >= 20) throw e;
        await new Promise((r) => setTimeout(r, 250));
        await killAll();
      }
    }
    return { killed };
  });
}
