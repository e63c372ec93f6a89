/**
 * Identity lifecycle: the IdP stays the source of truth after sign-in.
 *
 * Each browser or device sign-in becomes an IdP link that keeps the IdP's refresh token (or, when
 * the IdP issued none, its access token for userinfo), sealed with the gateway key. The web session
 * of that sign-in, the device sign-in's API token and every API token made with one of them are
 * re-validated through that link at most every `idp.revalidate`: the refresh grant (or userinfo)
 * returns the identity's current groups, which replace the stored ones. When the IdP refuses (user
 * disabled, refresh token revoked) or nothing is left to ask it with, the link fails for good: its
 * web sessions end, its tokens show as suspended, the connection secrets they issued stop working,
 * live sessions opened through them end, and the failure is an audit event. An IdP that cannot be
 * reached fails closed for the request at hand (503) but ends nothing.
 *
 * Tokens the operator makes outside any sign-in (demo, tests: ApiTokens.create without a link) are
 * not tied to the IdP; they end by expiry, revocation or a lock.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../policies/clock.js';
import type { IdpLinkRecord, Store } from '../proxy/store/types.js';
import type { ApiTokens, WebSessions } from './credentials.js';
import type { GatewayKey } from './keys.js';
import type { IdpTokens, Oidc } from './oidc.js';
import { Secret } from './secret.js';
import type { Principal } from './types.js';

/** Sealed IdP tokens are kept this long at most (the IdP's own expiry usually comes first). */
const SEAL_TTL_MS = 400 * 86_400_000;

export type LinkCheck = { ok: true } | { ok: false; status: 401 | 503; message: string };

export interface IdpLinksOptions {
  store: Store;
  clock: Clock;
  key: GatewayKey;
  /** The relying party (null: no IdP configured; links then cannot be re-validated). */
  oidc: () => Oidc | null;
  /** idp.revalidate; 0 turns re-validation off. */
  intervalMs: number;
  audit: (actor: string, action: string, subject: string | null, data: Record<string, unknown>) => Promise<void>;
  /** A link failed for good: end what depends on it. */
  onFailed?: (link: IdpLinkRecord) => Promise<void> | void;
  log?: Logger;
}

export class IdpLinks {
  private readonly inflight = new Map<string, Promise<LinkCheck>>();
  private timer: TimerHandle | null = null;
  private sweeping: Promise<void> | null = null;
  private readonly ending = new Set<Promise<void>>();
  /** IdP round trips made (tests assert re-validation happens at most once per interval). */
  revalidations = 0;

  constructor(private readonly o: IdpLinksOptions) {}

  get intervalMs(): number { return this.o.intervalMs; }

  /** Record a sign-in's IdP tokens; null when the IdP issued nothing to re-validate with. */
  async create(identity: string, tokens: IdpTokens | undefined, expiresAt: number): Promise<IdpLinkRecord | null> {
    if (!tokens || (!tokens.refresh && !tokens.access)) return null;
    const now = this.o.clock.now();
    const rec: IdpLinkRecord = {
      id: randomUUID(), identity, createdAt: now, validatedAt: now, expiresAt, state: 'ok',
      failedAt: null, failKind: null, failReason: null, refreshSealed: null, accessSealed: null, accessExpiresAt: null,
    };
    this.seal(rec, tokens);
    await this.o.store.insertIdpLink(rec);
    return rec;
  }

  /** A credential made from the link lives until `expiresAt`: keep re-validating until then. */
  async extend(linkId: string, expiresAt: number): Promise<void> {
    const rec = await this.o.store.getIdpLink(linkId);
    if (rec && rec.expiresAt < expiresAt) {
      rec.expiresAt = expiresAt;
      await this.o.store.updateIdpLink(rec);
    }
  }

  get(linkId: string): Promise<IdpLinkRecord | null> { return this.o.store.getIdpLink(linkId); }

  /** Whether credentials of this link may be used now; re-validates with the IdP when due. */
  async check(linkId: string): Promise<LinkCheck> {
    const rec = await this.o.store.getIdpLink(linkId);
    if (!rec) return { ok: false, status: 401, message: 'the sign-in behind this credential is unknown; sign in again' };
    if (rec.state === 'failed') return { ok: false, status: 401, message: failedMessage(rec) };
    if (!this.due(rec)) return { ok: true };
    let p = this.inflight.get(rec.id);
    if (!p) {
      p = this.revalidate(rec).finally(() => this.inflight.delete(rec.id));
      this.inflight.set(rec.id, p);
    }
    return p;
  }

  private due(rec: IdpLinkRecord): boolean {
    return this.o.intervalMs > 0 && this.o.clock.now() - rec.validatedAt >= this.o.intervalMs;
  }

