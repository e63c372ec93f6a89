import { randomUUID } from 'node:crypto';
import type { Store, GrantRecord, IdentityRecord, ConnectionSecretRecord } from './store/types.js';
import type { Clock } from '../policies/clock.js';
import type { AuthOutcome, AuthRequest, RefusalCode, SecretCandidate } from '../protocols/types.js';
import type { CredentialRef, Principal } from '../auth/types.js';
import type { Secret } from '../auth/secret.js';
import { codeRefusal, type CodeCheck } from '../auth/mfa.js';
import type { ConsumeResult } from '../auth/credentials.js';
import type { TargetConfig } from '../protocols/config.js';
import type { AuditLog } from './audit.js';
import { lockMatches } from './sessions.js';
import { FailureThrottle, type ThrottleOptions } from './limits.js';
import { sourceOf } from '../protocols/net.js';

/** What access needs from auth/'s ConnectionSecrets. */
export interface SecretVerifier {
  consume(secret: string, opts: { target: string; role?: string; protocol: string }): Promise<ConsumeResult>;
  consumeById(id: string, opts: { target: string; role?: string; protocol: string }): Promise<ConsumeResult>;
  pending(opts: { target: string; role?: string; protocol: string }): Promise<SecretCandidate[]>;
}

export interface AccessDeps {
  store: Store;
  clock: Clock;
  audit: AuditLog;
  secrets: SecretVerifier;
  target(name: string): TargetConfig | undefined;
  withinHours(target: string, role: string, at: number, grant?: GrantRecord): boolean;
  activeGrant(sub: string, target: string, role?: string): Promise<GrantRecord | null>;
  /** Failed secret attempts per source address (gateway.maxFailures, failureWindow, failureCooldown). */
  throttle?: ThrottleOptions;
  /** The alert when a source address starts a cooldown. */
  notify?(event: Record<string, unknown>): void;
  /** Why the IdP's latest word on an identity is a refusal (registered keys then stop working), or null. */
  idpRefusal?(sub: string): Promise<string | null>;
  /** Why the credential behind an out-of-band principal no longer stands (revoked token, failed IdP sign-in), or null. */
  credentialEnded?(c: CredentialRef): Promise<string | null>;
  /** MFA at connect time (mfaAtConnect, critical targets): whether a grant needs it, freshness, authenticator codes. */
  connectMfa?: {
    needed(grant: GrantRecord): Promise<boolean>;
    fresh(p: Principal): boolean;
    verify(sub: string, code: Secret): Promise<CodeCheck>;
  };
}

/** The credential recorded on a connection secret ('token:<id>', 'web:<id>'), as a reference. */
function issuerOf(r: ConnectionSecretRecord): CredentialRef | undefined {
  const m = /^(token|web):(.+)$/.exec(r.issuedBy ?? '');
  return m ? { kind: m[1] as 'token' | 'web', id: m[2]!, linkId: r.linkId ?? null } : undefined;
}

/** Refusals that say "this secret (or name) was wrong": what guessing produces, and what is throttled. */
const GUESS_CODES: ReadonlySet<RefusalCode> = new Set(['bad_secret', 'unknown_target', 'unknown_role']);

/** What the client reads in its protocol when guessing is throttled. */
export function throttledMessage(ms: number): string {
  return `Tollgate: too many failed attempts; try again in ${Math.max(1, Math.ceil(ms / 1000))} s.`;
}

const printable = (s: string) => s.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 64);

export function parseUsername(username: string): { target: string; role?: string } {
  const i = username.indexOf(':');
  return i < 0 ? { target: username } : { target: username.slice(0, i), role: username.slice(i + 1) || undefined };
}

export function principalFromIdentity(id: IdentityRecord, via: Principal['via'], mfaAt: number | null = null): Principal {
  return { sub: id.sub, email: id.email, name: id.name, groups: id.groups, mfaAt, via };
}

/** Decides whether a native client may reach a target now. Every refusal is audited with its reason. */
export class Access {
  readonly throttle: FailureThrottle;

  constructor(private deps: AccessDeps) {
    this.throttle = new FailureThrottle(deps.clock, deps.throttle ?? { maxFailures: 10, windowMs: 5 * 60_000, cooldownMs: 5 * 60_000 });
  }

