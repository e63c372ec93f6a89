/**
 * The credential vault: target admin credentials kept in Tollgate instead of the config file
 * (`credentials.admin.password: {vault: true}`). Each one is sealed with AES-256-GCM under a key
 * derived (HKDF) from the gateway key, which lives outside the store; the additional data binds the
 * ciphertext to its target and field, so a sealed value copied onto another row does not open. A
 * copy of the store alone reveals nothing usable. Nobody reads a credential back through the API or
 * the CLI: they see when it was set, by whom, when it was rotated and when the next rotation is due.
 * Every change is audited. Rotation lives in vault-rotation.ts.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { Secret, isVaultRef } from '../auth/secret.js';
import type { GatewayKey } from '../auth/keys.js';
import type { Clock } from '../policies/clock.js';
import type { TargetConfig } from '../protocols/config.js';
import type { Store, VaultCredentialRecord } from './store/types.js';
import type { AuditLog } from './audit.js';
import { RefusedError } from './errors.js';

/** The HKDF label of the vault's key (derived from the gateway key). */
export const VAULT_KEY_LABEL = 'vault';
const VERSION = 'v1';
/** Longest credential the vault takes (a private key PEM fits many times over). */
export const MAX_CREDENTIAL_BYTES = 16 * 1024;

export const vaultId = (target: string, field: string) => `${target}/${field}`;

