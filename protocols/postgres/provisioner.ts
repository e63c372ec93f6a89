/**
 * The per-session login role: created with the admin credential for one session, VALID UNTIL the
 * grant's end, member of the upstream roles the Tollgate role maps to; at the end its backends are
 * terminated, what it owns is dropped or reassigned (in every database where it has
 * dependencies) and the role is dropped. Revocation works from the stored lease data alone.
 */
import { adminConnections } from '../bounded.js';
import { randomBytes } from 'node:crypto';
import tls from 'node:tls';
import pg from 'pg';
import type { ProtocolContext, TargetConfig } from '../types.js';
import { credentialsOf, optionsOf, DEFAULT_PORT, type PgCredentials } from './config.js';
import { makeVerifierAsync } from './scram.js';
import { parseAddress } from '../net.js';
import { noteIssued, type Secret } from '../../auth/secret.js';

export const LEASE_KIND = 'postgres-role';

const ident = (s: string) => pg.escapeIdentifier(s);
const literal = (s: string) => pg.escapeLiteral(s);

/** A role name like tg_alice_7f3k: lowercase letters, digits and _ only, under 63 bytes. */
export function sessionRoleName(sub: string): string {
  const base = sub.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 24) || 'user';
  return `tg_${base}_${randomBytes(4).toString('hex').slice(0, 6)}`;
}

export interface UpstreamTls { mode: 'disable' | 'require' | 'verify-full'; ca?: string }

/** TLS settings towards the database server, from the target's options. */
export function upstreamTlsOf(ctx: ProtocolContext, target: TargetConfig): UpstreamTls {
  const o = optionsOf(target);
  const ca = o.upstreamCa !== undefined ? ctx.config.resolveSecret(o.upstreamCa, `targets.${target.name}.options.upstreamCa`).reveal() : undefined;
  return { mode: o.upstreamTls, ca };
}

/**
 * What the TLS client checks, for the admin connection (node-postgres) and the session's own dial
 * alike: `require` encrypts and, with upstreamCa, verifies the certificate chain (libpq's verify-ca);
 * `verify-full` also checks that the certificate names the host of the target's address. null: no TLS.
 */
export function tlsClientOptions(t: UpstreamTls): tls.ConnectionOptions | null {
  if (t.mode === 'disable') return null;
  if (t.mode === 'require') return t.ca ? { rejectUnauthorized: true, ca: t.ca, checkServerIdentity: () => undefined } : { rejectUnauthorized: false };
  return { rejectUnauthorized: true, ca: t.ca, checkServerIdentity: tls.checkServerIdentity };
}

/** The admin connection: with the configured admin password (the vault's current one for {vault: true}), or `password` (a rotation). */
export async function adminClient(ctx: ProtocolContext, target: TargetConfig, database?: string, credential?: Secret): Promise<pg.Client> {
  const cred = credentialsOf(target);
  const { host, port } = parseAddress(target.address, DEFAULT_PORT);
  const password = credential ?? await ctx.config.credential(target, 'admin.password');
  const client = new pg.Client({
    host, port, user: cred.admin.user, password: password.reveal(), database: database ?? cred.database,
    connectionTimeoutMillis: optionsOf(target).connectTimeout * 1000,
    application_name: 'tollgate',
    ssl: tlsClientOptions(upstreamTlsOf(ctx, target)) ?? false,
  });
  client.on('error', () => { /* reported through the failing query */ });
  await client.connect();
  return client;
}

export interface SessionRole {
  user: string;
  password: string;
  /** Server-side privileges that would undo a rule the server cannot enforce (e.g. COPY … PROGRAM via pg_execute_server_program). */
  serverPrograms: boolean;
}

/**
 * Create the role. validUntil is an absolute time on the database server's clock.
 * The password is sent as a SCRAM verifier, so the cleartext never reaches the server's logs.
 * `note`: the role comment that carries the session's rules for the event trigger (./enforce.ts),
 * set before the role can log in.
 */
