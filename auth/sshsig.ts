/**
 * OpenSSH signatures (`ssh-keygen -Y sign`, the SSHSIG format of OpenSSH's PROTOCOL.sshsig),
 * verified with node:crypto: ssh-ed25519, ecdsa-sha2-nistp256/384/521, and RSA keys with
 * rsa-sha2-256/512 signatures (SHA-1 "ssh-rsa" signatures are refused). Everything is read with
 * bounds checks: the input comes from whoever calls the API.
 */
import { constants, createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';

export type SshSigResult = { ok: true } | { ok: false; reason: string };

class Reader {
  private off = 0;
  constructor(private readonly buf: Buffer) {}
  u32(): number {
    if (this.off + 4 > this.buf.length) throw new RangeError('truncated');
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  bytes(n: number): Buffer {
    if (n > this.buf.length - this.off) throw new RangeError('truncated');
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  string(): Buffer { return this.bytes(this.u32()); }
  text(): string { return this.string().toString('latin1'); }
  /** An SSH mpint as an unsigned big-endian magnitude (leading zeros removed). */
  mpint(): Buffer {
    const b = this.string();
    if (b.length && b[0]! & 0x80) throw new RangeError('negative mpint');
    let i = 0;
    while (i < b.length && b[i] === 0) i++;
    return b.subarray(i);
  }
  done(): boolean { return this.off === this.buf.length; }
}

function sshString(b: Buffer | string): Buffer {
  const v = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(v.length);
  return Buffer.concat([len, v]);
}

const CURVES: Record<string, { crv: string; size: number; hash: string }> = {
  nistp256: { crv: 'P-256', size: 32, hash: 'sha256' },
  nistp384: { crv: 'P-384', size: 48, hash: 'sha384' },
  nistp521: { crv: 'P-521', size: 66, hash: 'sha512' },
};

interface ParsedKey { type: string; key: KeyObject; curve?: (typeof CURVES)[string]; bits?: number }

/** An OpenSSH public key blob (the base64 part of an authorized_keys line) as a node KeyObject. */
export function parseSshPublicKey(blob: Buffer): ParsedKey {
  const r = new Reader(blob);
  const type = r.text();
  const b64u = (b: Buffer) => b.toString('base64url');
  let parsed: ParsedKey;
  if (type === 'ssh-ed25519') {
    const x = r.string();
    if (x.length !== 32) throw new RangeError('an ed25519 key is 32 bytes');
    parsed = { type, key: createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64u(x) }, format: 'jwk' }) };
  } else if (type.startsWith('ecdsa-sha2-')) {
    const curveName = r.text();
    const curve = CURVES[curveName];
    if (!curve || type !== `ecdsa-sha2-${curveName}`) throw new RangeError(`unsupported ECDSA curve ${curveName.slice(0, 32)}`);
    const q = r.string();
    if (q.length !== 1 + 2 * curve.size || q[0] !== 4) throw new RangeError('an ECDSA key must be an uncompressed point');
    parsed = {
      type, curve,
      key: createPublicKey({ key: { kty: 'EC', crv: curve.crv, x: b64u(q.subarray(1, 1 + curve.size)), y: b64u(q.subarray(1 + curve.size)) }, format: 'jwk' }),
    };
  } else if (type === 'ssh-rsa') {
    const e = r.mpint();
    const n = r.mpint();
    if (!e.length || !n.length) throw new RangeError('an RSA key needs e and n');
    parsed = { type, bits: n.length * 8 - Math.clz32(n[0]!) + 24, key: createPublicKey({ key: { kty: 'RSA', n: b64u(n), e: b64u(e) }, format: 'jwk' }) };
  } else {
    throw new RangeError(`unsupported key type ${type.slice(0, 64)}`);
  }
  if (!r.done()) throw new RangeError('trailing bytes after the key');
  return parsed;
}

