/**
 * NTLM cryptography (MS-NLMP), pure TypeScript where Node 20's OpenSSL 3 refuses without the legacy
 * provider: MD4 (RFC 1320) and RC4. HMAC-MD5 and MD5 come from node:crypto. On top: NTOWFv2,
 * the NTLMv2 response, KXKEY/SIGNKEY/SEALKEY and message sealing/signing with extended session
 * security (MS-NLMP §3.4.4.2). Test vectors: test/rdp/nlmp.test.ts.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

// ---------------------------------------------------------------- MD4 (RFC 1320)

function rotl(x: number, n: number): number { return (x << n) | (x >>> (32 - n)); }

export function md4(data: Buffer): Buffer {
  const bitLen = data.length * 8;
  const padLen = ((data.length + 8) >> 6 << 6) + 64;
  const m = Buffer.alloc(padLen);
  data.copy(m);
  m[data.length] = 0x80;
  m.writeUInt32LE(bitLen >>> 0, padLen - 8);
  m.writeUInt32LE(Math.floor(bitLen / 0x100000000) >>> 0, padLen - 4);
  let a = 0x67452301, b = 0xefcdab89, c = 0x98badcfe, d = 0x10325476;
  const x = new Array<number>(16);
  const F = (p: number, q: number, r: number) => (p & q) | (~p & r);
  const G = (p: number, q: number, r: number) => (p & q) | (p & r) | (q & r);
  const H = (p: number, q: number, r: number) => p ^ q ^ r;
  for (let off = 0; off < padLen; off += 64) {
    for (let i = 0; i < 16; i++) x[i] = m.readUInt32LE(off + i * 4);
    const aa = a, bb = b, cc = c, dd = d;
    for (const i of [0, 4, 8, 12]) {
      a = rotl((a + F(b, c, d) + x[i]!) | 0, 3);
      d = rotl((d + F(a, b, c) + x[i + 1]!) | 0, 7);
      c = rotl((c + F(d, a, b) + x[i + 2]!) | 0, 11);
      b = rotl((b + F(c, d, a) + x[i + 3]!) | 0, 19);
    }
    for (const i of [0, 1, 2, 3]) {
      a = rotl((a + G(b, c, d) + x[i]! + 0x5a827999) | 0, 3);
      d = rotl((d + G(a, b, c) + x[i + 4]! + 0x5a827999) | 0, 5);
      c = rotl((c + G(d, a, b) + x[i + 8]! + 0x5a827999) | 0, 9);
      b = rotl((b + G(c, d, a) + x[i + 12]! + 0x5a827999) | 0, 13);
    }
    for (const i of [0, 2, 1, 3]) {
      a = rotl((a + H(b, c, d) + x[i]! + 0x6ed9eba1) | 0, 3);
      d = rotl((d + H(a, b, c) + x[i + 8]! + 0x6ed9eba1) | 0, 9);
      c = rotl((c + H(d, a, b) + x[i + 4]! + 0x6ed9eba1) | 0, 11);
      b = rotl((b + H(c, d, a) + x[i + 12]! + 0x6ed9eba1) | 0, 15);
    }
    a = (a + aa) | 0; b = (b + bb) | 0; c = (c + cc) | 0; d = (d + dd) | 0;
  }
  const out = Buffer.alloc(16);
  out.writeInt32LE(a, 0); out.writeInt32LE(b, 4); out.writeInt32LE(c, 8); out.writeInt32LE(d, 12);
  return out;
}

// ---------------------------------------------------------------- RC4

/** A stateful RC4 keystream (the NTLM sealing handle keeps its state across messages). */
export class Rc4 {
  private s = new Uint8Array(256);
  private i = 0;
  private j = 0;
  constructor(key: Buffer) {
    if (key.length < 1 || key.length > 256) throw new Error('RC4 key must be 1..256 bytes');
    for (let k = 0; k < 256; k++) this.s[k] = k;
    let j = 0;
    for (let k = 0; k < 256; k++) {
      j = (j + this.s[k]! + key[k % key.length]!) & 0xff;
      const t = this.s[k]!; this.s[k] = this.s[j]!; this.s[j] = t;
    }
  }
  update(data: Buffer): Buffer {
    const out = Buffer.alloc(data.length);
    const s = this.s;
    let i = this.i, j = this.j;
    for (let n = 0; n < data.length; n++) {
      i = (i + 1) & 0xff;
      j = (j + s[i]!) & 0xff;
      const t = s[i]!; s[i] = s[j]!; s[j] = t;
      out[n] = data[n]! ^ s[(s[i]! + s[j]!) & 0xff]!;
    }
    this.i = i; this.j = j;
    return out;
  }
}

