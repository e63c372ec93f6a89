/**
 * CredSSP (MS-CSSP) over NTLM: TSRequest DER encode/decode (versions 2–6), the public-key binding
 * (v5+: SHA-256 of the binding-hash magic + client nonce + SubjectPublicKey; v2–4: the key
 * itself, the server answering with its first byte + 1), and TSCredentials/TSPasswordCreds sealed
 * with the NTLM session. Parsers are pure; bad input → RdpProtocolError.
 */
import { createHash, X509Certificate, createPublicKey } from 'node:crypto';
import { RdpProtocolError } from './errors.js';
import type { NtlmSession } from './ntlm.js';

export const CREDSSP_VERSION = 6;
const MAX_TSREQUEST = 64 * 1024;

// ---------------------------------------------------------------- minimal DER

export interface Der { tag: number; value: Buffer; end: number }

/** Read one DER TLV at `o`; null when more bytes are needed; throws on nonsense. */
export function readDer(b: Buffer, o = 0): Der | null {
  if (b.length < o + 2) return null;
  const tag = b[o]!;
  let len = b[o + 1]!;
  let p = o + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3) throw new RdpProtocolError('unsupported DER length');
    if (b.length < p + n) return null;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[p + i]!;
    p += n;
  }
  if (len > MAX_TSREQUEST) throw new RdpProtocolError('DER element too long');
  if (b.length < p + len) return null;
  return { tag, value: b.subarray(p, p + len), end: p + len };
}

function mustDer(b: Buffer, o: number, what: string): Der {
  const d = readDer(b, o);
  if (!d) throw new RdpProtocolError(`truncated ${what}`);
  return d;
}

/** The children of a constructed value. */
function children(v: Buffer, what: string): Der[] {
  const out: Der[] = [];
  let o = 0;
  while (o < v.length) {
    const d = mustDer(v, o, what);
    out.push(d);
    o = d.end;
    if (out.length > 256) throw new RdpProtocolError(`too many elements in ${what}`);
  }
  return out;
}

function derLen(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  if (n < 0x10000) return Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
}

export function der(tag: number, ...content: Buffer[]): Buffer {
  const v = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLen(v.length), v]);
}

const seq = (...c: Buffer[]) => der(0x30, ...c);
const ctx = (n: number, ...c: Buffer[]) => der(0xa0 + n, ...c);
const octets = (b: Buffer) => der(0x04, b);

function derInt(n: number): Buffer {
  if (!Number.isInteger(n) || n < -0x80000000 || n > 0xffffffff) throw new RdpProtocolError('DER integer out of range');
  // Unsigned 32-bit values above 2^31 (NTSTATUS codes) go on the wire as their signed reading.
  const v = n > 0x7fffffff ? n - 0x100000000 : n;
  const b = Buffer.alloc(4);
  b.writeInt32BE(v);
  let i = 0;
  while (i < 3 && ((b[i] === 0 && !(b[i + 1]! & 0x80)) || (b[i] === 0xff && (b[i + 1]! & 0x80)))) i++;
  return der(0x02, b.subarray(i));
}

function readInt(d: Der, what: string): number {
  if (d.tag !== 0x02 || d.value.length < 1 || d.value.length > 5) throw new RdpProtocolError(`bad ${what}`);
  let n = (d.value[0]! & 0x80) ? -1 : 0;
  for (const x of d.value) n = n * 256 + x;
  if (n < -0x80000000 || n > 0xffffffff) throw new RdpProtocolError(`bad ${what}`);
  return n;
}

/** The single element inside an explicit context tag. */
function inner(d: Der, what: string): Der {
  const c = children(d.value, what);
  if (c.length !== 1) throw new RdpProtocolError(`bad ${what}`);
  return c[0]!;
}

function readOctets(d: Der, what: string): Buffer {
  const i = inner(d, what);
  if (i.tag !== 0x04) throw new RdpProtocolError(`${what} is not an OCTET STRING`);
  return Buffer.from(i.value);
}

// ---------------------------------------------------------------- TSRequest

