/**
 * What people hold to prove who they are to the gateway, over the Store interface and a Clock:
 *   - API tokens ('tg_pat_…') for the REST API and CLI,
 *   - web sessions (the portal's cookie),
 *   - connection secrets: short-lived passwords a native client types (or proves by
 *     challenge-response) to reach one target under one grant.
 * Only SHA-256 hashes are stored; the plaintext leaves here once, wrapped in a Secret.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../policies/clock.js';
import type {
  ApiTokenRecord, ConnectionSecretRecord, GrantRecord, IdentityRecord, Store, WebSessionRecord,
} from '../proxy/store/types.js';
import { Secret, noteIssued } from './secret.js';
import { credentialTag, type CredentialRef, type Principal } from './types.js';

export const API_TOKEN_PREFIX = 'tg_pat_';
/** URL-safe and unambiguous when read aloud or copied by hand: no 0/O/o, 1/l/I. */
export const SECRET_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789';
export const DEFAULT_SECRET_LENGTH = 24;

/** SHA-256 (hex) of a token, cookie or secret. */
export function hashToken(value: string | Secret): string {
  return createHash('sha256').update(typeof value === 'string' ? value : value.reveal(), 'utf8').digest('hex');
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Uniform random characters from an alphabet (rejection sampling, no modulo bias). */
export function randomString(length: number, alphabet = SECRET_ALPHABET): string {
  if (!Number.isInteger(length) || length < 1 || length > 1024) throw new RangeError('length must be 1..1024');
  const n = alphabet.length;
  const limit = 256 - (256 % n);
  let out = '';
  while (out.length < length) {
    for (const b of randomBytes(length * 2)) {
      if (b < limit) out += alphabet[b % n];
      if (out.length === length) break;
    }
  }
  return out;
}

function checkTtl(ttlMs: number, what: string): void {
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`${what} lifetime must be a positive number of milliseconds`);
}

/** The gateway's Principal for a known identity. */
export function principalFrom(identity: IdentityRecord, via: Principal['via'], mfaAt: number | null): Principal {
  return {
    sub: identity.sub,
    email: identity.email,
    name: identity.name,
    groups: [...identity.groups],
    mfaAt,
    via,
  };
}

// ---------------------------------------------------------------------------------------------
// API tokens

export type TokenState = 'active' | 'expired' | 'revoked' | 'suspended';

export class ApiTokens {
  /** maxTtlMs: the longest lifetime any token may have (gateway.maxTokenTtl). */
  constructor(private readonly store: Store, private readonly clock: Clock, readonly maxTtlMs = 30 * 86_400_000) {}

  /**
   * A new token for `identity`; the plaintext is only in the returned Secret. linkId ties it to an
   * IdP sign-in it is re-validated with (null: an operator-made token, not tied to the IdP).
   */
  async create(identity: string, name: string, ttlMs: number, mfaAt: number | null, linkId: string | null = null): Promise<{ token: Secret; record: ApiTokenRecord }> {
    checkTtl(ttlMs, 'token');
    if (ttlMs > this.maxTtlMs) throw new RangeError(`token lifetime must be at most ${Math.floor(this.maxTtlMs / 1000)}s (gateway.maxTokenTtl)`);
    const clean = String(name ?? '').trim();
    if (!clean || clean.length > 100 || /[\p{Cc}]/u.test(clean)) throw new RangeError('token name must be 1..100 printable characters');
    const token = noteIssued('api_token', new Secret(API_TOKEN_PREFIX + randomBytes(32).toString('base64url')));
    const now = this.clock.now();
    const record: ApiTokenRecord = {
      id: randomUUID(),
      hash: hashToken(token),
      identity,
      name: clean,
      createdAt: now,
      expiresAt: now + ttlMs,
      lastUsedAt: null,
      revokedAt: null,
      mfaAt,
      linkId,
    };
    await this.store.insertApiToken(record);
    return { token, record };
  }

  /** The live record for a presented token, or null (unknown, expired, revoked, malformed). */
  async verify(token: string | Secret): Promise<{ record: ApiTokenRecord } | null> {
    const value = typeof token === 'string' ? token : token.reveal();
    if (typeof value !== 'string' || !value.startsWith(API_TOKEN_PREFIX) || value.length > 200) return null;
    const hash = hashToken(value);
    const record = await this.store.getApiTokenByHash(hash);
    if (!record || !sameHash(record.hash, hash)) return null;
    const now = this.clock.now();
    if (record.revokedAt !== null || now >= record.expiresAt) return null;
    if (record.lastUsedAt === null || now - record.lastUsedAt >= 60_000) {
      // Only while it is unrevoked, and only that column: a revoke committed meanwhile stays.
      // A store that cannot take the write (disk full, read-only) leaves the token valid as just read:
      // read-only use (the SOC dashboard showing the failure) goes on; the gateway refuses new sessions.
      const claimed = await this.store.claim('tokens', record.id, { revokedAt: null }, { lastUsedAt: now }).then((r) => r ?? 'revoked', () => 'unwritable' as const);
      if (claimed === 'revoked') return null;
      if (claimed !== 'unwritable') record.lastUsedAt = now;
    }
    return { record };
  }