  /**
   * Audit a refusal. A guess (wrong secret, unknown target or role) by a client that proved no
   * identity counts against its address; and before sign-in every guess reads the same, so the
   * answers do not tell which target and role names exist (the audit keeps the real reason).
   */
  private async refuse(req: AuthRequest, code: RefusalCode, reason: string, actor = 'anonymous'): Promise<AuthOutcome> {
    await this.deps.audit.append(actor, 'access.refused', null, {
      protocol: req.protocol, username: req.username.slice(0, 200), clientAddr: req.clientAddr, code, reason,
    });
    if (!GUESS_CODES.has(code) || !guessing(req)) return { ok: false, code, reason };
    const started = this.throttle.fail(req.clientAddr, parseUsername(req.username).target);
    // The alert (gw.notify audits it too): a source just started a cooldown.
    if (started) this.deps.notify?.({ kind: 'throttled', source: started.source, failures: started.failures, targets: started.targets, until: new Date(started.until).toISOString() });
    return { ok: false, code: 'bad_secret', reason: `Tollgate: wrong connection secret for ${printable(req.username)}.` };
  }

  /** While a cooldown runs: refuse (and audit as throttled) before any secret is looked up. */
  private async throttled(req: AuthRequest): Promise<AuthOutcome | null> {
    if (!guessing(req)) return null;
    const left = this.throttle.blockedFor(req.clientAddr);
    if (!left) return null;
    const reason = throttledMessage(left);
    await this.deps.audit.append('anonymous', 'access.throttled', null, {
      protocol: req.protocol, username: req.username.slice(0, 200), clientAddr: req.clientAddr, source: sourceOf(req.clientAddr),
      retryInSeconds: Math.ceil(left / 1000),
    });
    return { ok: false, code: 'throttled', reason };
  }

  async pendingSecrets(username: string, protocol: string, clientAddr: string): Promise<SecretCandidate[]> {
    const { target, role } = parseUsername(username);
    if (!this.deps.target(target) || this.throttle.blockedFor(clientAddr)) return [];
    return this.deps.secrets.pending({ target, role, protocol });
  }