export interface TsRequest {
  version: number;
  negoTokens: Buffer[];
  authInfo: Buffer | null;
  pubKeyAuth: Buffer | null;
  /** An NTSTATUS/HRESULT from the peer (v3+), unsigned. */
  errorCode: number | null;
  clientNonce: Buffer | null;
}

export function encodeTsRequest(r: Partial<TsRequest> & { version: number }): Buffer {
  const parts: Buffer[] = [ctx(0, derInt(r.version))];
  if (r.negoTokens?.length) parts.push(ctx(1, seq(...r.negoTokens.map((t) => seq(ctx(0, octets(t)))))));
  if (r.authInfo) parts.push(ctx(2, octets(r.authInfo)));
  if (r.pubKeyAuth) parts.push(ctx(3, octets(r.pubKeyAuth)));
  if (r.errorCode != null) parts.push(ctx(4, derInt(r.errorCode)));
  if (r.clientNonce) parts.push(ctx(5, octets(r.clientNonce)));
  return seq(...parts);
}

export function parseTsRequest(b: Buffer): TsRequest {
  const top = mustDer(b, 0, 'TSRequest');
  if (top.tag !== 0x30) throw new RdpProtocolError('TSRequest is not a SEQUENCE');
  const out: TsRequest = { version: 0, negoTokens: [], authInfo: null, pubKeyAuth: null, errorCode: null, clientNonce: null };
  let sawVersion = false;
  for (const f of children(top.value, 'TSRequest')) {
    switch (f.tag) {
      case 0xa0: out.version = readInt(inner(f, 'TSRequest.version'), 'TSRequest.version'); sawVersion = true; break;
      case 0xa1: {
        const list = inner(f, 'TSRequest.negoTokens');
        if (list.tag !== 0x30) throw new RdpProtocolError('bad TSRequest.negoTokens');
        for (const item of children(list.value, 'NegoData')) {
          if (item.tag !== 0x30) throw new RdpProtocolError('bad NegoData item');
          for (const t of children(item.value, 'NegoData item')) if (t.tag === 0xa0) out.negoTokens.push(readOctets(t, 'negoToken'));
        }
        break;
      }
      case 0xa2: out.authInfo = readOctets(f, 'TSRequest.authInfo'); break;
      case 0xa3: out.pubKeyAuth = readOctets(f, 'TSRequest.pubKeyAuth'); break;
      case 0xa4: out.errorCode = readInt(inner(f, 'TSRequest.errorCode'), 'TSRequest.errorCode') >>> 0; break;
      case 0xa5: out.clientNonce = readOctets(f, 'TSRequest.clientNonce'); break;
      default: break; // unknown fields are ignored (future versions)
    }
  }
  if (!sawVersion || out.version < 1) throw new RdpProtocolError('TSRequest without a version');
  return out;
}

/** Bytes needed for a whole TSRequest at the start of `b` (0 = not known yet). */
export function tsRequestLength(b: Buffer): number {
  if (b.length < 2) return 0;
  if (b[0] !== 0x30) throw new RdpProtocolError('expected a CredSSP TSRequest');
  let len = b[1]!;
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3) throw new RdpProtocolError('unsupported DER length');
    if (b.length < 2 + n) return 0;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[2 + i]!;
    hdr += n;
  }
  if (len > MAX_TSREQUEST) throw new RdpProtocolError('CredSSP message too long');
  return hdr + len;
}

// ---------------------------------------------------------------- TSCredentials

export interface PasswordCreds { domain: string; user: string; password: string }

export function encodeTsCredentials(c: PasswordCreds): Buffer {
  const pw = seq(
    ctx(0, octets(Buffer.from(c.domain, 'utf16le'))),
    ctx(1, octets(Buffer.from(c.user, 'utf16le'))),
    ctx(2, octets(Buffer.from(c.password, 'utf16le'))),
  );
  return seq(ctx(0, derInt(1)), ctx(1, octets(pw)));
}