/** One-shot RC4K(key, data). */
export function rc4(key: Buffer, data: Buffer): Buffer { return new Rc4(key).update(data); }

// ---------------------------------------------------------------- hashes

export function md5(...parts: Buffer[]): Buffer {
  const h = createHash('md5');
  for (const p of parts) h.update(p);
  return h.digest();
}

export function hmacMd5(key: Buffer, ...parts: Buffer[]): Buffer {
  const h = createHmac('md5', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

export function utf16(s: string): Buffer { return Buffer.from(s, 'utf16le'); }

/** NT hash: MD4(UNICODE(password)) — what a SAM file stores. */
export function ntHash(password: string): Buffer { return md4(utf16(password)); }

/** NTOWFv2 from the NT hash: HMAC_MD5(NT hash, UNICODE(Uppercase(user) + domain)). */
export function ntowfv2FromHash(nthash: Buffer, user: string, domain: string): Buffer {
  return hmacMd5(nthash, utf16(user.toUpperCase() + domain));
}

export function ntowfv2(password: string, user: string, domain: string): Buffer {
  return ntowfv2FromHash(ntHash(password), user, domain);
}

/** The client challenge blob ("temp" of MS-NLMP §3.3.2) without NTProofStr. */
export function ntlmv2Temp(time: Buffer, clientChallenge: Buffer, targetInfo: Buffer): Buffer {
  if (time.length !== 8 || clientChallenge.length !== 8) throw new Error('time and client challenge are 8 bytes');
  return Buffer.concat([Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]), time, clientChallenge, Buffer.alloc(4), targetInfo, Buffer.alloc(4)]);
}

export interface Ntlmv2Result {
  ntChallengeResponse: Buffer;
  lmChallengeResponse: Buffer;
  ntProofStr: Buffer;
  sessionBaseKey: Buffer;
}

/** MS-NLMP §3.3.2 ComputeResponse for NTLMv2. */
export function ntlmv2Response(responseKeyNT: Buffer, serverChallenge: Buffer, clientChallenge: Buffer, time: Buffer, targetInfo: Buffer): Ntlmv2Result {
  const temp = ntlmv2Temp(time, clientChallenge, targetInfo);
  const ntProofStr = hmacMd5(responseKeyNT, serverChallenge, temp);
  const lm = Buffer.concat([hmacMd5(responseKeyNT, serverChallenge, clientChallenge), clientChallenge]);
  return {
    ntChallengeResponse: Buffer.concat([ntProofStr, temp]),
    lmChallengeResponse: lm,
    ntProofStr,
    sessionBaseKey: hmacMd5(responseKeyNT, ntProofStr),
  };
}

/**
 * Server side: check an NTLMv2 NtChallengeResponse against a candidate NTOWFv2 key. Returns the
 * session base key when the proof matches, else null (constant time compare).
 */
export function verifyNtlmv2(responseKeyNT: Buffer, serverChallenge: Buffer, ntChallengeResponse: Buffer): Buffer | null {
  if (ntChallengeResponse.length < 16 + 28) return null;
  const proof = ntChallengeResponse.subarray(0, 16);
  const temp = ntChallengeResponse.subarray(16);
  const expect = hmacMd5(responseKeyNT, serverChallenge, temp);
  if (!timingSafeEqual(proof, expect)) return null;
  return hmacMd5(responseKeyNT, proof);
}

/** KXKEY for NTLMv2 is the session base key (MS-NLMP §3.4.5.1). */
export function kxkey(sessionBaseKey: Buffer): Buffer { return Buffer.from(sessionBaseKey); }