  list(identity: string): Promise<ApiTokenRecord[]> {
    return this.store.listApiTokens(identity);
  }

  /** Revoke one of `identity`'s tokens. False when it has no such token (or it was already revoked). */
  async revoke(identity: string, id: string): Promise<boolean> {
    const record = typeof id === 'string' && id ? await this.store.getApiToken(id) : null;
    if (!record || record.identity !== identity || record.revokedAt !== null) return false;
    return !!await this.store.claim('tokens', record.id, { revokedAt: null }, { revokedAt: this.clock.now() });
  }

  /** What a token is now; `linkFailed`: its IdP link failed re-validation. */
  state(record: ApiTokenRecord, linkFailed: boolean): TokenState {
    if (record.revokedAt !== null) return 'revoked';
    if (this.clock.now() >= record.expiresAt) return 'expired';
    return linkFailed ? 'suspended' : 'active';
  }
}

// ---------------------------------------------------------------------------------------------
// Web sessions

export class WebSessions {
  constructor(private readonly store: Store, private readonly clock: Clock) {}

  async create(identity: string, mfaAt: number | null, ttlMs: number, linkId: string | null = null): Promise<{ cookie: Secret; record: WebSessionRecord }> {
    checkTtl(ttlMs, 'session');
    const cookie = noteIssued('session_cookie', new Secret(randomBytes(32).toString('base64url')));
    const now = this.clock.now();
    const record: WebSessionRecord = {
      id: randomUUID(),
      hash: hashToken(cookie),
      identity,
      createdAt: now,
      expiresAt: now + ttlMs,
      mfaAt,
      revokedAt: null,
      linkId,
    };
    await this.store.insertWebSession(record);
    return { cookie, record };
  }

  private async find(cookieValue: string | Secret): Promise<WebSessionRecord | null> {
    const value = typeof cookieValue === 'string' ? cookieValue : cookieValue.reveal();
    if (typeof value !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(value)) return null;
    const hash = hashToken(value);
    const record = await this.store.getWebSessionByHash(hash);
    return record && sameHash(record.hash, hash) ? record : null;
  }

  /** The live session for a cookie value, or null. */
  async verify(cookieValue: string | Secret): Promise<WebSessionRecord | null> {
    const record = await this.find(cookieValue);
    if (!record || record.revokedAt !== null || this.clock.now() >= record.expiresAt) return null;
    return record;
  }

  /** Record a fresh MFA proof (step-up) on a live session. */
  async markMfa(cookieValue: string | Secret, mfaAt: number): Promise<WebSessionRecord | null> {
    const record = await this.verify(cookieValue);
    if (!record) return null;
    // Only on a session still signed in: a sign-out committed meanwhile stays.
    return this.store.claim('webSessions', record.id, { revokedAt: null }, { mfaAt });
  }

  /** Sign out. False when the cookie matches no live session. */
  async revoke(cookieValue: string | Secret): Promise<boolean> {
    const record = await this.verify(cookieValue);
    if (!record) return false;
    return !!await this.store.claim('webSessions', record.id, { revokedAt: null }, { revokedAt: this.clock.now() });
  }
}

// ---------------------------------------------------------------------------------------------
// Connection secrets

export interface IssueSecretOptions {
  grant: GrantRecord;
  /** Bind to one protocol, or null for any protocol of the grant's target. */
  protocol: string | null;
  /** Reusable secrets work until they expire; others work once. */
  reusable: boolean;
  ttlMs: number;
  /** From ProtocolModule.secretVerifiers (never the secret itself); a function gets the new secret. */
  verifiers: Record<string, string> | ((secret: Secret) => Record<string, string>);
  length?: number;
  /** The credential asking: the secret dies with it (revoked token, failed IdP link) and never outlives notAfter. */
  issuedBy?: CredentialRef;
  /** Epoch ms the secret must not outlive (the issuing token's expiry). */
  notAfter?: number;
}

export interface SecretBinding {
  target: string;
  /** When given, the secret must have been issued for this role. */
  role?: string;
  protocol: string;
}

export type ConsumeResult =
  | { ok: true; record: ConnectionSecretRecord }
  | { ok: false; code: 'bad_secret' | 'secret_used' | 'secret_expired' | 'secret_revoked'; reason: string };