export function parseTsCredentials(b: Buffer): PasswordCreds {
  const top = mustDer(b, 0, 'TSCredentials');
  if (top.tag !== 0x30) throw new RdpProtocolError('TSCredentials is not a SEQUENCE');
  let type = 0;
  let creds: Buffer | null = null;
  for (const f of children(top.value, 'TSCredentials')) {
    if (f.tag === 0xa0) type = readInt(inner(f, 'credType'), 'credType');
    else if (f.tag === 0xa1) creds = readOctets(f, 'credentials');
  }
  if (type !== 1 || !creds) throw new RdpProtocolError(`unsupported CredSSP credential type ${type}`);
  const pw = mustDer(creds, 0, 'TSPasswordCreds');
  if (pw.tag !== 0x30) throw new RdpProtocolError('TSPasswordCreds is not a SEQUENCE');
  const out: PasswordCreds = { domain: '', user: '', password: '' };
  for (const f of children(pw.value, 'TSPasswordCreds')) {
    if (f.tag === 0xa0) out.domain = readOctets(f, 'domainName').toString('utf16le');
    else if (f.tag === 0xa1) out.user = readOctets(f, 'userName').toString('utf16le');
    else if (f.tag === 0xa2) out.password = readOctets(f, 'password').toString('utf16le');
  }
  return out;
}

// ---------------------------------------------------------------- public key binding

/** SubjectPublicKey (the BIT STRING contents of SubjectPublicKeyInfo) of a DER certificate. */
export function subjectPublicKey(certDer: Buffer): Buffer {
  const spki = new X509Certificate(certDer).publicKey.export({ type: 'spki', format: 'der' });
  return subjectPublicKeyOfSpki(spki);
}

export function subjectPublicKeyOfSpki(spki: Buffer): Buffer {
  const top = mustDer(spki, 0, 'SubjectPublicKeyInfo');
  const c = children(top.value, 'SubjectPublicKeyInfo');
  const bits = c[1];
  if (top.tag !== 0x30 || !bits || bits.tag !== 0x03 || bits.value.length < 2) throw new RdpProtocolError('bad SubjectPublicKeyInfo');
  return Buffer.from(bits.value.subarray(1));
}

/** SubjectPublicKey of a PEM certificate (the gateway's own). */
export function subjectPublicKeyOfPem(certPem: string): Buffer {
  return subjectPublicKeyOfSpki(createPublicKey(certPem).export({ type: 'spki', format: 'der' }));
}

const C2S = Buffer.from('CredSSP Client-To-Server Binding Hash\0', 'latin1');
const S2C = Buffer.from('CredSSP Server-To-Client Binding Hash\0', 'latin1');

/** What the client proves (before sealing). */
export function clientBinding(version: number, nonce: Buffer | null, pubKey: Buffer): Buffer {
  if (version >= 5) {
    if (!nonce || nonce.length !== 32) throw new RdpProtocolError('CredSSP v5+ needs a 32-byte client nonce');
    return createHash('sha256').update(C2S).update(nonce).update(pubKey).digest();
  }
  return Buffer.from(pubKey);
}

/** What the server answers (before sealing). */
export function serverBinding(version: number, nonce: Buffer | null, pubKey: Buffer): Buffer {
  if (version >= 5) {
    if (!nonce || nonce.length !== 32) throw new RdpProtocolError('CredSSP v5+ needs a 32-byte client nonce');
    return createHash('sha256').update(S2C).update(nonce).update(pubKey).digest();
  }
  const b = Buffer.from(pubKey);
  if (b.length) b[0] = (b[0]! + 1) & 0xff;
  return b;
}

/** NTLM EncryptMessage as CredSSP carries it: signature (16) followed by the sealed bytes. */
export function sealToken(s: NtlmSession, plain: Buffer): Buffer {
  const w = s.send.seal(plain);
  return Buffer.concat([w.signature, w.data]);
}

export function unsealToken(s: NtlmSession, token: Buffer): Buffer {
  if (token.length < 16) throw new RdpProtocolError('sealed CredSSP field too short');
  try {
    return s.recv.unseal(token.subarray(0, 16), token.subarray(16));
  } catch (e) {
    throw new RdpProtocolError(`CredSSP: ${(e as Error).message}`);
  }
}
