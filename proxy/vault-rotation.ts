/**
 * Scheduled rotation of the admin credentials kept in the vault (`credentials.rotate: 24h` on a
 * target, or for every vault credential at the top level). One rotation:
 *   1. claim it in the store (its due time moves forward: exactly one node rotates, cluster-wide;
 *      a node that dies mid-rotation leaves a claim that runs out and another node takes over);
 *   2. generate a new credential and store it sealed as *pending* before the target sees it;
 *   3. log in with the current one and set the new one on the target (the protocol module);
 *   4. verify it with a fresh login;
 *   5. only then make it current and discard the old.
 * A failure keeps the old credential (and says so when the target still takes it), is audited,
 * alerts, and is retried with backoff. A pending credential left by a crash is recovered: the
 * pending one is tried first (it may already be set on the target), then the current one.
 */
import type { Logger } from 'pino';
import { isVaultRef, type Secret } from '../auth/secret.js';
import { parseDuration } from '../policies/config.js';
import type { GatewayConfig } from './config.js';
import type { Clock, TimerHandle } from '../policies/clock.js';
import type { TargetConfig } from '../protocols/config.js';
import type { AdminRotation, ProtocolContext, ProtocolModule } from '../protocols/types.js';
import type { Store, VaultCredentialRecord } from './store/types.js';
import type { AuditLog } from './audit.js';
import { RefusedError } from './errors.js';
import { credentialRef, vaultId, type Vault, type VaultMetadata } from './vault.js';

/** How long a node's claim on a rotation holds (the set and the verification must fit). */
export const ROTATION_CLAIM_MS = 5 * 60_000;

export interface RotationDeps {
  vault: Vault;
  store: Store;
  clock: Clock;
  audit: Pick<AuditLog, 'append'>;
  log: Logger;
  modules: ReadonlyMap<string, ProtocolModule>;
  ctx(protocol: string): ProtocolContext;
  targets(): TargetConfig[];
  /** The alert path (notify command, notifications). */
  alert(event: Record<string, unknown>): void;
  /** How often every node looks for due rotations (gateway.timerSweep). */
  sweepMs: number;
  /** Backoff of failed rotations: the first retry after retryMs, doubling up to retryMaxMs. */
  retryMs: number;
  retryMaxMs: number;
  /** The rotation interval of a target's field (ms), or null. */
  interval(target: TargetConfig, field: string): number | null;
}

export type RotationOutcome = { ok: true; recovered?: boolean; metadata: VaultMetadata } | { ok: false; reason: string; stillOld: boolean; metadata: VaultMetadata };

/** An error's message with any of the given secrets blanked out (a driver may echo a statement). */
function reasonOf(e: unknown, secrets: Secret[]): string {
  let m = String((e as Error)?.message ?? e).slice(0, 500);
  for (const s of secrets) { const v = s.reveal(); if (v) m = m.split(v).join('<secret>'); }
  return m;
}

export class VaultRotation {
  private timer: TimerHandle | null = null;
  private running = false;
  private stopped = false;
  private inFlight = new Set<Promise<unknown>>();

  constructor(private readonly d: RotationDeps) {}

  /** Recover interrupted rotations and begin sweeping. */
  start(): void {
    this.stopped = false;
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
    await Promise.allSettled([...this.inFlight]);
  }

  /** Sweep now and re-arm (the timer, or after a change). */
  kick(): void {
    if (this.stopped) return;
    const p = this.sweep().catch((e) => this.d.log.error({ err: (e as Error).message }, 'vault rotation sweep failed')).finally(() => { this.inFlight.delete(p); void this.arm(); });
    this.inFlight.add(p);
  }

  /** The next sweep: at the next due rotation or after sweepMs, whichever comes first. */
  private async arm(): Promise<void> {
    if (this.stopped) return;
    this.timer?.cancel();
    let wait = this.d.sweepMs;
    try {
      const next = (await this.d.store.listVaultCredentials()).map((r) => r.nextRotationAt).filter((x): x is number => x !== null).sort((a, b) => a - b)[0];
      if (next !== undefined) wait = Math.max(0, Math.min(wait, next - this.d.clock.now()));
    } catch { /* the store is away: try again after sweepMs */ }
    if (this.stopped) return;
    this.timer = this.d.clock.setTimer(wait, () => this.kick());
  }

