/** Target configuration of an HTTP app: upstream base URL, injected credential, routing and timeouts. */
import { z } from 'zod';
import type { TargetConfig } from '../types.js';
import { secretRefSchema as secretRef } from '../../auth/secret.js';
import { durationSchema as duration, parseDuration } from '../../policies/config.js';

const argv = z.array(z.string().min(1)).min(1, 'an argv list such as ["/usr/local/bin/mint-token"]');

const credentialsSchema = z.discriminatedUnion('mode', [
  z.object({ mode: z.literal('none') }).strict(),
  z.object({
    mode: z.literal('jwt'),
    /** Header carrying the signed identity assertion. */
    header: z.string().regex(/^[A-Za-z0-9-]+$/).default('X-Tollgate-Assertion'),
    /** Also send it as "Authorization: Bearer <jwt>". */
    authorization: z.boolean().default(false),
    /** Lifetime of one assertion (at most 5 minutes). */
    ttl: duration.default('5m'),
  }).strict(),
  z.object({
    mode: z.literal('bearer'),
    token: secretRef.optional(),
    mintCommand: argv.optional(),
    revokeCommand: argv.optional(),
    header: z.string().regex(/^[A-Za-z0-9-]+$/).default('Authorization'),
  }).strict(),
  z.object({
    mode: z.literal('basic'),
    username: z.string().optional(),
    password: secretRef.optional(),
    mintCommand: argv.optional(),
    revokeCommand: argv.optional(),
  }).strict(),
]);

const optionsSchema = z.object({
  /** The first DNS label of the app's host name (default: the target name). */
  host: z.string().regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'a lower-case DNS label').optional(),
  /** Idle sessions end after this long without a request or an open WebSocket. */
  idleTimeout: duration.default('15m'),
  /** How long the app's sign-in cookie lasts. */
  cookieTtl: duration.default('12h'),
  /** Upstream: time to response headers, and between body chunks. */
  timeout: duration.default('30s'),
  /** Upstream connections kept per app. */
  connections: z.number().int().min(1).max(1024).default(128),
}).strict();

export type HttpCredentials = z.infer<typeof credentialsSchema>;
export type HttpOptions = z.infer<typeof optionsSchema>;

export interface AppConfig {
  target: TargetConfig;
  upstream: URL;
  label: string;
  credentials: HttpCredentials;
  idleMs: number;
  cookieTtlMs: number;
  timeoutMs: number;
  connections: number;
}

function upstreamUrl(address: string): URL | null {
  try {
    const u = new URL(address);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
    if (u.username || u.password || u.search || u.hash) return null;
    return u;
  } catch { return null; }
}

export function validateTarget(t: TargetConfig): { path: string; expected: string } | null {
  if (!upstreamUrl(t.address)) return { path: 'address', expected: 'an upstream base URL such as http://127.0.0.1:3000 (no credentials, query or fragment)' };
  const c = credentialsSchema.safeParse(Object.keys(t.credentials).length ? t.credentials : { mode: 'none' });
  if (!c.success) {
    const i = c.error.issues[0]!;
    return { path: ['credentials', ...i.path].join('.'), expected: i.message };
  }
  if (c.data.mode === 'bearer' && !c.data.token && !c.data.mintCommand) return { path: 'credentials', expected: 'token (a secret reference) or mintCommand' };
  // A minted credential must be revocable: nothing privileged outlives the session.
  if ((c.data.mode === 'bearer' || c.data.mode === 'basic') && c.data.mintCommand && !c.data.revokeCommand) return { path: 'credentials.revokeCommand', expected: 'a revoke command (argv) with mintCommand: every minted token is revoked when its session ends' };
  if (c.data.mode === 'basic' && !(c.data.username && c.data.password) && !c.data.mintCommand) return { path: 'credentials', expected: 'username and password, or mintCommand' };
  if (c.data.mode === 'jwt' && parseDuration(c.data.ttl) > 300_000) return { path: 'credentials.ttl', expected: 'at most 5m' };
  const o = optionsSchema.safeParse(t.options);
  if (!o.success) {
    const i = o.error.issues[0]!;
    return { path: ['options', ...i.path].join('.'), expected: i.message };
  }
  const label = o.data.host ?? t.name.toLowerCase();
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(label)) return { path: 'options.host', expected: `a DNS label for the app host (the target name "${t.name}" is not one)` };
  if (label.startsWith('_')) return { path: 'options.host', expected: 'a label not starting with _' };
  return null;
}

/** Parse a validated target. Throws on invalid config (validateTarget ran at start-up). */
export function appConfig(t: TargetConfig): AppConfig {
  const problem = validateTarget(t);
  if (problem) throw new Error(`target ${t.name}: ${problem.path}: ${problem.expected}`);
  const credentials = credentialsSchema.parse(Object.keys(t.credentials).length ? t.credentials : { mode: 'none' });
  const o = optionsSchema.parse(t.options);
  return {
    target: t,
    upstream: upstreamUrl(t.address)!,
    label: o.host ?? t.name.toLowerCase(),
    credentials,
    idleMs: parseDuration(o.idleTimeout),
    cookieTtlMs: parseDuration(o.cookieTtl),
    timeoutMs: parseDuration(o.timeout),
    connections: o.connections,
  };
}
