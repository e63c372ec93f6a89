/**
 * Exclusive check-out: a target whose credential is one shared account (SSH `checkout`) is held by
 * one identity at a time. A second identity's request is refused with the holder's name and
 * expected end, or (whenHeld: queue) waits as `queued` once approved; when the holder checks in
 * (or the grant ends, or is revoked) the account's password rotates (the protocol module's grant-end
 * hook) and the next queued request gets its grant.
 */
import type { Actor, PolicyTarget } from './config.js';
import type { GrantRecord, Store } from '../proxy/store/types.js';
import type { CheckoutAccount } from './base.js';
import { PolicyError } from './errors.js';
import { fmtDuration } from './hours.js';
import { portalPath, recipients } from './notices.js';
import { PolicyGrants } from './grants.js';

/** Who holds a checked-out account, and who waits for it. */
export interface CheckoutView {
  key: string;
  targets: string[];
  whenHeld: CheckoutAccount['whenHeld'];
  holder: { identity: string; grantId: string; target: string; role: string; since: number; expiresAt: number } | null;
  queue: { requestId: string; requester: string; target: string; role: string; durationMs: number; queuedAt: number }[];
}

export abstract class PolicyCheckout<T extends PolicyTarget = PolicyTarget> extends PolicyGrants<T> {
  protected checkoutOf(target: string): CheckoutAccount | null {
    if (!this.target(target)) return null;
    try { return this.checkoutFn?.(target) ?? null; } catch { return null; }
  }

  /** The targets that share one checked-out account. */
  protected checkoutTargets(key: string): string[] {
    return this.cfg.targets.filter((t) => this.checkoutOf(t.name)?.key === key).map((t) => t.name);
  }

  /** The active grant of someone other than `sub` on the account, if any. */
  protected async holderOf(key: string, sub: string | null, tx: Store = this.store): Promise<GrantRecord | null> {
    const now = this.clock.now();
    for (const name of this.checkoutTargets(key)) {
      const held = (await tx.listGrants({ target: name, state: 'active' })).find((g) => g.expiresAt > now && g.identity !== sub);
      if (held) return held;
    }
    return null;
  }

  protected heldMessage(target: string, g: GrantRecord): string {
    return `${target} is checked out by ${g.identity} until ${new Date(g.expiresAt).toISOString()} (in ${fmtDuration(Math.max(60_000, Math.ceil((g.expiresAt - this.clock.now()) / 60_000) * 60_000))}); ask them to check it in, or try again then`;
  }

  /** Refuse a new request for a held account (whenHeld: refuse). */
  protected async assertNotHeld(target: string, sub: string, tx: Store = this.store): Promise<void> {
    const co = this.checkoutOf(target);
    if (!co || co.whenHeld !== 'refuse') return;
    const held = await this.holderOf(co.key, sub, tx);
    if (held) throw new PolicyError('conflict', this.heldMessage(target, held));
  }

  /** Every checked-out account: its holder and its queue. */
  async checkouts(): Promise<CheckoutView[]> {
    const keys = new Map<string, CheckoutAccount>();
    for (const t of this.cfg.targets) {
      const co = this.checkoutOf(t.name);
      if (co && !keys.has(co.key)) keys.set(co.key, co);
    }
    const queued = await this.store.listRequests({ state: 'queued' });
    const out: CheckoutView[] = [];
    for (const [key, co] of keys) {
      const targets = this.checkoutTargets(key);
      const held = await this.holderOf(key, null);
      out.push({
        key, targets, whenHeld: co.whenHeld,
        holder: held ? { identity: held.identity, grantId: held.id, target: held.target, role: held.role, since: held.startsAt, expiresAt: held.expiresAt } : null,
        queue: queued.filter((r) => targets.includes(r.target)).sort((a, b) => (a.decidedAt ?? 0) - (b.decidedAt ?? 0))
          .map((r) => ({ requestId: r.id, requester: r.requester, target: r.target, role: r.role, durationMs: r.durationMs, queuedAt: r.decidedAt ?? r.createdAt })),
      });
    }
    return out;
  }