/** The value at a dotted path under a target's credentials (`admin.password`). */
export function credentialRef(target: TargetConfig, field: string): unknown {
  let v: unknown = target.credentials;
  for (const k of field.split('.')) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

/** The credential fields of a target that are kept in the vault ({vault: true}). */
export function vaultFields(target: TargetConfig): string[] {
  const out: string[] = [];
  const walk = (v: unknown, path: string[]) => {
    if (isVaultRef(v)) { out.push(path.join('.')); return; }
    if (v && typeof v === 'object' && !Array.isArray(v)) for (const [k, x] of Object.entries(v)) walk(x, [...path, k]);
  };
  walk(target.credentials, []);
  return out;
}

/** What the API and CLI show of a vault credential: never the secret. */
export interface VaultMetadata {
  target: string;
  field: string;
  /** Whether a credential is stored (a field configured as {vault: true} but not set yet: false). */
  set: boolean;
  setAt: string | null;
  setBy: string | null;
  rotatedAt: string | null;
  /** When the next scheduled rotation is due (null: none scheduled). */
  nextRotationAt: string | null;
  /** A rotation in progress (or interrupted by a crash, recovered at the next sweep). */
  rotating: boolean;
  failures: number;
  lastFailure: { at: string; reason: string } | null;
  version: number;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export interface VaultDeps {
  store: Store;
  key: Pick<GatewayKey, 'deriveKey'>;
  clock: Clock;
  audit: Pick<AuditLog, 'append'>;
  /** The targets of the current config. */
  targets(): TargetConfig[];
  /** The rotation interval of a target's field (ms), or null when it does not rotate (vault-rotation.ts). */
  rotationInterval(target: TargetConfig, field: string): number | null;
}

export class Vault {
  private readonly key: Buffer;
  constructor(private readonly d: VaultDeps) {
    this.key = d.key.deriveKey(VAULT_KEY_LABEL);
  }

  private aad(target: string, field: string): Buffer {
    return Buffer.from(`tollgate-vault:${VERSION}\u0000${target}\u0000${field}`, 'utf8');
  }

  /** Seal a credential for one target and field. */
  seal(target: string, field: string, secret: Secret): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, iv);
    c.setAAD(this.aad(target, field));
    const ct = Buffer.concat([c.update(Buffer.from(secret.reveal(), 'utf8')), c.final()]);
    return `${VERSION}.${Buffer.concat([iv, c.getAuthTag(), ct]).toString('base64url')}`;
  }

  /** Open a sealed credential; null when it was tampered with, sealed for another target/field or with another key. */
  open(target: string, field: string, sealed: string | null): Secret | null {
    if (!sealed || !sealed.startsWith(`${VERSION}.`)) return null;
    const buf = Buffer.from(sealed.slice(VERSION.length + 1), 'base64url');
    if (buf.length < 28) return null;
    try {
      const d = createDecipheriv('aes-256-gcm', this.key, buf.subarray(0, 12));
      d.setAAD(this.aad(target, field));
      d.setAuthTag(buf.subarray(12, 28));
      return new Secret(Buffer.concat([d.update(buf.subarray(28)), d.final()]).toString('utf8'));
    } catch {
      return null;
    }
  }

  /** The target by name, refusing one whose field is not kept in the vault. */
  target(name: string, field?: string): { target: TargetConfig; fields: string[] } {
    const target = this.d.targets().find((t) => t.name === name);
    if (!target) throw new RefusedError('not_found', 'no such target');
    const fields = vaultFields(target);
    if (!fields.length) throw new RefusedError('conflict', `target ${name} keeps no credential in the vault: set credentials.admin.password to {vault: true} in the config first`);
    if (field !== undefined && !fields.includes(field)) throw new RefusedError('invalid', `field: one of ${fields.join(', ')} (the fields of ${name} configured as {vault: true})`, 'field');
    return { target, fields };
  }

  /** Store a credential given by a person (replaces the current one; a rotation in progress is abandoned). Audited, never the value. */
  async set(actor: string, name: string, field: string | undefined, secret: Secret, opts: { via?: string | null } = {}): Promise<VaultMetadata> {
    const { target, fields } = this.target(name, field);
    const f = field ?? fields[0]!;
    const value = secret.reveal();
    if (!value.length) throw new RefusedError('invalid', 'secret: the credential must not be empty', 'secret');
    if (Buffer.byteLength(value) > MAX_CREDENTIAL_BYTES) throw new RefusedError('invalid', `secret: at most ${MAX_CREDENTIAL_BYTES} bytes`, 'secret');
    const now = this.d.clock.now();
    const id = vaultId(target.name, f);
    const prev = await this.d.store.getVaultCredential(id);
    const every = this.d.rotationInterval(target, f);
    const rec: VaultCredentialRecord = {
      id, target: target.name, field: f, sealed: this.seal(target.name, f, secret), pendingSealed: null, setAt: now, setBy: actor,
      rotatedAt: prev?.rotatedAt ?? null, nextRotationAt: every === null ? null : now + every, failures: 0, lastFailure: null, lastFailureAt: null,
      version: (prev?.version ?? 0) + 1,
    };
    await this.d.store.upsertVaultCredential(rec);
    await this.d.audit.append(actor, 'credential.set', target.name, { target: target.name, field: f, version: rec.version, replaced: !!prev, via: opts.via ?? null });
    return this.metadataOf(target.name, f, rec);
  }

  /** What may be shown of a target's vault credentials. */
  async show(name: string): Promise<VaultMetadata[]> {
    const { target, fields } = this.target(name);
    const recs = await this.d.store.listVaultCredentials({ target: target.name });
    return fields.map((f) => this.metadataOf(target.name, f, recs.find((r) => r.field === f) ?? null));
  }

  /** Every target with vault fields, and their metadata (the SOC's overview). */
  async list(): Promise<VaultMetadata[]> {
    const recs = await this.d.store.listVaultCredentials();
    return this.d.targets().flatMap((t) => vaultFields(t).map((f) => this.metadataOf(t.name, f, recs.find((r) => r.target === t.name && r.field === f) ?? null)));
  }

  metadataOf(target: string, field: string, r: VaultCredentialRecord | null): VaultMetadata {
    return {
      target, field, set: !!r, setAt: iso(r?.setAt ?? null), setBy: r?.setBy ?? null, rotatedAt: iso(r?.rotatedAt ?? null),
      nextRotationAt: iso(r?.nextRotationAt ?? null), rotating: !!r?.pendingSealed, failures: r?.failures ?? 0,
      lastFailure: r?.lastFailure && r.lastFailureAt !== null ? { at: iso(r.lastFailureAt)!, reason: r.lastFailure } : null, version: r?.version ?? 0,
    };
  }

  /** The current credential of a target's field, for the gateway's own use (the admin login). */
  async current(target: string, field: string): Promise<Secret> {
    const r = await this.d.store.getVaultCredential(vaultId(target, field));
    if (!r) throw new VaultError(`targets.${target}.credentials.${field} is kept in the vault but not set yet: run tollgate credentials set ${target}`);
    const s = this.open(target, field, r.sealed);
    if (!s) throw new VaultError(`targets.${target}.credentials.${field}: the vault's copy does not open with this gateway key (another key, or the row was altered)`);
    return s;
  }
}

/** A vault credential the gateway needs but cannot use (not set, or sealed with another key). Never carries the secret. */
export class VaultError extends Error {
  constructor(message: string) { super(message); this.name = 'VaultError'; }
}
