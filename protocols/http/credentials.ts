/**
 * The credential injected into upstream requests, per session: a signed identity assertion (JWT,
 * re-signed 30 s before it expires), a static bearer/basic secret from the target config, or a
 * token minted per session by a provisioner hook command under a lease (revoked by revokeCommand).
 */
import { spawn } from 'node:child_process';
import { Secret } from '../../auth/secret.js';
import type { LiveSession, ProtocolContext, Revoked, TargetConfig } from '../types.js';
import type { LeaseRecord } from '../../proxy/store/types.js';
import type { AppConfig } from './config.js';
import { appConfig } from './config.js';
import { parseDuration } from '../../policies/config.js';
import { signAssertion, type AssertionKey } from './assertion.js';

export const LEASE_KIND = 'http-token';
const REFRESH_BEFORE_MS = 30_000;
const HOOK_TIMEOUT_MS = 30_000;

/** Lower-case names of the headers a target's credential mode injects (client values are dropped). */
export function injectedHeaderNames(app: AppConfig): Set<string> {
  const c = app.credentials;
  if (c.mode === 'jwt') return new Set([c.header.toLowerCase(), ...(c.authorization ? ['authorization'] : [])]);
  if (c.mode === 'bearer') return new Set([c.header.toLowerCase()]);
  if (c.mode === 'basic') return new Set(['authorization']);
  return new Set();
}

export interface HookResult { stdout: string; code: number | null }

/** Run a provisioner hook (argv, no shell) with extra environment; stdout capped at 64 KiB. */
export function runHook(argv: string[], env: Record<string, string>, timeoutMs = HOOK_TIMEOUT_MS): Promise<HookResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    let done = false;
    const timer = setTimeout(() => { child.kill('SIGKILL'); if (!done) { done = true; reject(new Error(`hook ${argv[0]} timed out after ${timeoutMs} ms`)); } }, timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => { if (out.length < 65_536) out += d; });
    child.on('error', (e) => { clearTimeout(timer); if (!done) { done = true; reject(new Error(`hook ${argv[0]} could not start: ${e.message}`)); } });
    child.on('close', (code) => { clearTimeout(timer); if (!done) { done = true; resolve({ stdout: out, code }); } });
  });
}

function hookEnv(target: TargetConfig, leaseId: string, extra: Record<string, string>): Record<string, string> {
  return { TOLLGATE_APP: target.name, TOLLGATE_LEASE: leaseId, ...extra };
}

/**
 * Mint output: a bare token line, or JSON {"token": "...", "id": "..."} (basic: {"username", "password"}).
 * Only the non-secret id is kept in the lease data (for revokeCommand).
 */
function parseMint(stdout: string, mode: 'bearer' | 'basic'): { secret: Secret; username?: string; id?: string } {
  const text = stdout.trim();
  if (!text) throw new Error('the mint command printed no credential');
  if (text.startsWith('{')) {
    let j: Record<string, unknown>;
    try { j = JSON.parse(text) as Record<string, unknown>; } catch { throw new Error('the mint command printed malformed JSON'); }
    const id = typeof j['id'] === 'string' ? j['id'] : undefined;
    if (mode === 'basic') {
      if (typeof j['username'] !== 'string' || typeof j['password'] !== 'string') throw new Error('the mint command must print {"username": ..., "password": ...}');
      return { secret: new Secret(j['password']), username: j['username'], id };
    }
    if (typeof j['token'] !== 'string' || !j['token']) throw new Error('the mint command must print {"token": ...}');
    return { secret: new Secret(j['token']), id };
  }
  const line = text.split('\n')[0]!.trim();
  if (mode === 'basic') {
    const i = line.indexOf(':');
    if (i <= 0) throw new Error('the mint command must print username:password');
    return { secret: new Secret(line.slice(i + 1)), username: line.slice(0, i) };
  }
  return { secret: new Secret(line) };
}

function headerSafe(v: string): boolean { return !/[\r\n\0]/.test(v); }

/** Per-session injected headers. */
export class SessionCredential {
  private jwt: { value: string; refreshAt: number } | null = null;
  private signing: Promise<void> | null = null;
  private fixed: [string, Secret][] = [];

  private constructor(private app: AppConfig, private session: LiveSession, private ctx: ProtocolContext, private key: AssertionKey) {}