  private seal(rec: IdpLinkRecord, t: IdpTokens): void {
    rec.refreshSealed = t.refresh ? this.o.key.seal(t.refresh.reveal(), SEAL_TTL_MS) : null;
    rec.accessSealed = t.access ? this.o.key.seal(t.access.reveal(), SEAL_TTL_MS) : null;
    rec.accessExpiresAt = t.access ? t.accessExpiresAt : null;
  }

  private unseal(sealed: string | null): Secret | null | false {
    if (sealed === null) return null;
    const v = this.o.key.unseal<string>(sealed);
    return typeof v === 'string' ? new Secret(v) : false;
  }

  private async revalidate(rec: IdpLinkRecord): Promise<LinkCheck> {
    const oidc = this.o.oidc();
    if (!oidc) return this.fail(rec, 'unverifiable', 'no identity provider is configured any more to re-check this sign-in');
    const refresh = this.unseal(rec.refreshSealed);
    const access = this.unseal(rec.accessSealed);
    if (refresh === false || access === false) return this.fail(rec, 'unverifiable', 'the stored sign-in can no longer be read (the gateway key changed); sign in again');
    // Claim the round trip in the store first: a refresh token may be single-use (rotation), so two
    // gateways refreshing the same sign-in at once would make the IdP revoke it.
    const before = rec.validatedAt;
    const claimedAt = this.o.clock.now();
    const claimed = await this.o.store.transaction(async (tx) => {
      const cur = await tx.getIdpLink(rec.id);
      if (!cur || cur.state !== 'ok' || cur.validatedAt !== before) return false;
      cur.validatedAt = claimedAt;
      await tx.updateIdpLink(cur);
      return true;
    });
    if (!claimed) {
      const now = await this.o.store.getIdpLink(rec.id);
      if (!now) return { ok: false, status: 401, message: 'the sign-in behind this credential is unknown; sign in again' };
      return now.state === 'failed' ? { ok: false, status: 401, message: failedMessage(now) } : { ok: true };
    }
    this.revalidations++;
    const res = await oidc.revalidate(rec.identity, { refresh, access, accessExpiresAt: rec.accessExpiresAt });
    const current = await this.o.store.getIdpLink(rec.id);
    if (!current) return { ok: false, status: 401, message: 'the sign-in behind this credential is unknown; sign in again' };
    if (current.state === 'failed') return { ok: false, status: 401, message: failedMessage(current) };
    if (!res.ok) {
      if (res.kind === 'unavailable') {
        // Not asked after all: the next use tries again.
        if (current.validatedAt === claimedAt) {
          current.validatedAt = before;
          await this.o.store.updateIdpLink(current);
        }
        return { ok: false, status: 503, message: res.message };
      }
      return this.fail(current, res.kind, res.message);
    }
    current.validatedAt = this.o.clock.now();
    this.seal(current, res.tokens);
    await this.o.store.updateIdpLink(current);
    await this.updateIdentity(current.identity, res);
    return { ok: true };
  }

  /** New facts from the IdP replace the stored ones; a change of groups is audited. */
  private async updateIdentity(sub: string, res: { email: string | null; name: string | null; groups: string[] | null }): Promise<void> {
    const id = await this.o.store.getIdentity(sub);
    if (!id) return;
    const groups = res.groups ?? id.groups;
    const before = [...id.groups].sort();
    const after = [...groups].sort();
    const changed = before.length !== after.length || before.some((g, i) => g !== after[i]);
    await this.o.store.upsertIdentity({ ...id, groups, email: res.email ?? id.email, name: res.name ?? id.name, lastSeen: this.o.clock.now() });
    if (changed) {
      await this.o.audit('system', 'identity.groups_changed', sub, {
        before: id.groups, after: groups, added: after.filter((g) => !before.includes(g)), removed: before.filter((g) => !after.includes(g)),
      });
    }
  }

  private async fail(rec: IdpLinkRecord, kind: 'refused' | 'unverifiable', reason: string): Promise<LinkCheck> {
    rec.state = 'failed';
    rec.failedAt = this.o.clock.now();
    rec.failKind = kind;
    rec.failReason = reason;
    // The IdP tokens are of no use any more: do not keep them.
    rec.refreshSealed = null;
    rec.accessSealed = null;
    await this.o.store.updateIdpLink(rec);
    this.o.log?.warn({ identity: rec.identity, link: rec.id, kind }, 're-validation failed; credentials of this sign-in end');
    await this.o.audit('system', 'identity.revalidation_failed', rec.identity, { link: rec.id, kind, reason });
    // Live sessions end in the background: the caller gets its answer without waiting for teardown.
    const ending = Promise.resolve().then(() => this.o.onFailed?.(rec)).catch((e: unknown) => {
      this.o.log?.error({ err: e instanceof Error ? e.message : String(e), link: rec.id }, 'ending what depended on a failed sign-in failed');
    }).finally(() => this.ending.delete(ending));
    this.ending.add(ending);
    return { ok: false, status: 401, message: failedMessage(rec) };
  }

