/**
 * Whom the gateway talks to over SSH. Every admin and session connection checks the target's host
 * key: against options.hostKeyFingerprint when configured, else against the key pinned at the first
 * successful admin connection (trust on first use: `targets check`, or the first session's account
 * set-up). The pin lives in the store and is audited; a changed key is refused and audited as an
 * alert until someone re-pins it (`tollgate targets repin <target>`) after a legitimate rotation.
 * Session connections never pin: without a pin, an admin connection pins first.
 */
import type { ProtocolContext, TargetConfig } from '../types.js';
import { fingerprintOf, readStrings } from './cert.js';

export interface HostKeyPin { fingerprint: string; keyType: string; address: string; pinnedAt: number }
export interface ExpectedKey { fingerprint: string; source: 'config' | 'pin' }

const kvKey = (target: string) => `hostkey:${target}`;

export async function readPin(ctx: ProtocolContext, target: TargetConfig): Promise<HostKeyPin | null> {
  const raw = await ctx.state.kv.get(kvKey(target.name));
  if (!raw) return null;
  try {
    const p = JSON.parse(raw) as HostKeyPin;
    return typeof p.fingerprint === 'string' && p.fingerprint ? p : null;
  } catch {
    return null;
  }
}

async function writePin(ctx: ProtocolContext, target: TargetConfig, offered: { fingerprint: string; keyType: string }): Promise<void> {
  const pin: HostKeyPin = { ...offered, address: target.address, pinnedAt: ctx.clock.now() };
  await ctx.state.kv.set(kvKey(target.name), JSON.stringify(pin));
}

function configured(target: TargetConfig): string | null {
  const fp = target.options.hostKeyFingerprint;
  return typeof fp === 'string' && fp ? fp : null;
}

/** The key a connection to the target must present, or null when nothing is pinned yet. */
export async function expectedHostKey(ctx: ProtocolContext, target: TargetConfig): Promise<ExpectedKey | null> {
  const fp = configured(target);
  if (fp) return { fingerprint: fp, source: 'config' };
  const pin = await readPin(ctx, target);
  return pin ? { fingerprint: pin.fingerprint, source: 'pin' } : null;
}

/** The error a changed host key gives: says what was expected, what came, and how to re-pin. */
export class HostKeyChanged extends Error {
  constructor(readonly target: string, readonly expected: ExpectedKey | null, readonly offered: string) {
    super(!expected
      ? `refusing to connect to ${target}: no host key is pinned for it (offered ${offered})`
      : expected.source === 'config'
        ? `refusing to connect to ${target}: the host key does not match options.hostKeyFingerprint (expected ${expected.fingerprint}, offered ${offered})`
        : `refusing to connect to ${target}: its SSH host key changed (pinned ${expected.fingerprint}, now offered ${offered}); `
          + `if the key was rotated on purpose, re-pin it: tollgate targets repin ${target}`);
    this.name = 'HostKeyChanged';
  }
}

/**
 * The host key check of one connection: `verifier` for ssh2 (it records what the target offered),
 * `afterLogin()` pins a first key, `refused()` explains (and audits) a refusal.
 */
export class HostKeyCheck {
  offered: { fingerprint: string; keyType: string } | null = null;
  private rejected = false;

  /** tofu: accept an unpinned target's key (admin connections only). */
  constructor(private readonly ctx: ProtocolContext, private readonly target: TargetConfig, readonly expected: ExpectedKey | null, private readonly tofu: boolean, private readonly via: string) {}

  readonly verifier = (key: Buffer): boolean => {
    let keyType = 'unknown';
    try { keyType = readStrings(key)[0]?.toString('latin1') ?? keyType; } catch { /* keep unknown */ }
    this.offered = { fingerprint: fingerprintOf(key), keyType };
    const ok = this.expected ? this.offered.fingerprint === this.expected.fingerprint : this.tofu;
    this.rejected = !ok;
    return ok;
  };

  /** After a successful login: pin the key of a target that had none (trust on first use). */
  async afterLogin(): Promise<void> {
    if (this.expected || !this.offered) return;
    const now = await readPin(this.ctx, this.target);
    if (now) {
      // Pinned meanwhile by a parallel first connection: it must have seen the same key.
      if (now.fingerprint !== this.offered.fingerprint) throw await this.refusal(new HostKeyChanged(this.target.name, { fingerprint: now.fingerprint, source: 'pin' }, this.offered.fingerprint));
      return;
    }
    await writePin(this.ctx, this.target, this.offered);
    await this.ctx.state.audit('ssh.hostkey.pinned', this.target.name, {
      target: this.target.name, address: this.target.address, fingerprint: this.offered.fingerprint, keyType: this.offered.keyType, via: this.via,
    });
    this.ctx.log.info({ target: this.target.name, fingerprint: this.offered.fingerprint }, 'ssh: target host key pinned (first use)');
  }

  /** When the connection failed: the host-key refusal (audited, as an alert) or null for any other failure. */
  async refused(): Promise<HostKeyChanged | null> {
    if (!this.rejected || !this.offered) return null;
    return this.refusal(new HostKeyChanged(this.target.name, this.expected, this.offered.fingerprint));
  }

  private async refusal(e: HostKeyChanged): Promise<HostKeyChanged> {
    await this.ctx.state.audit('ssh.hostkey.refused', this.target.name, {
      target: this.target.name, address: this.target.address, expected: e.expected?.fingerprint ?? null, source: e.expected?.source ?? null,
      offered: e.offered, via: this.via,
    }, { alert: true }).catch((err) => this.ctx.log.error({ err }, 'ssh: could not audit a host key refusal'));
    this.ctx.log.warn({ target: this.target.name, expected: e.expected?.fingerprint, offered: e.offered }, 'ssh: target host key refused');
    return e;
  }
}

export async function hostKeyCheck(ctx: ProtocolContext, target: TargetConfig, opts: { tofu: boolean; via: string }): Promise<HostKeyCheck> {
  return new HostKeyCheck(ctx, target, await expectedHostKey(ctx, target), opts.tofu, opts.via);
}

/** Replace the pin with what the target presents after a login (re-pin); the caller authenticated as admin. */
export async function replacePin(ctx: ProtocolContext, target: TargetConfig, offered: { fingerprint: string; keyType: string }): Promise<void> {
  await writePin(ctx, target, offered);
}