  static async create(ctx: ProtocolContext, app: AppConfig, session: LiveSession, key: AssertionKey): Promise<SessionCredential> {
    const c = new SessionCredential(app, session, ctx, key);
    const cr = app.credentials;
    if (cr.mode === 'bearer' || cr.mode === 'basic') {
      let secret: Secret;
      let username = cr.mode === 'basic' ? cr.username : undefined;
      if (cr.mintCommand) {
        const target = app.target;
        const minted = await session.lease(LEASE_KIND, { hasRevoke: !!cr.revokeCommand, identity: session.principal.sub, grant: session.grant.id }, async (leaseId) => {
          const r = await runHook(cr.mintCommand!, hookEnv(target, leaseId, {
            TOLLGATE_IDENTITY: session.principal.sub, TOLLGATE_GRANT: session.grant.id, TOLLGATE_ROLE: session.role.name, TOLLGATE_SESSION: session.id,
          }));
          if (r.code !== 0) throw new Error(`the mint command for ${target.name} exited with code ${r.code}`);
          const m = parseMint(r.stdout, cr.mode);
          return { credential: m, data: m.id ? { tokenId: m.id } : {} };
        });
        secret = minted.secret;
        username = minted.username ?? username;
      } else {
        secret = cr.mode === 'bearer'
          ? ctx.config.resolveSecret(cr.token, `targets.${app.target.name}.credentials.token`)
          : ctx.config.resolveSecret(cr.password, `targets.${app.target.name}.credentials.password`);
      }
      const value = cr.mode === 'bearer'
        ? `Bearer ${secret.reveal()}`
        : `Basic ${Buffer.from(`${username ?? ''}:${secret.reveal()}`).toString('base64')}`;
      if (!headerSafe(value)) throw new Error(`the credential for ${app.target.name} contains line breaks`);
      c.fixed.push([cr.mode === 'bearer' ? cr.header.toLowerCase() : 'authorization', new Secret(value)]);
    } else if (cr.mode === 'jwt') {
      await c.refresh();
    }
    return c;
  }

  private refresh(): Promise<void> {
    if (this.signing) return this.signing;
    const cr = this.app.credentials;
    if (cr.mode !== 'jwt') return Promise.resolve();
    const now = this.ctx.clock.now();
    // Never beyond the grant's end.
    const ttl = Math.max(1000, Math.min(parseDuration(cr.ttl), this.session.grant.expiresAt - now));
    this.signing = signAssertion(this.key, {
      issuer: this.ctx.config.publicUrl, app: this.app.target.name, principal: this.session.principal, grantId: this.session.grant.id,
      sessionId: this.session.id, role: this.session.role.name, now, ttlMs: ttl,
    }).then(({ jwt, expiresAt }) => {
      this.jwt = { value: jwt, refreshAt: expiresAt - Math.min(REFRESH_BEFORE_MS, ttl / 2) };
    }).finally(() => { this.signing = null; });
    return this.signing;
  }

  /** Headers to add to one upstream request (sync when cached; a promise when the JWT needs re-signing). */
  headers(): Record<string, string> | Promise<Record<string, string>> {
    const cr = this.app.credentials;
    if (cr.mode === 'jwt') {
      if (!this.jwt || this.ctx.clock.now() >= this.jwt.refreshAt) return this.refresh().then(() => this.jwtHeaders());
      return this.jwtHeaders();
    }
    const out: Record<string, string> = {};
    for (const [k, v] of this.fixed) out[k] = v.reveal();
    return out;
  }

  private jwtHeaders(): Record<string, string> {
    const cr = this.app.credentials;
    if (cr.mode !== 'jwt' || !this.jwt) return {};
    const out: Record<string, string> = { [cr.header.toLowerCase()]: this.jwt.value };
    if (cr.authorization) out['authorization'] = `Bearer ${this.jwt.value}`;
    return out;
  }
}

/** Revoke a minted token from its lease data alone (teardown and the reaper). Idempotent if the hook is. */
export async function revokeTokenLease(ctx: ProtocolContext, target: TargetConfig, lease: LeaseRecord): Promise<Revoked> {
  const app = appConfig(target);
  const cr = app.credentials;
  // Config validation requires revokeCommand with mintCommand; a target changed since cannot revoke what it minted.
  if ((cr.mode !== 'bearer' && cr.mode !== 'basic') || !cr.revokeCommand) throw new Error(`${target.name} has no credentials.revokeCommand to revoke the token minted under lease ${lease.id}`);
  const r = await runHook(cr.revokeCommand, hookEnv(target, lease.id, {
    TOLLGATE_IDENTITY: String(lease.data['identity'] ?? ''),
    TOLLGATE_GRANT: lease.grantId ?? '',
    TOLLGATE_TOKEN_ID: typeof lease.data['tokenId'] === 'string' ? lease.data['tokenId'] : '',
  }));
  if (r.code !== 0) throw new Error(`the revoke command for ${target.name} exited with code ${r.code}`);
  ctx.log.info({ target: target.name, lease: lease.id }, 'minted app token revoked');
  return { revoked: true, detail: `the revoke command for ${target.name} succeeded` };
}