  async authenticate(req: AuthRequest): Promise<AuthOutcome> {
    const now = this.deps.clock.now();
    const blocked = await this.throttled(req);
    if (blocked) return blocked;
    const { target: targetName, role: askedRole } = parseUsername(req.username);
    const target = this.deps.target(targetName);
    if (!target || (askedRole && !target.roles.some((r) => r.name === askedRole))) {
      // A key that is not registered proves nobody: the same answer as for an existing target, so the client moves on.
      if (req.publicKeyFingerprint && !req.principal && !(await this.deps.store.listPublicKeys({ fingerprint: req.publicKeyFingerprint })).length) {
        return this.refuse(req, 'bad_key', 'Tollgate: this public key is not registered with Tollgate.');
      }
      return !target
        ? this.refuse(req, 'unknown_target', `Tollgate: there is no target named "${printable(targetName)}".`)
        : this.refuse(req, 'unknown_role', `Tollgate: target ${target.name} has no role "${printable(askedRole!)}".`);
    }

    let principal: Principal | null = null;
    let grant: GrantRecord | null = null;
    let secretId: string | undefined;

    if (req.secret || req.provenSecretId) {
      const opts = { target: target.name, role: askedRole, protocol: req.protocol };
      const res = req.provenSecretId
        ? await this.deps.secrets.consumeById(req.provenSecretId, opts)
        : await this.deps.secrets.consume(req.secret!.reveal(), opts);
      if (!res.ok) {
        const msg = res.code === 'secret_used'
          ? 'Tollgate: this connection secret was already used; get a fresh one (tollgate connect, or the portal).'
          : res.code === 'secret_expired'
            ? 'Tollgate: this connection secret has expired; get a fresh one.'
            : res.code === 'secret_revoked'
              ? 'Tollgate: the API token or sign-in that issued this connection secret was revoked or has ended; sign in again and get a fresh one.'
              : `Tollgate: wrong connection secret for ${target.name}.`;
        return this.refuse(req, res.code === 'secret_revoked' ? 'secret_expired' : res.code, msg);
      }
      secretId = res.record.id;
      const identity = await this.deps.store.getIdentity(res.record.identity);
      if (!identity) return this.refuse(req, 'bad_secret', 'Tollgate: the identity behind this secret is unknown.');
      principal = { ...principalFromIdentity(identity, 'secret'), credential: issuerOf(res.record) };
      grant = await this.deps.store.getGrant(res.record.grantId);
    } else if (req.publicKeyFingerprint) {
      const keys = await this.deps.store.listPublicKeys({ fingerprint: req.publicKeyFingerprint });
      if (!keys.length) return this.refuse(req, 'bad_key', 'Tollgate: this public key is not registered with Tollgate.');
      const identity = await this.deps.store.getIdentity(keys[0]!.identity);
      if (!identity) return this.refuse(req, 'bad_key', 'Tollgate: the identity behind this key is unknown.');
      const refusal = await this.deps.idpRefusal?.(identity.sub);
      if (refusal) {
        return this.refuse(req, 'denied', `Tollgate: the identity provider no longer confirms ${identity.sub} (${refusal}); sign in again before using a key.`, identity.sub);
      }
      principal = { ...principalFromIdentity(identity, 'secret'), credential: { kind: 'key', id: keys[0]!.id, linkId: null } };
      grant = await this.deps.activeGrant(identity.sub, target.name, askedRole);
    } else if (req.principal) {
      // Established elsewhere (browser approval, an app's hand-off): it stands only while its credential does.
      const ended = req.principal.credential ? await this.deps.credentialEnded?.(req.principal.credential) : null;
      if (ended) return this.refuse(req, 'denied', `Tollgate: the sign-in of ${req.principal.sub} has ended (${ended}); sign in again.`, req.principal.sub);
      principal = req.principal;
      grant = await this.deps.activeGrant(principal.sub, target.name, askedRole);
    } else {
      return this.refuse(req, 'bad_secret', 'Tollgate: a connection secret is required.');
    }

    const actor = principal.sub;
    if (!grant) return this.refuse(req, 'no_grant', `Tollgate: ${actor} has no active grant for ${target.name}${askedRole ? ` as ${askedRole}` : ''}. Request access first.`, actor);
    if (grant.state !== 'active' || grant.expiresAt <= now) {
      return this.refuse(req, 'grant_expired', `Tollgate: the grant for ${target.name} is ${grant.state === 'revoked' ? 'revoked' : 'expired'}.`, actor);
    }
    if (askedRole && grant.role !== askedRole) {
      return this.refuse(req, 'no_grant', `Tollgate: the grant for ${target.name} is for role ${grant.role}, not ${askedRole}.`, actor);
    }
    const role = target.roles.find((r) => r.name === grant!.role);
    if (!role) return this.refuse(req, 'unknown_role', `Tollgate: role ${grant.role} is no longer configured on ${target.name}.`, actor);
    const locks = (await this.deps.store.listLocks({ active: true, at: now }))
      .filter((l) => lockMatches(l, { identity: actor, target: target.name, grantId: grant!.id }));
    if (locks.length) return this.refuse(req, 'locked', `Tollgate: access is locked (${locks[0]!.scope} ${locks[0]!.value}): ${locks[0]!.reason}`, actor);
    if (!this.deps.withinHours(target.name, role.name, now, grant)) {
      return this.refuse(req, 'outside_hours', `Tollgate: ${target.name} may only be used within its working hours.`, actor);
    }
    // A connection secret for such a target was only issued with a fresh MFA (and lives no longer
    // than it); a key or a browser sign-in must bring one now: the web session's, or a typed code.
    let mfa: 'sign-in' | 'code' | null = null;
    if (!req.secret && !req.provenSecretId && this.deps.connectMfa && await this.deps.connectMfa.needed(grant)) {
      if (this.deps.connectMfa.fresh(principal)) mfa = 'sign-in';
      else if (req.mfaCode) {
        const r = await this.deps.connectMfa.verify(actor, req.mfaCode);
        if (r !== 'ok') return this.refuse(req, 'mfa_required', `Tollgate: ${target.name} needs MFA to connect, and ${codeRefusal(r)}.`, actor);
        mfa = 'code';
      } else {
        return this.refuse(req, 'mfa_required', `Tollgate: ${target.name} needs MFA to connect: type your authenticator code, or sign in again with MFA.`, actor);
      }
    }
    await this.deps.audit.append(actor, 'access.allowed', grant.id, {
      protocol: req.protocol, target: target.name, role: role.name, clientAddr: req.clientAddr,
      via: req.secret ? 'secret' : req.provenSecretId ? 'secret-proof' : req.publicKeyFingerprint ? 'public-key' : 'browser',
      secretId: secretId ?? null, ...(mfa ? { mfa } : {}),
    });
    return { ok: true, auth: { principal, grant, target, role, secretId } };
  }
}