  /** Check in: the holder (or an approver) hands the account back before the grant's end; its password rotates. */
  async checkIn(actor: Actor, grantId: string): Promise<GrantRecord> {
    return this.endGrant(actor, grantId, `checked in by ${actor.sub}`, 'grant.checked_in', (g) => {
      if (!this.checkoutOf(g.target)) throw new PolicyError('invalid', `${g.target} is not a checked-out account; revoke the grant instead`);
      if (!this.mayRevoke(actor, g)) throw new PolicyError('not_approver', 'only the holder or an approver can check this account in');
    });
  }

  protected override async grantClosed(g: GrantRecord): Promise<void> {
    await super.grantClosed(g);
    const co = this.checkoutOf(g.target);
    if (co) await this.advanceQueue(co.key);
  }

  /** The account is free: the longest-waiting queued request gets its grant now, for its duration. */
  protected async advanceQueue(key: string): Promise<void> {
    const out = await this.exclusive(() => this.store.transaction(async (tx) => {
      if (await this.holderOf(key, null, tx)) return null;
      const targets = this.checkoutTargets(key);
      const next = (await tx.listRequests({ state: 'queued' })).filter((r) => targets.includes(r.target))
        .sort((a, b) => (a.decidedAt ?? 0) - (b.decidedAt ?? 0) || a.createdAt - b.createdAt)[0];
      if (!next) return null;
      const now = this.clock.now();
      const grant = this.newGrant(next, now, false);
      const r = await tx.claim('requests', next.id, { state: 'queued' }, { state: 'approved', grantId: grant.id });
      if (!r) return null;
      await tx.insertGrant(grant);
      return { r, grant };
    }));
    if (!out) return;
    await this.audit('system', 'grant.created', out.grant.id, { ...this.grantData(out.grant), checkout: key, queuedSince: out.r.decidedAt });
    this.armGrant(out.grant);
    this.notify({
      kind: 'checkout.ready', to: recipients([out.r.requester]), path: portalPath.access(),
      requestId: out.r.id, grantId: out.grant.id, requester: out.r.requester, target: out.r.target, role: out.r.role, expiresAt: out.grant.expiresAt,
    });
  }

  /** Queued requests whose account is free (its holder ended on another gateway, or a failure before): hand it on. */
  protected override async sweep(): Promise<void> {
    await super.sweep();
    const queued = await this.store.listRequests({ state: 'queued' });
    const keys = new Set(queued.map((r) => this.checkoutOf(r.target)?.key).filter((k): k is string => !!k));
    for (const key of keys) {
      if (!this.running) return;
      await this.catchUp(`checkout ${key} queue`, () => this.advanceQueue(key), () => undefined);
    }
  }

  /** Whether the role lets its holder reveal the checked-out account's current password (roles[].reveal: true). */
  revealAllowed(target: string, role: string): boolean {
    if (!this.checkoutOf(target)) return false;
    const r = this.target(target)?.roles.find((x) => x.name === role) as { reveal?: unknown } | undefined;
    return r?.reveal === true;
  }

  /**
   * Reveal (Keeper's "view password"): only the holder, only during the active grant, only when the
   * grant's role allows it. Returns the grant; the caller checks MFA, reveals, audits. The password
   * rotates at check-in / grant end / revoke as after any check-out.
   */
  async assertMayReveal(actor: Actor, grantId: string): Promise<GrantRecord> {
    const g = typeof grantId === 'string' && grantId ? await this.store.getGrant(grantId) : null;
    if (!g || g.identity !== actor.sub) throw new PolicyError('not_found', 'no such grant of yours: only the holder of a checked-out account can reveal its password');
    if (!this.checkoutOf(g.target)) throw new PolicyError('invalid', `${g.target} is not a checked-out account: there is no password to reveal`);
    if (g.state !== 'active' || g.expiresAt <= this.clock.now()) throw new PolicyError('conflict', `the grant is ${g.state === 'active' ? 'expired' : g.state}: the password is revealed only while you hold the account`);
    if (!this.revealAllowed(g.target, g.role)) throw new PolicyError('not_eligible', `the role ${g.role} on ${g.target} does not allow revealing the password (roles[].reveal)`);
    return g;
  }

  /** Why an approved request waits (state queued). */
  protected queuedReason(target: string, held: GrantRecord): string {
    return `approved; queued until ${held.identity} checks ${target} in (the grant ends ${new Date(held.expiresAt).toISOString()})`;
  }
}