const SIGN_C2S = Buffer.from('session key to client-to-server signing key magic constant\0', 'latin1');
const SIGN_S2C = Buffer.from('session key to server-to-client signing key magic constant\0', 'latin1');
const SEAL_C2S = Buffer.from('session key to client-to-server sealing key magic constant\0', 'latin1');
const SEAL_S2C = Buffer.from('session key to server-to-client sealing key magic constant\0', 'latin1');

export type Direction = 'client-to-server' | 'server-to-client';

export const NTLMSSP_NEGOTIATE_56 = 0x80000000;
export const NTLMSSP_NEGOTIATE_KEY_EXCH = 0x40000000;
export const NTLMSSP_NEGOTIATE_128 = 0x20000000;
export const NTLMSSP_NEGOTIATE_VERSION = 0x02000000;
export const NTLMSSP_NEGOTIATE_TARGET_INFO = 0x00800000;
export const NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000;
export const NTLMSSP_TARGET_TYPE_SERVER = 0x00020000;
export const NTLMSSP_TARGET_TYPE_DOMAIN = 0x00010000;
export const NTLMSSP_NEGOTIATE_ALWAYS_SIGN = 0x00008000;
export const NTLMSSP_NEGOTIATE_NTLM = 0x00000200;
export const NTLMSSP_NEGOTIATE_LM_KEY = 0x00000080;
export const NTLMSSP_NEGOTIATE_SEAL = 0x00000020;
export const NTLMSSP_NEGOTIATE_SIGN = 0x00000010;
export const NTLMSSP_REQUEST_TARGET = 0x00000004;
export const NTLM_NEGOTIATE_OEM = 0x00000002;
export const NTLMSSP_NEGOTIATE_UNICODE = 0x00000001;

export function signKey(exportedSessionKey: Buffer, dir: Direction): Buffer {
  return md5(exportedSessionKey, dir === 'client-to-server' ? SIGN_C2S : SIGN_S2C);
}

/** SEALKEY with extended session security (MS-NLMP §3.4.5.3). */
export function sealKey(exportedSessionKey: Buffer, flags: number, dir: Direction): Buffer {
  let k = exportedSessionKey;
  if (!(flags & NTLMSSP_NEGOTIATE_128)) k = k.subarray(0, flags & NTLMSSP_NEGOTIATE_56 ? 7 : 5);
  return md5(k, dir === 'client-to-server' ? SEAL_C2S : SEAL_S2C);
}

/**
 * One direction of NTLM message security with extended session security and key exchange
 * (the only mode CredSSP uses): sealing handle = RC4(SEALKEY), signature = version 1,
 * RC4(HMAC_MD5(SIGNKEY, seq + msg)[0..7]), seq.
 */
export class NtlmSealer {
  private rc4: Rc4;
  private seq = 0;
  private readonly signingKey: Buffer;
  constructor(exportedSessionKey: Buffer, flags: number, dir: Direction) {
    this.signingKey = signKey(exportedSessionKey, dir);
    this.rc4 = new Rc4(sealKey(exportedSessionKey, flags, dir));
  }

  private signature(seq: number, plain: Buffer): Buffer {
    const s = Buffer.alloc(4);
    s.writeUInt32LE(seq >>> 0);
    const checksum = this.rc4.update(hmacMd5(this.signingKey, s, plain).subarray(0, 8));
    return Buffer.concat([Buffer.from([1, 0, 0, 0]), checksum, s]);
  }

  /** GSS_WrapEx: returns signature (16 bytes) and sealed data. */
  seal(plain: Buffer): { signature: Buffer; data: Buffer } {
    const data = this.rc4.update(plain);
    const signature = this.signature(this.seq++, plain);
    return { signature, data };
  }

  /** GSS_UnwrapEx: throws when the signature does not verify. */
  unseal(signature: Buffer, data: Buffer): Buffer {
    if (signature.length !== 16) throw new NtlmSecurityError('bad NTLM signature length');
    const plain = this.rc4.update(data);
    const expect = this.signature(this.seq++, plain);
    if (!timingSafeEqual(expect, signature)) throw new NtlmSecurityError('NTLM message signature does not verify');
    return plain;
  }
}

export class NtlmSecurityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NtlmSecurityError';
  }
}
