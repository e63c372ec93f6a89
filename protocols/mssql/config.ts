/** The mssql target's own config sections (credentials, options, roles), validated here. */
import { z } from 'zod';
import type { ProtocolContext, TargetConfig, RoleConfig } from '../types.js';
import { isSecretRef } from '../../auth/secret.js';
import { parseAddress as parseHostPort } from '../net.js';

export const DEFAULT_PORT = 1433;

/** sysname: 1 to 128 characters, no NUL (quoted with QUOTENAME rules wherever it is used). */
const sysname = z.string().min(1).max(128).refine((s) => !s.includes('\0'), 'no NUL characters');
const secretRef = z.custom<unknown>((v) => isSecretRef(v), 'a secret reference: {env: NAME}, {file: PATH}, {value: "..."} or {command: [...]}');

export const credentialsSchema = z.object({
  /** A login that may create logins and users and add them to roles (see the README for the least privileges). */
  admin: z.object({ user: sysname, password: secretRef }),
});

export const optionsSchema = z.object({
  /** TLS to the server: mandatory (TLS inside PRELOGIN, as TDS 7.x; the default) or strict (TDS 8.0: TLS from the first byte). */
  encrypt: z.enum(['mandatory', 'strict']).default('mandatory'),
  /** Accept any server certificate (a self-signed SQL Server certificate). Default false: verified. */
  trustServerCertificate: z.boolean().default(false),
  /** PEM of the CA that issued the server's certificate. */
  ca: secretRef.optional(),
  /** Name to verify in the server certificate (default: the host of address). */
  serverName: z.string().min(1).max(255).optional(),
  /** Upstream connect and login timeout, seconds. */
  connectTimeout: z.number().positive().max(600).default(15),
}).strict();

export const roleSchema = z.object({
  /** Databases the session login gets a user in, and the database roles of that user there. */
  databases: z.array(z.object({ name: sysname, roles: z.array(sysname).default([]) }).strict()).default([]),
  /** Server roles of the session login (e.g. sysadmin, ##MS_ServerStateReader##). */
  serverRoles: z.array(sysname).default([]),
  /** The session's database when the client names none (default: the first of databases). */
  defaultDatabase: sysname.optional(),
});

export type MssqlCredentials = z.infer<typeof credentialsSchema>;
export type MssqlOptions = z.infer<typeof optionsSchema>;
export type MssqlRole = z.infer<typeof roleSchema>;

export function optionsOf(t: TargetConfig): MssqlOptions { return optionsSchema.parse(t.options ?? {}); }
export function roleOf(r: RoleConfig): MssqlRole {
  const { name: _n, description: _d, ...rest } = r as Record<string, unknown>;
  return roleSchema.parse(rest);
}

/** The admin login, its password resolved. */
export function adminOf(ctx: ProtocolContext, t: TargetConfig): { user: string; password: string } {
  const c = credentialsSchema.parse(t.credentials);
  return { user: c.admin.user, password: ctx.config.resolveSecret(c.admin.password, `targets.${t.name}.credentials.admin.password`).reveal() };
}

/** The shared address rules (protocols/net.ts), plus SQL Server's own `host,port` form. */
export function parseAddress(address: string): { host: string; port: number } {
  return parseHostPort(address.replace(/^([^:,[\]]+),(\d+)$/, '$1:$2'), DEFAULT_PORT);
}

function firstIssue(prefix: string, e: z.ZodError): { path: string; expected: string } {
  const i = e.issues[0]!;
  return { path: [prefix, ...i.path.map(String)].filter(Boolean).join('.'), expected: i.message };
}

export function validateTarget(t: TargetConfig): { path: string; expected: string } | null {
  const c = credentialsSchema.safeParse(t.credentials);
  if (!c.success) return firstIssue('credentials', c.error);
  const o = optionsSchema.safeParse(t.options ?? {});
  if (!o.success) return firstIssue('options', o.error);
  if (o.data.encrypt === 'strict' && o.data.trustServerCertificate) {
    return { path: 'options.trustServerCertificate', expected: 'false with encrypt: strict (TDS 8.0 verifies the server certificate: give its CA in ca)' };
  }
  try { parseAddress(t.address); } catch { return { path: 'address', expected: 'host:port of the SQL Server (default port 1433)' }; }
  for (let j = 0; j < t.roles.length; j++) {
    const { name: _n, description: _d, ...rest } = t.roles[j]! as Record<string, unknown>;
    const r = roleSchema.safeParse(rest);
    if (!r.success) return firstIssue(`roles[${j}]`, r.error);
    if (!r.data.databases.length && !r.data.serverRoles.length) {
      return { path: `roles[${j}].databases`, expected: 'at least one database (with its roles) or a server role' };
    }
    if (r.data.defaultDatabase && !r.data.databases.some((d) => d.name === r.data.defaultDatabase)) {
      return { path: `roles[${j}].defaultDatabase`, expected: 'one of the role\'s databases' };
    }
    const names = r.data.databases.map((d) => d.name.toLowerCase());
    if (new Set(names).size !== names.length) return { path: `roles[${j}].databases`, expected: 'each database once' };
  }
  return null;
}
