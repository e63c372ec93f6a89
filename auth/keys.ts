/**
 * The gateway's own key material: one random 32-byte key per name, kept in the store's KV space,
 * used to seal short-lived state (AES-256-GCM with an expiry) and to derive per-purpose keys (HKDF).
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { Store } from '../proxy/store/types.js';
import type { Clock } from '../policies/clock.js';
import { SystemClock } from '../policies/clock.js';

export interface GatewayKey {
  /** Encrypt and authenticate a JSON value; unseal() refuses it after ttlMs (default 10 minutes). */
  seal(value: unknown, ttlMs?: number): string;
  /** The sealed value, or null when it was tampered with, sealed by another key/purpose, or expired. */
  unseal<T = unknown>(sealed: string): T | null;
  /** A stable 32-byte key for one purpose (HKDF-SHA-256 with the label as info). */
  deriveKey(label: string): Buffer;
}

const KV_PREFIX = 'auth.key.';
const VERSION = 'v1';

/** Build the helpers over raw key bytes (32 bytes). */
export function gatewayKey(raw: Buffer, clock: Clock = new SystemClock()): GatewayKey {
  if (raw.length !== 32) throw new Error('gateway key must be 32 bytes');
  const derive = (label: string): Buffer => Buffer.from(hkdfSync('sha256', raw, Buffer.from('tollgate'), Buffer.from(label, 'utf8'), 32));
  const sealKey = derive('seal');
  return {
    seal(value: unknown, ttlMs = 10 * 60_000): string {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', sealKey, iv);
      cipher.setAAD(Buffer.from(VERSION));
      const body = Buffer.from(JSON.stringify({ e: clock.now() + ttlMs, v: value }), 'utf8');
      const ct = Buffer.concat([cipher.update(body), cipher.final()]);
      return `${VERSION}.${Buffer.concat([iv, cipher.getAuthTag(), ct]).toString('base64url')}`;
    },
    unseal<T>(sealed: string): T | null {
      if (typeof sealed !== 'string' || !sealed.startsWith(`${VERSION}.`) || sealed.length > 64 * 1024) return null;
      const buf = Buffer.from(sealed.slice(VERSION.length + 1), 'base64url');
      if (buf.length < 12 + 16 + 1) return null;
      try {
        const decipher = createDecipheriv('aes-256-gcm', sealKey, buf.subarray(0, 12));
        decipher.setAAD(Buffer.from(VERSION));
        decipher.setAuthTag(buf.subarray(12, 28));
        const plain = Buffer.concat([decipher.update(buf.subarray(28)), decipher.final()]);
        const obj = JSON.parse(plain.toString('utf8')) as { e: number; v: T };
        if (typeof obj.e !== 'number' || clock.now() >= obj.e) return null;
        return obj.v;
      } catch {
        return null;
      }
    },
    deriveKey: derive,
  };
}

/** The raw 32-byte key called `name`, created (random) and stored on first use. */
export async function loadOrCreateKeyBytes(store: Store, name: string): Promise<Buffer> {
  const kvKey = KV_PREFIX + name;
  const parse = (v: string | null): Buffer | null => {
    if (!v) return null;
    const b = Buffer.from(v, 'base64');
    return b.length === 32 ? b : null;
  };
  const existing = parse(await store.getKv(kvKey));
  if (existing) return existing;
  await store.setKv(kvKey, randomBytes(32).toString('base64'));
  // Re-read so two gateways racing on first start settle on whatever the store kept.
  const stored = parse(await store.getKv(kvKey));
  if (!stored) throw new Error(`could not store the gateway key "${name}"`);
  return stored;
}

/** The gateway key `name` from the store (created on first use), with seal/unseal/deriveKey. */
export async function loadOrCreateKey(store: Store, name: string, clock: Clock = new SystemClock()): Promise<GatewayKey> {
  return gatewayKey(await loadOrCreateKeyBytes(store, name), clock);
}

/** A key that lives only in memory (tests, or an RP without a store). */
export function ephemeralKey(clock: Clock = new SystemClock()): GatewayKey {
  return gatewayKey(randomBytes(32), clock);
}