/** The binary SSHSIG blob inside "-----BEGIN SSH SIGNATURE-----" armor. */
function unarmor(armored: string): Buffer | null {
  const m = /^\s*-----BEGIN SSH SIGNATURE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END SSH SIGNATURE-----\s*$/.exec(armored);
  if (!m) return null;
  const b64 = m[1]!.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return null;
  return Buffer.from(b64, 'base64');
}

/**
 * Verify an armored SSHSIG signature of `message` under `namespace`, made with the key whose blob is
 * `publicKeyBlob` (the signature must name exactly that key).
 */
export function verifySshSignature(armored: string, message: Buffer, namespace: string, publicKeyBlob: Buffer): SshSigResult {
  if (typeof armored !== 'string' || armored.length > 64 * 1024) return { ok: false, reason: 'not an SSH signature' };
  const raw = unarmor(armored);
  if (!raw) return { ok: false, reason: 'not an SSH signature (expected the -----BEGIN SSH SIGNATURE----- block ssh-keygen -Y sign writes)' };
  try {
    const r = new Reader(raw);
    if (r.bytes(6).toString('latin1') !== 'SSHSIG') return { ok: false, reason: 'not an SSHSIG signature' };
    const version = r.u32();
    if (version !== 1) return { ok: false, reason: `unsupported SSHSIG version ${version}` };
    const pub = r.string();
    const ns = r.string();
    const reserved = r.string();
    const hashAlg = r.text();
    const sigField = r.string();
    if (!r.done()) return { ok: false, reason: 'trailing bytes after the signature' };
    if (!pub.equals(publicKeyBlob)) return { ok: false, reason: 'the signature was made with another key' };
    if (ns.toString('utf8') !== namespace) return { ok: false, reason: `the signature is for namespace "${ns.toString('utf8').slice(0, 64)}", not "${namespace}" (use ssh-keygen -Y sign -n ${namespace})` };
    if (hashAlg !== 'sha256' && hashAlg !== 'sha512') return { ok: false, reason: `unsupported hash algorithm ${hashAlg.slice(0, 32)}` };
    const key = parseSshPublicKey(pub);
    const signed = Buffer.concat([
      Buffer.from('SSHSIG', 'latin1'), sshString(ns), sshString(reserved), sshString(hashAlg),
      sshString(createHash(hashAlg).update(message).digest()),
    ]);
    const s = new Reader(sigField);
    const sigType = s.text();
    const sigBlob = s.string();
    if (!s.done()) return { ok: false, reason: 'trailing bytes after the signature blob' };
    let good: boolean;
    if (key.type === 'ssh-ed25519') {
      if (sigType !== 'ssh-ed25519' || sigBlob.length !== 64) return { ok: false, reason: 'malformed ed25519 signature' };
      good = verify(null, signed, key.key, sigBlob);
    } else if (key.curve) {
      if (sigType !== key.type) return { ok: false, reason: `a ${key.type} key cannot make a ${sigType.slice(0, 64)} signature` };
      const rs = new Reader(sigBlob);
      const rr = rs.mpint();
      const ss = rs.mpint();
      const size = key.curve.size;
      if (!rs.done() || rr.length > size || ss.length > size || !rr.length || !ss.length) return { ok: false, reason: 'malformed ECDSA signature' };
      const p1363 = Buffer.concat([Buffer.alloc(size - rr.length), rr, Buffer.alloc(size - ss.length), ss]);
      good = verify(key.curve.hash, signed, { key: key.key, dsaEncoding: 'ieee-p1363' }, p1363);
    } else {
      const hash = sigType === 'rsa-sha2-256' ? 'sha256' : sigType === 'rsa-sha2-512' ? 'sha512' : null;
      if (!hash) return { ok: false, reason: `RSA signatures must be rsa-sha2-256 or rsa-sha2-512, not ${sigType.slice(0, 64)}` };
      good = verify(hash, signed, { key: key.key, padding: constants.RSA_PKCS1_PADDING }, sigBlob);
    }
    return good ? { ok: true } : { ok: false, reason: 'the signature does not verify' };
  } catch (e) {
    return { ok: false, reason: `malformed SSH signature (${e instanceof Error ? e.message : 'unreadable'})` };
  }
}
