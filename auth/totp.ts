/**
 * TOTP (RFC 6238) over HOTP (RFC 4226): HMAC-SHA-1 by default, 30 s steps, 6 digits.
 * Secrets are configured in Base32 (RFC 4648), the form authenticator apps use.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { Secret } from './secret.js';

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export interface TotpOptions {
  /** Step in seconds (default 30). */
  step?: number;
  /** Code length (default 6). */
  digits?: number;
  algorithm?: 'sha1' | 'sha256' | 'sha512';
}

/** Decode Base32 (case-insensitive, spaces and '=' padding ignored). Throws on other characters. */
export function base32Decode(text: string): Buffer {
  const clean = text.replace(/[\s=-]/g, '').toUpperCase();
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of clean) {
    const idx = B32.indexOf(ch);
    if (idx < 0) throw new Error('TOTP secret is not valid Base32');
    value = (value << 5) | idx;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

export function base32Encode(buf: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

/** A fresh random Base32 TOTP secret (160 bits, as RFC 4226 recommends). */
export function newTotpSecret(): Secret {
  return new Secret(base32Encode(randomBytes(20)));
}

/** HOTP value for one counter (RFC 4226 dynamic truncation). */
export function hotp(key: Buffer, counter: number | bigint, digits = 6, algorithm: TotpOptions['algorithm'] = 'sha1'): string {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac(algorithm ?? 'sha1', key).update(msg).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const bin = ((mac[offset]! & 0x7f) << 24) | (mac[offset + 1]! << 16) | (mac[offset + 2]! << 8) | mac[offset + 3]!;
  return String(bin % 10 ** digits).padStart(digits, '0');
}

function keyOf(secret: Secret | Buffer): Buffer {
  return Buffer.isBuffer(secret) ? secret : base32Decode(secret.reveal());
}

/** The TOTP code at a time (epoch ms). `secret` is a Base32 Secret or the raw key bytes. */
export function totp(secret: Secret | Buffer, atMs: number, opts: TotpOptions = {}): string {
  const step = opts.step ?? 30;
  return hotp(keyOf(secret), Math.floor(atMs / 1000 / step), opts.digits ?? 6, opts.algorithm);
}

/**
 * Check a typed code at a time, accepting `window` steps of clock drift either side.
 * Returns the matching time-step counter (so callers can refuse a replay of the same step), or null.
 */
export function verifyTotp(secret: Secret | Buffer, code: string, atMs: number, opts: TotpOptions & { window?: number } = {}): number | null {
  const digits = opts.digits ?? 6;
  const typed = code.replace(/\s/g, '');
  if (!new RegExp(`^[0-9]{${digits}}$`).test(typed)) return null;
  const key = keyOf(secret);
  const step = opts.step ?? 30;
  const now = Math.floor(atMs / 1000 / step);
  const win = opts.window ?? 1;
  let found: number | null = null;
  for (let c = now - win; c <= now + win; c++) {
    if (c < 0) continue;
    const want = Buffer.from(hotp(key, c, digits, opts.algorithm));
    // Compare every candidate in constant time; do not stop early.
    if (timingSafeEqual(want, Buffer.from(typed)) && found === null) found = c;
  }
  return found;
}
