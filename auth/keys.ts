/**
 * The gateway's own key material: one random 32-byte master key kept OUTSIDE the store (a 0600 key
 * file, or any secret reference such as an env variable or a KMS command), used to seal state
 * (AES-256-GCM with an expiry, or none) and to derive per-purpose keys (HKDF), e.g. the audit key.
 * Older versions kept the key in the store's KV space; `loadGatewayKeyBytes` moves it out once.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { writeFileDurable } from './durable.js';
import type { Store } from '../proxy/store/types.js';
import type { Clock } from '../policies/clock.js';
import { SystemClock } from '../policies/clock.js';
import type { Secret } from './secret.js';

export interface GatewayKey {
  /**
   * Encrypt and authenticate a JSON value; unseal() refuses it after ttlMs (default 10 minutes).
   * `Infinity` seals without expiry (long-lived state such as a checked-out password).
   */
  seal(value: unknown, ttlMs?: number): string;
  /** The sealed value, or null when it was tampered with, sealed by another key/purpose, or expired. */
  unseal<T = unknown>(sealed: string): T | null;
  /** A stable 32-byte key for one purpose (HKDF-SHA-256 with the label as info). */
  deriveKey(label: string): Buffer;
}

/** Where versions before the key file kept the key: the store's KV space. */
export const LEGACY_KV_KEY = 'auth.key.gateway';
/** A one-way check value of the key the store was used with (HKDF output, reveals nothing of the key). */
const CHECK_KV_KEY = 'gateway.key.check';
const CHECK_LABEL = 'key-check';
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
      // e: null = no expiry (JSON has no Infinity).
      const body = Buffer.from(JSON.stringify({ e: Number.isFinite(ttlMs) ? clock.now() + ttlMs : null, v: value }), 'utf8');
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
        const obj = JSON.parse(plain.toString('utf8')) as { e: number | null; v: T };
        if (obj.e !== null && (typeof obj.e !== 'number' || clock.now() >= obj.e)) return null;
        return obj.v;
      } catch {
        return null;
      }
    },
    deriveKey: derive,
  };
}

/** A key that lives only in memory (tests, or an RP without a store). */
export function ephemeralKey(clock: Clock = new SystemClock()): GatewayKey {
  return gatewayKey(randomBytes(32), clock);
}

/** A gateway key that cannot be loaded; the message says what to do (never the key). */
export class KeyError extends Error {
  constructor(message: string) { super(message); this.name = 'KeyError'; }
}

/** Key text: 32 bytes as base64 (what the gateway writes) or as 64 hex digits. */
export function parseKeyMaterial(text: string, from: string): Buffer {
  const s = text.trim();
  const raw = /^[0-9a-fA-F]{64}$/.test(s) ? Buffer.from(s, 'hex') : /^[A-Za-z0-9+/_-]{43}=?$/.test(s) ? Buffer.from(s, 'base64') : null;
  if (!raw || raw.length !== 32) throw new KeyError(`${from} must hold a 32-byte key as base64 (44 characters) or hex (64 digits); create one with: openssl rand -base64 32`);
  return raw;
}

/** Read a key file; refuse one that group or others may read or write, or that is not a regular file. */
export function readKeyFile(path: string): Buffer {
  const st = statSync(path);
  if (!st.isFile()) throw new KeyError(`the key file ${path} is not a regular file`);
  if (st.mode & 0o077) {
    throw new KeyError(`the key file ${path} is accessible to group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); run: chmod 600 ${path}`);
  }
  return parseKeyMaterial(readFileSync(path, 'utf8'), `the key file ${path}`);
}

/**
 * Write raw key bytes to a new 0600 file, synced with its directory entry before the key is used (a
 * key left empty by a power cut is refused at the next start, and what it sealed is unreadable); if
 * another process created it first, use that one.
 */
function writeKeyFile(path: string, raw: Buffer): Buffer {
  try {
    writeFileDurable(path, `${raw.toString('base64')}\n`, { mode: 0o600, exclusive: true });
    return raw;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return readKeyFile(path);
    throw new KeyError(`cannot create the key file ${path}: ${(e as Error).message}`);
  }
}

/** A new random key in a new 0600 file (the demo, tests, `gateway.key` not configured). */
export function createKeyFile(path: string): Buffer {
  return writeKeyFile(path, randomBytes(32));
}

/** Where the key comes from: a key file (the default one in the data dir, or configured), or another secret reference. */
export type KeySource =
  | { kind: 'file'; path: string; configured: boolean }
  | { kind: 'secret'; secret: Secret; from: string };

export interface LoadedKey {
  raw: Buffer;
  /** Human-readable origin (a path or "gateway.key (env)"), never the key. */
  from: string;
  /** A new key file was made (first start). */
  created: boolean;
  /** The store still holds the same key in its KV space (an older version's data dir): call forgetStoredKey once moved. */
  inStore: boolean;
}

function parseStored(v: string | null): Buffer | null {
  if (!v) return null;
  const b = Buffer.from(v, 'base64');
  return b.length === 32 ? b : null;
}

/**
 * Load the gateway key from its source. With `write` (the gateway starting): the default key file
 * is created on first start, and a key an older version kept in the store is written to the key
 * file. Without `write` (the CLI reading a store) nothing is created. Refused, because data sealed
 * and keyed with the store's key would silently become unreadable: a store key that differs from the
 * configured one, and a key that does not match the store's check value (a lost key file is never
 * replaced by a new key).
 */
export async function loadGatewayKeyBytes(store: Store, src: KeySource, opts: { write: boolean }): Promise<LoadedKey> {
  const stored = parseStored(await store.getKv(LEGACY_KV_KEY));
  const check = await store.getKv(CHECK_KV_KEY);
  let raw: Buffer;
  let created = false;
  let from: string;
  if (src.kind === 'file') {
    from = src.path;
    if (existsSync(src.path)) raw = readKeyFile(src.path);
    else if (check && !stored) {
      // Never replace a lost key silently: what it sealed and keyed would be lost.
      throw new KeyError(`the key file ${src.path} is missing, but this store was used with a gateway key: restore the key file from its backup`);
    } else if (!opts.write) {
      throw new KeyError(stored
        ? `this store still holds its gateway key (an older version); start the gateway once to move it to ${src.path}`
        : `no gateway key at ${src.path}: the audit log cannot be verified without it`);
    } else if (src.configured && !stored) {
      throw new KeyError(`the key file ${src.path} does not exist (create one with: (umask 077; openssl rand -base64 32 > ${src.path}))`);
    } else {
      raw = writeKeyFile(src.path, stored ?? randomBytes(32));
      created = !stored;
    }
  } else {
    from = src.from;
    raw = parseKeyMaterial(src.secret.reveal(), src.from);
  }
  if (stored && !stored.equals(raw)) {
    throw new KeyError(`the store holds a different gateway key than ${from}; data sealed with it would be lost. `
      + 'Start once without gateway.key in the config: the gateway moves the store\'s key to <dataDir>/gateway.key; then point gateway.key at that key');
  }
  const mine = gatewayKey(raw).deriveKey(CHECK_LABEL).toString('hex');
  if (check && check !== mine) {
    throw new KeyError(`this store was used with another gateway key than ${from}: restore that key (its key file from a backup), or the sealed secrets and the audit log's HMACs cannot be read`);
  }
  if (!check && opts.write) await store.setKv(CHECK_KV_KEY, mine);
  return { raw, from, created, inStore: !!stored };
}

/** Delete the key an older version kept in the store (after it was written out and the audit log keyed). */
export async function forgetStoredKey(store: Store): Promise<void> {
  await store.deleteKv(LEGACY_KV_KEY);
}