export async function createSessionRole(ctx: ProtocolContext, target: TargetConfig, roleName: string, grants: string[], validUntil: Date, note?: string, admin?: pg.Client): Promise<SessionRole> {
  const password = noteIssued('postgres_password', randomBytes(24).toString('base64url'));
  const verifier = (await makeVerifierAsync(password, randomBytes(16))).split(':');
  const stored = `SCRAM-SHA-256$${verifier[0]}:${verifier[1]}$${verifier[2]}:${verifier[3]}`;
  // `admin`: a connection the caller opened (before it stored the lease) and closes itself.
  const client = admin ?? await adminClient(ctx, target);
  try {
    await client.query(`CREATE ROLE ${ident(roleName)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD ${literal(stored)} VALID UNTIL ${literal(validUntil.toISOString())}`);
    for (const g of grants) await client.query(`GRANT ${ident(g)} TO ${ident(roleName)}`);
    if (note) await client.query(`COMMENT ON ROLE ${ident(roleName)} IS ${literal(note)}`);
    const priv = await client.query("SELECT pg_has_role($1, 'pg_execute_server_program', 'USAGE') AS p", [roleName]);
    return { user: roleName, password, serverPrograms: priv.rows[0]?.p === true };
  } finally {
    if (!admin) await client.end().catch(() => {});
  }
}

/** Terminate, drop/reassign owned, drop. Idempotent: a role that no longer exists is fine. */
export function dropSessionRole(ctx: ProtocolContext, target: TargetConfig, roleName: string, cred: PgCredentials = credentialsOf(target)): Promise<void> {
  // At most ADMIN_CONNECTIONS_PER_TARGET drops at once per target: a burst of ended sessions stays under max_connections.
  return adminConnections.run(target.name, () => dropRole(ctx, target, roleName, cred));
}

async function dropRole(ctx: ProtocolContext, target: TargetConfig, roleName: string, cred: PgCredentials): Promise<void> {
  const client = await adminClient(ctx, target);
  try {
    const exists = await client.query('SELECT oid FROM pg_roles WHERE rolname = $1', [roleName]);
    if (!exists.rowCount) return;
    const oid = exists.rows[0].oid as number;
    await client.query(`ALTER ROLE ${ident(roleName)} NOLOGIN`);
    // A non-superuser admin (CREATEROLE + pg_signal_backend) needs the role's privileges to
    // terminate its backends and drop or reassign what it owns: take membership now, at the end.
    const me = await client.query(`SELECT r.rolsuper AS sup, current_user AS u, current_setting('server_version_num')::int AS v FROM pg_roles r WHERE r.rolname = current_user`);
    if (!me.rows[0].sup) {
      await client.query(`GRANT ${ident(roleName)} TO ${ident(me.rows[0].u as string)}${(me.rows[0].v as number) >= 160000 ? ' WITH INHERIT TRUE' : ''}`);
    }
    for (let i = 0; i < 50; i++) {
      const r = await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()', [roleName]);
      if (!r.rowCount) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const dbs = await client.query(
      `SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
        WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = $1 AND d.datallowconn`, [oid]);
    const names = new Set<string>([cred.database, ...dbs.rows.map((r) => r.datname as string)]);
    for (const db of names) {
      const c = db === cred.database ? client : await adminClient(ctx, target, db);
      try {
        if (cred.onEnd === 'reassign' && cred.reassignTo) await c.query(`REASSIGN OWNED BY ${ident(roleName)} TO ${ident(cred.reassignTo)}`);
        await c.query(`DROP OWNED BY ${ident(roleName)}`);
      } finally {
        if (c !== client) await c.end().catch(() => {});
      }
    }
    await client.query(`DROP ROLE IF EXISTS ${ident(roleName)}`);
  } finally {
    await client.end().catch(() => {});
  }
}

export async function roleExists(ctx: ProtocolContext, target: TargetConfig, roleName: string): Promise<boolean> {
  const client = await adminClient(ctx, target);
  try {
    return ((await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [roleName])).rowCount ?? 0) > 0;
  } finally {
    await client.end().catch(() => {});
  }
}