/** A client that has proved no identity yet: it sent a secret (typed or proven by challenge-response), or nothing at all. */
function guessing(req: AuthRequest): boolean {
  return !req.principal && !req.publicKeyFingerprint;
}

export interface PendingApproval {
  req: Omit<AuthRequest, 'secret' | 'principal'>;
  createdAt: number;
  expiresAt: number;
  /** The identity that opened it first: only it may decide, and the session runs as it. */
  boundTo: string | null;
}

export type ApprovalRefusal = { ok: false; code: 'gone' | 'other_identity'; reason: string };
export type ApprovalDecision = { ok: true; outcome: AuthOutcome } | ApprovalRefusal;

/**
 * Pending browser approvals of native logins (SSH keyboard-interactive). The SSH user name names
 * a target, not a person, so an approval is bound to the first signed-in identity that opens its
 * page; only that identity may approve or deny it, and the session runs as that identity.
 */
export class BrowserApprovals {
  private pending = new Map<string, PendingApproval & { resolve: (o: AuthOutcome) => void }>();
  constructor(private clock: Clock, private publicUrl: () => string, private access: Access) {}

  begin(req: Omit<AuthRequest, 'secret' | 'principal'>) {
    const id = randomUUID();
    let resolveFn!: (o: AuthOutcome) => void;
    const done = new Promise<AuthOutcome>((r) => { resolveFn = r; });
    const now = this.clock.now();
    this.pending.set(id, { req, resolve: resolveFn, createdAt: now, expiresAt: now + 10 * 60_000, boundTo: null });
    const url = `${this.publicUrl()}/approve-login/${id}`;
    return {
      url,
      wait: (timeoutMs: number) => {
        const t = setTimeout(() => {
          this.pending.delete(id);
          resolveFn({ ok: false, code: 'denied', reason: 'Tollgate: the sign-in was not approved in time.' });
        }, timeoutMs);
        t.unref();
        return done.finally(() => clearTimeout(t));
      },
      cancel: () => { this.pending.delete(id); resolveFn({ ok: false, code: 'denied', reason: 'Tollgate: cancelled.' }); },
    };
  }

  private live(id: string) {
    const p = this.pending.get(id);
    if (p && p.expiresAt <= this.clock.now()) {
      this.pending.delete(id);
      p.resolve({ ok: false, code: 'denied', reason: 'Tollgate: the sign-in was not approved in time.' });
      return undefined;
    }
    return p;
  }

  /** `sub` opens the approval: the first identity to do so owns it. */
  open(id: string, sub: string): ApprovalRefusal | { ok: true; pending: PendingApproval } {
    const p = this.live(id);
    if (!p) return { ok: false, code: 'gone', reason: 'This sign-in request was already decided or has expired.' };
    p.boundTo ??= sub;
    if (p.boundTo !== sub) return { ok: false, code: 'other_identity', reason: 'This sign-in request was opened by another identity; only that identity can decide it.' };
    return { ok: true, pending: { req: p.req, createdAt: p.createdAt, expiresAt: p.expiresAt, boundTo: p.boundTo } };
  }

  /** The signed-in person approved (or denied) in the browser. Only the identity it is bound to may. */
  async decide(id: string, principal: Principal, approve: boolean): Promise<ApprovalDecision> {
    const opened = this.open(id, principal.sub);
    if (!opened.ok) return opened;
    const p = this.pending.get(id)!;
    this.pending.delete(id);
    let outcome: AuthOutcome = approve
      ? await this.access.authenticate({ ...p.req, principal })
      : { ok: false, code: 'denied', reason: `Tollgate: ${principal.sub} declined this sign-in.` };
    if (outcome.ok && outcome.auth.principal.sub !== p.boundTo) {
      outcome = { ok: false, code: 'denied', reason: 'Tollgate: the approval does not match the identity the session would run as.' };
    }
    p.resolve(outcome);
    return { ok: true, outcome };
  }
}
