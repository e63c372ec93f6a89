/**
 * The client side of RDP licensing (MS-RDPELE) as far as the gateway's own client needs it. A
 * server that does not license answers the connection with "valid client" at once (FreeRDP
 * servers); xrdp first sends a License Request, and then "valid client" to the client's New
 * License Request. The request is built as the specification says: a client random, a
 * pre-master secret RSA-encrypted with the key in the server's certificate (proprietary RSA1
 * or X.509), the user and machine names. Servers that go on to a Platform Challenge (Windows with
 * a license server) need the licensing crypto, which is not implemented: the caller refuses them
 * with a reason.
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { RdpProtocolError, need } from './errors.js';
import { encodeSecurityHeader, SEC_LICENSE_PKT } from './security.js';

export const LICENSE_REQUEST = 0x01;
export const NEW_LICENSE_REQUEST = 0x13;
const KEY_EXCHANGE_ALG_RSA = 1;
/** CLIENT_OS_ID_WINNT_POST_52 | CLIENT_IMAGE_ID_MICROSOFT. */
const PLATFORM_ID = 0x04000000 | 0x00010000;
const BB_RANDOM_BLOB = 0x0002;
const BB_CLIENT_USER_NAME_BLOB = 0x000f;
const BB_CLIENT_MACHINE_NAME_BLOB = 0x0010;

interface RsaKey { n: bigint; e: bigint; bytes: number }

function le(b: Buffer): bigint {
  return BigInt(`0x${Buffer.from(b).reverse().toString('hex') || '0'}`);
}

function toLe(v: bigint, bytes: number): Buffer {
  const hex = v.toString(16).padStart(bytes * 2, '0');
  return Buffer.from(hex, 'hex').reverse().subarray(0, bytes);
}

function modPow(b: bigint, e: bigint, m: bigint): bigint {
  let r = 1n;
  b %= m;
  for (; e > 0n; e >>= 1n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
  }
  return r;
}

/** The RSA key of a SERVER_CERTIFICATE (proprietary RSA1, or the last certificate of an X.509 chain). */
export function serverCertificateKey(cert: Buffer): RsaKey | null {
  if (cert.length < 4) return null;
  const version = cert.readUInt32LE(0) & 0x7fffffff;
  if (version === 1) {
    need(cert, 4, 12, 'proprietary certificate');
    const blobLen = cert.readUInt16LE(14);
    const k = cert.subarray(16, 16 + blobLen);
    need(k, 0, 20, 'RSA public key');
    if (k.toString('latin1', 0, 4) !== 'RSA1') throw new RdpProtocolError('the server certificate has no RSA1 key');
    const keylen = k.readUInt32LE(4);
    const datalen = k.readUInt32LE(12);
    need(k, 20, keylen, 'RSA modulus');
    return { e: BigInt(k.readUInt32LE(16)), n: le(k.subarray(20, 20 + keylen)), bytes: Math.max(keylen, datalen + 1) };
  }
  if (version === 2) {
    const n = cert.readUInt32LE(4);
    let off = 8;
    let last: Buffer | null = null;
    for (let i = 0; i < n && i < 16; i++) {
      need(cert, off, 4, 'certificate chain');
      const len = cert.readUInt32LE(off);
      need(cert, off + 4, len, 'certificate');
      last = cert.subarray(off + 4, off + 4 + len);
      off += 4 + len;
    }
    if (!last) return null;
    const jwk = new X509Certificate(last).publicKey.export({ format: 'jwk' }) as { n?: string; e?: string };
    if (!jwk.n || !jwk.e) return null;
    const nb = Buffer.from(jwk.n, 'base64url');
    return { n: BigInt(`0x${nb.toString('hex')}`), e: BigInt(`0x${Buffer.from(jwk.e, 'base64url').toString('hex')}`), bytes: nb.length + 8 };
  }
  return null;
}

/** The server certificate blob of a License Request body (after the preamble), or null. */
export function licenseRequestCertificate(body: Buffer): Buffer | null {
  let off = 32; // ServerRandom
  need(body, off, 8, 'license request product info');
  off += 4; // dwVersion
  const company = body.readUInt32LE(off);
  off += 4 + company;
  need(body, off, 4, 'license request product id');
  off += 4 + body.readUInt32LE(off);
  need(body, off, 4, 'license request key exchange list');
  off += 4 + body.readUInt16LE(off + 2);
  need(body, off, 4, 'license request certificate');
  const len = body.readUInt16LE(off + 2);
  need(body, off + 4, len, 'license request certificate');
  return len ? body.subarray(off + 4, off + 4 + len) : null;
}

function blob(type: number, data: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(type, 0);
  h.writeUInt16LE(data.length, 2);
  return Buffer.concat([h, data]);
}

/** The client's New License Request for a server License Request (its body after the preamble). */
export function newLicenseRequest(requestBody: Buffer, preambleFlags: number, user: string, machine: string): Buffer {
  const cert = licenseRequestCertificate(requestBody);
  let key: RsaKey | null = null;
  try { key = cert ? serverCertificateKey(cert) : null; } catch { key = null; }
  const premaster = randomBytes(48);
  const encrypted = key ? Buffer.concat([toLe(modPow(le(premaster), key.e, key.n), key.bytes - 8), Buffer.alloc(8)]) : Buffer.alloc(72);
  const head = Buffer.alloc(8);
  head.writeUInt32LE(KEY_EXCHANGE_ALG_RSA, 0);
  head.writeUInt32LE(PLATFORM_ID, 4);
  const body = Buffer.concat([
    head, randomBytes(32), blob(BB_RANDOM_BLOB, encrypted),
    blob(BB_CLIENT_USER_NAME_BLOB, Buffer.from(`${user}\0`, 'latin1')), blob(BB_CLIENT_MACHINE_NAME_BLOB, Buffer.from(`${machine}\0`, 'latin1')),
  ]);
  const pre = Buffer.alloc(4);
  pre[0] = NEW_LICENSE_REQUEST;
  pre[1] = preambleFlags & 0x0f;
  pre.writeUInt16LE(body.length + 4, 2);
  return encodeSecurityHeader(SEC_LICENSE_PKT, Buffer.concat([pre, body]));
}