  /** Rotate every due credential (and recover interrupted ones) that this node claims. */
  async sweep(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const now = this.d.clock.now();
      const due = await this.d.store.listVaultCredentials({ dueAt: now });
      for (const r of due) {
        if (this.stopped) break;
        const target = this.d.targets().find((t) => t.name === r.target);
        if (!target) continue;
        if (!r.pendingSealed && this.d.interval(target, r.field) === null) {
          // No longer scheduled (the config changed): forget the due time.
          await this.d.store.claim('vault', r.id, { nextRotationAt: r.nextRotationAt, version: r.version }, { nextRotationAt: null });
          continue;
        }
        const claimed = await this.d.store.claim('vault', r.id, { nextRotationAt: r.nextRotationAt, version: r.version }, { nextRotationAt: now + ROTATION_CLAIM_MS });
        if (!claimed) continue;
        await this.rotateClaimed(claimed, target, 'system');
      }
    } finally {
      this.running = false;
    }
  }

  /** Rotate one credential now (the API / CLI): claimed like a scheduled one. */
  async rotateNow(actor: string, name: string, field?: string): Promise<RotationOutcome> {
    const { target, fields } = this.d.vault.target(name, field);
    const f = field ?? fields[0]!;
    const rot = this.rotationOf(target, f);
    if (!rot) throw new RefusedError('conflict', `${target.protocol} targets cannot rotate ${f} yet`);
    const r = await this.d.store.getVaultCredential(vaultId(target.name, f));
    if (!r) throw new RefusedError('conflict', `no credential is set for ${target.name} yet: tollgate credentials set ${target.name}`);
    const claimed = await this.d.store.claim('vault', r.id, { nextRotationAt: r.nextRotationAt, version: r.version }, { nextRotationAt: this.d.clock.now() + ROTATION_CLAIM_MS });
    if (!claimed) throw new RefusedError('conflict', 'a rotation of this credential is in progress (on this or another gateway); try again shortly');
    return this.rotateClaimed(claimed, target, actor);
  }

  /** The rotation of a target's field (its protocol module's), or null when it cannot rotate. */
  rotationOf(target: TargetConfig, field: string): AdminRotation | null {
    const rot = this.d.modules.get(target.protocol)?.adminRotation;
    return rot && rot.fields.includes(field) ? rot : null;
  }

  private async rotateClaimed(rec: VaultCredentialRecord, target: TargetConfig, actor: string): Promise<RotationOutcome> {
    const p = this.rotateOne(rec, target, actor);
    this.inFlight.add(p);
    try { return await p; } finally { this.inFlight.delete(p); }
  }

  private async rotateOne(claimed: VaultCredentialRecord, target: TargetConfig, actor: string): Promise<RotationOutcome> {
    const { vault, store, clock } = this.d;
    const field = claimed.field;
    let rec = claimed;
    const base = { target: target.name, field };
    const rot = this.rotationOf(target, field);
    const meta = (r: VaultCredentialRecord) => vault.metadataOf(target.name, field, r);
    const fail = async (r: VaultCredentialRecord, reason: string, stillOld: boolean, set: Partial<VaultCredentialRecord> = {}): Promise<RotationOutcome> => {
      const failures = r.failures + 1;
      const retryIn = Math.min(this.d.retryMs * 2 ** Math.min(failures - 1, 30), this.d.retryMaxMs);
      const now = clock.now();
      const out = await store.claim('vault', r.id, { version: r.version }, { failures, lastFailure: reason, lastFailureAt: now, nextRotationAt: now + retryIn, ...set });
      await this.d.audit.append(actor, 'credential.rotation_failed', target.name, { ...base, reason, stillOld, failures, retryAt: new Date(now + retryIn).toISOString() });
      this.d.alert({ kind: 'alert', action: 'credential.rotation_failed', subject: target.name, ...base, reason, stillOld, failures });
      this.d.log.warn({ ...base, reason, stillOld, failures }, 'rotating a vault credential failed; the old one is kept');
      return { ok: false, reason, stillOld, metadata: meta(out ?? r) };
    };
    if (!rot) return fail(rec, `${target.protocol} targets cannot rotate ${field}`, true);
    const ctx = this.d.ctx(target.protocol);
    const current = vault.open(target.name, field, rec.sealed);
    if (!current) return fail(rec, 'the current credential does not open with this gateway key', false);

    if (rec.pendingSealed) {
      // A rotation was interrupted: the target may already have the pending credential.
      const pending = vault.open(target.name, field, rec.pendingSealed);
      if (pending && await rot.verify(ctx, target, field, pending).then(() => true, () => false)) {
        const done = await this.promote(rec, target, pending, actor, true);
        if (done) return { ok: true, recovered: true, metadata: meta(done) };
        return fail(rec, 'the credential changed while the rotation was recovered', true);
      }
      if (!await rot.verify(ctx, target, field, current).then(() => true, () => false)) {
        return fail(rec, 'an interrupted rotation left neither the current nor the pending credential accepted by the target', false);
      }
      const cleared = await store.claim('vault', rec.id, { version: rec.version }, { pendingSealed: null });
      if (!cleared) return fail(rec, 'the credential changed while the rotation was recovered', true);
      rec = cleared;
      await this.d.audit.append(actor, 'credential.rotation_recovered', target.name, { ...base, kept: 'current' });
    }

    const next = rot.generate(target, field);
    // The new credential is stored (sealed) before the target has it: a crash after the set is recovered from it.
    const pendingRec = await store.claim('vault', rec.id, { version: rec.version }, { pendingSealed: vault.seal(target.name, field, next) });
    if (!pendingRec) return fail(rec, 'the credential changed while it was rotated', true);
    rec = pendingRec;
    try {
      await rot.set(ctx, target, field, current, next);
    } catch (e) {
      return fail(rec, `setting the new credential on the target failed: ${reasonOf(e, [current, next])}`, true, { pendingSealed: null });
    }
    try {
      await rot.verify(ctx, target, field, next);
    } catch (e) {
      const why = reasonOf(e, [current, next]);
      // The set went through but the new one does not log in: does the target still take the old one?
      const oldWorks = await rot.verify(ctx, target, field, current).then(() => true, () => false);
      return fail(rec, `the new credential was set but logging in with it failed: ${why}`, oldWorks, oldWorks ? { pendingSealed: null } : {});
    }
    const done = await this.promote(rec, target, next, actor, false);
    if (!done) return fail(rec, 'the credential changed while it was rotated (the target has the rotated one; set it again)', false);
    return { ok: true, metadata: meta(done) };
  }

  /** Make a verified credential current: the old one is discarded. */
  private async promote(rec: VaultCredentialRecord, target: TargetConfig, next: Secret, actor: string, recovered: boolean): Promise<VaultCredentialRecord | null> {
    const now = this.d.clock.now();
    const every = this.d.interval(target, rec.field);
    const done = await this.d.store.claim('vault', rec.id, { version: rec.version }, {
      sealed: this.d.vault.seal(target.name, rec.field, next), pendingSealed: null, rotatedAt: now, nextRotationAt: every === null ? null : now + every,
      failures: 0, lastFailure: null, lastFailureAt: null, version: rec.version + 1,
    });
    if (done) {
      await this.d.audit.append(actor, 'credential.rotated', target.name, { target: target.name, field: rec.field, version: done.version, recovered, nextRotationAt: done.nextRotationAt === null ? null : new Date(done.nextRotationAt).toISOString() });
      this.d.log.info({ target: target.name, field: rec.field, version: done.version, recovered }, 'vault credential rotated');
    }
    return done;
  }
}

/**
 * How often a target's vault field rotates: the target's credentials.rotate, else the top-level
 * credentials.rotate; null when neither is set, the target says false, the field is not in the
 * vault, or its protocol module cannot rotate it.
 */
export function rotationInterval(
  cfg: Pick<GatewayConfig, 'credentials'>, modules: ReadonlyMap<string, ProtocolModule>, target: TargetConfig, field: string,
): number | null {
  if (!modules.get(target.protocol)?.adminRotation?.fields.includes(field)) return null;
  if (!isVaultRef(credentialRef(target, field))) return null;
  const own = (target.credentials as { rotate?: unknown }).rotate;
  if (own === false) return null;
  const every = own !== undefined ? own as string | number : cfg.credentials.rotate;
  return every === undefined ? null : parseDuration(every);
}