const BAD: ConsumeResult = { ok: false, code: 'bad_secret', reason: 'the connection secret is not valid for this target' };
const USED: ConsumeResult = { ok: false, code: 'secret_used', reason: 'the connection secret was already used; ask for a new one' };
const EXPIRED: ConsumeResult = { ok: false, code: 'secret_expired', reason: 'the connection secret has expired; ask for a new one' };
const REVOKED: ConsumeResult = { ok: false, code: 'secret_revoked', reason: 'the API token or sign-in that issued this connection secret was revoked or ended; ask for a new one' };

export class ConnectionSecrets {
  constructor(private readonly store: Store, private readonly clock: Clock) {}

  async issue(o: IssueSecretOptions): Promise<{ secret: Secret; record: ConnectionSecretRecord }> {
    checkTtl(o.ttlMs, 'secret');
    const now = this.clock.now();
    if (o.grant.state !== 'active' || now >= o.grant.expiresAt) throw new Error('the grant is not active; no connection secret can be issued');
    const secret = noteIssued('connection_secret', new Secret(randomString(o.length ?? DEFAULT_SECRET_LENGTH)));
    const record: ConnectionSecretRecord = {
      id: randomUUID(),
      hash: hashToken(secret),
      grantId: o.grant.id,
      identity: o.grant.identity,
      target: o.grant.target,
      role: o.grant.role,
      protocol: o.protocol,
      reusable: o.reusable,
      createdAt: now,
      // Never outlive the grant (nor the credential that asked for it).
      expiresAt: Math.min(now + o.ttlMs, o.grant.expiresAt, o.notAfter ?? Infinity),
      usedAt: null,
      uses: 0,
      verifiers: { ...(typeof o.verifiers === 'function' ? o.verifiers(secret) : o.verifiers) },
      issuedBy: o.issuedBy ? credentialTag(o.issuedBy) : null,
      linkId: o.issuedBy?.linkId ?? null,
    };
    await this.store.insertConnectionSecret(record);
    return { secret, record };
  }

  private static bound(r: ConnectionSecretRecord, b: SecretBinding): boolean {
    return r.target === b.target
      && (b.role === undefined || r.role === b.role)
      && (r.protocol === null || r.protocol === b.protocol);
  }

  /** Classify and count one use of a known record (atomic in the store). */
  private async use(record: ConnectionSecretRecord, b: SecretBinding): Promise<ConsumeResult> {
    // Binding first: say nothing about secrets of other targets.
    if (!ConnectionSecrets.bound(record, b)) return BAD;
    const now = this.clock.now();
    if (now >= record.expiresAt) return EXPIRED;
    if (!record.reusable && record.uses > 0) return USED;
    if (!(await this.issuerLive(record))) return REVOKED;
    const updated = await this.store.useConnectionSecret(record.id, now);
    if (!updated) return now >= record.expiresAt ? EXPIRED : USED;
    return { ok: true, record: updated };
  }

  /** Whether the credential that asked for this secret still stands (token not revoked, IdP link not failed). */
  private async issuerLive(r: ConnectionSecretRecord): Promise<boolean> {
    if (r.linkId) {
      const link = await this.store.getIdpLink(r.linkId);
      if (!link || link.state !== 'ok') return false;
    }
    const m = /^token:(.+)$/.exec(r.issuedBy ?? '');
    if (m) {
      const token = await this.store.getApiToken(m[1]!);
      if (!token || token.revokedAt !== null) return false;
    }
    return true;
  }

  /** Check a typed secret for a target and count its use (single-use unless reusable). */
  async consume(secret: Secret | string, b: SecretBinding): Promise<ConsumeResult> {
    const value = typeof secret === 'string' ? secret : secret.reveal();
    if (typeof value !== 'string' || value.length === 0 || value.length > 256) return BAD;
    const hash = hashToken(value);
    const record = await this.store.getConnectionSecretByHash(hash);
    if (!record || !sameHash(record.hash, hash)) return BAD;
    return this.use(record, b);
  }

  /** Count a use of a secret proven by challenge-response (its id came from pending()). */
  async consumeById(id: string, b: SecretBinding): Promise<ConsumeResult> {
    const now = this.clock.now();
    let record = (await this.store.listConnectionSecrets({ unusedAt: now })).find((r) => r.id === id);
    // Not among the usable ones: find out why, to give the right answer.
    if (!record) record = (await this.store.listConnectionSecrets({})).find((r) => r.id === id);
    if (!record) return BAD;
    return this.use(record, b);
  }

  /** Usable secrets for a target (and role/protocol) as challenge-response protocols need them. */
  async pending(b: SecretBinding): Promise<{ id: string; verifiers: Record<string, string> }[]> {
    const now = this.clock.now();
    return (await this.store.listConnectionSecrets({ unusedAt: now }))
      .filter((r) => ConnectionSecrets.bound(r, b) && now < r.expiresAt && (r.reusable || r.uses === 0))
      .map((r) => ({ id: r.id, verifiers: { ...r.verifiers } }));
  }
}