  /**
   * When the IdP's latest word on `identity` is a refusal (a refused link newer than every
   * successful re-validation or sign-in), the reason; null otherwise. Registered SSH keys obey it.
   */
  async refusal(identity: string): Promise<string | null> {
    let ok = -Infinity;
    let refused: IdpLinkRecord | null = null;
    for (const l of await this.o.store.listIdpLinks({ identity })) {
      if (l.state === 'ok') ok = Math.max(ok, l.validatedAt);
      else if (l.failKind === 'refused' && (!refused || (l.failedAt ?? 0) > (refused.failedAt ?? 0))) refused = l;
    }
    return refused && (refused.failedAt ?? 0) >= ok ? refused.failReason ?? 'the identity provider refused this identity' : null;
  }

  /** Re-validate every link that is due and still has live credentials. */
  sweep(): Promise<void> {
    this.sweeping ??= (async () => {
      try {
        const now = this.o.clock.now();
        const due = await this.o.store.listIdpLinks({ state: 'ok', validatedBefore: now - this.o.intervalMs + 1, liveAt: now });
        for (const rec of due) {
          const r = await this.check(rec.id);
          if (!r.ok && r.status === 503) break; // the IdP is down: try again next round
        }
      } catch (e) {
        this.o.log?.error({ err: e instanceof Error ? e.message : String(e) }, 're-validation sweep failed');
      } finally {
        this.sweeping = null;
      }
    })();
    return this.sweeping;
  }

  /** Sweep on the clock every interval (live sessions of a disabled person end without any API call). */
  start(): void {
    if (this.o.intervalMs <= 0 || this.timer) return;
    const arm = () => {
      this.timer = this.o.clock.setTimer(this.o.intervalMs, () => { void this.sweep(); arm(); });
    };
    arm();
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  /** Resolves when the sweep and re-validations in flight have finished (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.sweeping || this.inflight.size || this.ending.size) {
      await Promise.allSettled([this.sweeping, ...this.inflight.values(), ...this.ending]);
    }
  }
}

function failedMessage(rec: IdpLinkRecord): string {
  return `the sign-in of ${rec.identity} ended: ${rec.failReason ?? 'the identity provider refused it'}; sign in again`;
}

export type CallerResult =
  | { ok: true; principal: Principal }
  | { ok: false; status: 401 | 503; message: string };

const NO_TOKEN: CallerResult = { ok: false, status: 401, message: 'unknown, expired or revoked API token: sign in again (tollgate login) or create a new token' };
const NO_SESSION: CallerResult = { ok: false, status: 401, message: 'your sign-in has ended; sign in again' };

/** Who is calling, from an API token or a web session cookie, with the IdP re-validation applied. */
export class Callers {
  constructor(private readonly store: Store, private readonly tokens: ApiTokens, private readonly web: WebSessions, private readonly links: IdpLinks) {}

  private async principal(sub: string, via: Principal['via'], mfaAt: number | null, credential: Principal['credential']): Promise<CallerResult> {
    const id = await this.store.getIdentity(sub);
    if (!id) return { ok: false, status: 401, message: `the identity ${sub} is unknown to this gateway` };
    return { ok: true, principal: { sub: id.sub, email: id.email, name: id.name, groups: [...id.groups], mfaAt, via, credential } };
  }

  async fromToken(value: string | Secret): Promise<CallerResult> {
    const v = await this.tokens.verify(value);
    if (!v) return NO_TOKEN;
    const r = v.record;
    const linkId = r.linkId ?? null;
    if (linkId) {
      const c = await this.links.check(linkId);
      if (!c.ok) return c.status === 503 ? c : { ok: false, status: 401, message: `this API token is suspended: ${c.message}` };
    }
    return this.principal(r.identity, 'token', r.mfaAt, { kind: 'token', id: r.id, linkId });
  }

  async fromCookie(value: string | Secret): Promise<CallerResult> {
    const s = await this.web.verify(value);
    if (!s) return NO_SESSION;
    const linkId = s.linkId ?? null;
    if (linkId) {
      const c = await this.links.check(linkId);
      if (!c.ok) return c;
    }
    return this.principal(s.identity, 'web', s.mfaAt, { kind: 'web', id: s.id, linkId });
  }
}
