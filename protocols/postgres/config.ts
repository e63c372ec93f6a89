/** The postgres target's own config sections (credentials, options, role grants), validated here. */
import { z } from 'zod';
import type { TargetConfig, RoleConfig } from '../types.js';
import { isSecretRef, isVaultRef } from '../../auth/secret.js';
import { parseAddress } from '../net.js';

const roleName = z.string().min(1).max(63).refine((s) => !s.includes('\0'), 'no NUL bytes');

export const credentialsSchema = z.object({
  admin: z.object({
    user: roleName,
    password: z.custom<unknown>((v) => isSecretRef(v) || isVaultRef(v), 'a secret reference: {env: NAME}, {file: PATH}, {value: "..."} or {vault: true} (kept in the vault)'),
  }),
  /** The database the admin connects to (and the default database for clients that name none). */
  database: roleName.default('postgres'),
  /** What happens to what the session role owns at the end: dropped, or reassigned to reassignTo. */
  onEnd: z.enum(['drop', 'reassign']).default('drop'),
  reassignTo: roleName.optional(),
}).refine((c) => c.onEnd !== 'reassign' || !!c.reassignTo, { message: 'reassignTo when onEnd is "reassign"', path: ['reassignTo'] });

export const optionsSchema = z.object({
  /** Accept clients without TLS (default false: they are told to use sslmode=require). */
  allowPlain: z.boolean().default(false),
  /** How clients prove the connection secret: SCRAM (default) or cleartext (only over TLS / allowPlain). */
  clientAuth: z.enum(['scram-sha-256', 'password']).default('scram-sha-256'),
  /**
   * TLS to the database server: disable (the default), require (encrypted; with upstreamCa the
   * certificate chain is verified, without it nothing is) or verify-full (upstreamCa + the host name
   * of `address` must be in the certificate).
   */
  upstreamTls: z.enum(['disable', 'require', 'verify-full']).default('disable'),
  /** PEM of the CA that signed the database server's certificate (require: chain check; verify-full: needed). */
  upstreamCa: z.custom<unknown>((v) => v === undefined || isSecretRef(v), 'a reference to the CA PEM: {file: PATH}, {env: NAME} or {value: "..."}').optional(),
  /** Upstream connect and login timeout in seconds. */
  connectTimeout: z.number().positive().default(10),
  /**
   * Statement rules enforced by the server too (an event trigger the admin installs, see enforce.ts):
   * auto (the default: installed when the role's rules deny DDL kinds; if the admin cannot, the
   * session goes on with the gateway's checks and the audit says so), required (no session
   * without it), off.
   */
  enforceInDatabase: z.enum(['auto', 'required', 'off']).default('auto'),
});

export const roleGrantsSchema = z.array(roleName).default([]);

export type PgCredentials = z.infer<typeof credentialsSchema>;
export type PgOptions = z.infer<typeof optionsSchema>;

export function credentialsOf(t: TargetConfig): PgCredentials { return credentialsSchema.parse(t.credentials); }
export function optionsOf(t: TargetConfig): PgOptions { return optionsSchema.parse(t.options ?? {}); }
/** The upstream roles a Tollgate role maps to (role elevation): `roles[].grants`. */
export function grantsOf(r: RoleConfig): string[] { return roleGrantsSchema.parse(r.grants); }

export const DEFAULT_PORT = 5432;

export function validateTarget(t: TargetConfig): { path: string; expected: string } | null {
  const c = credentialsSchema.safeParse(t.credentials);
  if (!c.success) {
    const i = c.error.issues[0]!;
    return { path: ['credentials', ...i.path.map(String)].join('.'), expected: i.message };
  }
  const o = optionsSchema.safeParse(t.options ?? {});
  if (!o.success) {
    const i = o.error.issues[0]!;
    return { path: ['options', ...i.path.map(String)].join('.'), expected: i.message };
  }
  if (o.data.upstreamTls === 'verify-full' && o.data.upstreamCa === undefined) return { path: 'options.upstreamCa', expected: 'the CA of the database server when upstreamTls is verify-full' };
  try { parseAddress(t.address, DEFAULT_PORT); } catch { return { path: 'address', expected: 'host:port of the PostgreSQL server' }; }
  for (let j = 0; j < t.roles.length; j++) {
    const g = roleGrantsSchema.safeParse(t.roles[j]!.grants);
    if (!g.success) return { path: `roles[${j}].grants`, expected: 'a list of PostgreSQL role names to grant to the session role' };
  }
  return null;
}
