/**
 * NTLM messages (MS-NLMP §2.2): NEGOTIATE, CHALLENGE, AUTHENTICATE encode/decode, AV pairs, and
 * the two roles CredSSP needs: the client (the gateway towards an NLA target, with the session's
 * credential) and the server (the gateway towards an RDP client, verifying NTLMv2 against the
 * NT hashes of pending connection secrets). Parsers are pure; bad input → RdpProtocolError.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { RdpProtocolError, need } from './errors.js';
import {
  hmacMd5, kxkey, NTLM_NEGOTIATE_OEM, NtlmSealer, NTLMSSP_NEGOTIATE_128, NTLMSSP_NEGOTIATE_56, NTLMSSP_NEGOTIATE_ALWAYS_SIGN,
  NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY, NTLMSSP_NEGOTIATE_KEY_EXCH, NTLMSSP_NEGOTIATE_NTLM, NTLMSSP_NEGOTIATE_SEAL,
  NTLMSSP_NEGOTIATE_SIGN, NTLMSSP_NEGOTIATE_TARGET_INFO, NTLMSSP_NEGOTIATE_UNICODE, NTLMSSP_NEGOTIATE_VERSION,
  NTLMSSP_REQUEST_TARGET, NTLMSSP_TARGET_TYPE_SERVER, ntlmv2Response, ntowfv2FromHash, rc4, utf16, verifyNtlmv2,
} from './nlmp.js';

const SIGNATURE = Buffer.from('NTLMSSP\0', 'latin1');
export const NTLM_NEGOTIATE = 1;
export const NTLM_CHALLENGE = 2;
export const NTLM_AUTHENTICATE = 3;

export const MsvAvEOL = 0;
export const MsvAvNbComputerName = 1;
export const MsvAvNbDomainName = 2;
export const MsvAvDnsComputerName = 3;
export const MsvAvDnsDomainName = 4;
export const MsvAvDnsTreeName = 5;
export const MsvAvFlags = 6;
export const MsvAvTimestamp = 7;
export const MsvAvSingleHost = 8;
export const MsvAvTargetName = 9;
export const MsvAvChannelBindings = 10;
/** MsvAvFlags bit: the AUTHENTICATE message carries a MIC. */
export const AV_FLAG_MIC = 0x2;

/** What the gateway asks for as a client: NTLMv2 with ESS, 128-bit keys, key exchange, sign+seal. */
export const CLIENT_FLAGS = (NTLMSSP_NEGOTIATE_56 | NTLMSSP_NEGOTIATE_KEY_EXCH | NTLMSSP_NEGOTIATE_128 | NTLMSSP_NEGOTIATE_VERSION
  | NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | NTLMSSP_NEGOTIATE_ALWAYS_SIGN | NTLMSSP_NEGOTIATE_NTLM | NTLMSSP_NEGOTIATE_SEAL
  | NTLMSSP_NEGOTIATE_SIGN | NTLMSSP_REQUEST_TARGET | NTLMSSP_NEGOTIATE_UNICODE) >>> 0;
const REQUIRED = NTLMSSP_NEGOTIATE_KEY_EXCH | NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | NTLMSSP_NEGOTIATE_128 | NTLMSSP_NEGOTIATE_SEAL | NTLMSSP_NEGOTIATE_SIGN;
/** Version field: 6.1 build 7601, NTLMSSP revision 15. */
const VERSION = Buffer.from([6, 1, 0xb1, 0x1d, 0, 0, 0, 0x0f]);

export type AvPair = { id: number; value: Buffer };

export interface NegotiateMessage { flags: number; domain: Buffer; workstation: Buffer }
export interface ChallengeMessage { flags: number; serverChallenge: Buffer; targetName: Buffer; targetInfo: Buffer; version: Buffer | null }
export interface AuthenticateMessage {
  flags: number;
  lmChallengeResponse: Buffer;
  ntChallengeResponse: Buffer;
  domain: Buffer;
  user: Buffer;
  workstation: Buffer;
  encryptedRandomSessionKey: Buffer;
  version: Buffer | null;
  /** The MIC (16 bytes) when the message has room for one (payload starts at 88 or later), else null. */
  mic: Buffer | null;
  micOffset: number | null;
}

// ---------------------------------------------------------------- AV pairs

export function parseAvPairs(b: Buffer): AvPair[] {
  const out: AvPair[] = [];
  let o = 0;
  for (;;) {
    need(b, o, 4, 'NTLM AV pair');
    const id = b.readUInt16LE(o);
    const len = b.readUInt16LE(o + 2);
    o += 4;
    if (id === MsvAvEOL) return out;
    need(b, o, len, 'NTLM AV pair value');
    if (out.length >= 64) throw new RdpProtocolError('too many NTLM AV pairs');
    out.push({ id, value: Buffer.from(b.subarray(o, o + len)) });
    o += len;
  }
}

export function encodeAvPairs(pairs: AvPair[]): Buffer {
  const parts: Buffer[] = [];
  for (const p of pairs) {
    if (p.id === MsvAvEOL) continue;
    const h = Buffer.alloc(4);
    h.writeUInt16LE(p.id, 0);
    h.writeUInt16LE(p.value.length, 2);
    parts.push(h, p.value);
  }
  parts.push(Buffer.alloc(4));
  return Buffer.concat(parts);
}

export function avGet(pairs: AvPair[], id: number): Buffer | null {
  return pairs.find((p) => p.id === id)?.value ?? null;
}

// ---------------------------------------------------------------- fields

function readField(m: Buffer, at: number, what: string): Buffer {
  need(m, at, 8, `NTLM ${what} field`);
  const len = m.readUInt16LE(at);
  const off = m.readUInt32LE(at + 4);
  if (len === 0) return Buffer.alloc(0);
  if (off > m.length || len > m.length - off) throw new RdpProtocolError(`NTLM ${what} points outside the message`);
  return Buffer.from(m.subarray(off, off + len));
}

function header(m: Buffer, type: number, min: number, what: string): void {
  need(m, 0, min, `NTLM ${what} message`);
  if (!m.subarray(0, 8).equals(SIGNATURE)) throw new RdpProtocolError('not an NTLMSSP message');
  const t = m.readUInt32LE(8);
  if (t !== type) throw new RdpProtocolError(`expected an NTLM ${what} message, got type ${t}`);
}

/** Lay out fields at fixed header offsets with their payloads after `base`. */
function build(head: Buffer, base: number, fields: { at: number; value: Buffer }[]): Buffer {
  const payload: Buffer[] = [];
  let off = base;
  for (const f of fields) {
    if (f.value.length > 0xffff) throw new RdpProtocolError('NTLM field too long');
    head.writeUInt16LE(f.value.length, f.at);
    head.writeUInt16LE(f.value.length, f.at + 2);
    head.writeUInt32LE(off, f.at + 4);
    payload.push(f.value);
    off += f.value.length;
  }
  return Buffer.concat([head, ...payload]);
}

// ---------------------------------------------------------------- messages

export function encodeNegotiate(flags = CLIENT_FLAGS): Buffer {
  const h = Buffer.alloc(40);
  SIGNATURE.copy(h);
  h.writeUInt32LE(NTLM_NEGOTIATE, 8);
  h.writeUInt32LE(flags >>> 0, 12);
  VERSION.copy(h, 32);
  return build(h, 40, [{ at: 16, value: Buffer.alloc(0) }, { at: 24, value: Buffer.alloc(0) }]);
}

export function parseNegotiate(m: Buffer): NegotiateMessage {
  header(m, NTLM_NEGOTIATE, 16, 'NEGOTIATE');
  const flags = m.readUInt32LE(12);
  // Domain / workstation fields are optional in very short messages.
  const domain = m.length >= 24 ? readField(m, 16, 'domain') : Buffer.alloc(0);
  const workstation = m.length >= 32 ? readField(m, 24, 'workstation') : Buffer.alloc(0);
  return { flags, domain, workstation };
}

export function encodeChallenge(c: ChallengeMessage): Buffer {
  if (c.serverChallenge.length !== 8) throw new RdpProtocolError('server challenge is 8 bytes');
  const h = Buffer.alloc(56);
  SIGNATURE.copy(h);
  h.writeUInt32LE(NTLM_CHALLENGE, 8);
  h.writeUInt32LE(c.flags >>> 0, 20);
  c.serverChallenge.copy(h, 24);
  (c.version ?? VERSION).copy(h, 48);
  return build(h, 56, [{ at: 12, value: c.targetName }, { at: 40, value: c.targetInfo }]);
}

export function parseChallenge(m: Buffer): ChallengeMessage {
  header(m, NTLM_CHALLENGE, 48, 'CHALLENGE');
  const flags = m.readUInt32LE(20);
  return {
    flags,
    serverChallenge: Buffer.from(m.subarray(24, 32)),
    targetName: readField(m, 12, 'target name'),
    targetInfo: readField(m, 40, 'target info'),
    version: m.length >= 56 && flags & NTLMSSP_NEGOTIATE_VERSION ? Buffer.from(m.subarray(48, 56)) : null,
  };
}

export function encodeAuthenticate(a: Omit<AuthenticateMessage, 'micOffset'> & { withMic: boolean }): { message: Buffer; micOffset: number | null } {
  const base = a.withMic ? 88 : 72;
  const h = Buffer.alloc(base);
  SIGNATURE.copy(h);
  h.writeUInt32LE(NTLM_AUTHENTICATE, 8);
  h.writeUInt32LE(a.flags >>> 0, 60);
  (a.version ?? VERSION).copy(h, 64);
  if (a.withMic && a.mic) a.mic.copy(h, 72);
  const message = build(h, base, [
    { at: 28, value: a.domain }, { at: 36, value: a.user }, { at: 44, value: a.workstation },
    { at: 12, value: a.lmChallengeResponse }, { at: 20, value: a.ntChallengeResponse }, { at: 52, value: a.encryptedRandomSessionKey },
  ]);
  return { message, micOffset: a.withMic ? 72 : null };
}

export function parseAuthenticate(m: Buffer): AuthenticateMessage {
  header(m, NTLM_AUTHENTICATE, 64, 'AUTHENTICATE');
  const fields = [12, 20, 28, 36, 44, 52].map((at, i) => readField(m, at, ['LM response', 'NT response', 'domain', 'user', 'workstation', 'session key'][i]!));
  // The payload starts at the lowest non-empty field offset; a MIC fits when that is at least 88.
  let payloadStart = m.length;
  for (const at of [12, 20, 28, 36, 44, 52]) if (m.readUInt16LE(at) > 0) payloadStart = Math.min(payloadStart, m.readUInt32LE(at + 4));
  const flags = m.readUInt32LE(60);
  const hasMic = payloadStart >= 88 && m.length >= 88;
  return {
    flags,
    lmChallengeResponse: fields[0]!, ntChallengeResponse: fields[1]!, domain: fields[2]!, user: fields[3]!, workstation: fields[4]!,
    encryptedRandomSessionKey: fields[5]!,
    version: payloadStart >= 72 && m.length >= 72 ? Buffer.from(m.subarray(64, 72)) : null,
    mic: hasMic ? Buffer.from(m.subarray(72, 88)) : null,
    micOffset: hasMic ? 72 : null,
  };
}

/** Decode a UTF-16LE (or OEM when the flag says so) NTLM string field. */
export function fieldText(b: Buffer, flags: number): string {
  return flags & NTLMSSP_NEGOTIATE_UNICODE ? b.toString('utf16le') : b.toString('latin1');
}

/** FILETIME (100 ns since 1601) for a Unix time in ms. */
export function fileTime(ms: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE((BigInt(Math.floor(ms)) + 11644473600000n) * 10000n);
  return b;
}

// ---------------------------------------------------------------- client role

export interface NtlmSession {
  flags: number;
  exportedSessionKey: Buffer;
  /** Seals what this side sends. */
  send: NtlmSealer;
  /** Unseals what this side receives. */
  recv: NtlmSealer;
}

/** The gateway as NTLM client: NEGOTIATE, then AUTHENTICATE for the server's CHALLENGE. */
export class NtlmClient {
  readonly negotiate: Buffer;
  constructor(private readonly cred: { user: string; domain: string; ntHash: Buffer; workstation?: string }, private readonly opts: { now: () => number; random?: (n: number) => Buffer } = { now: Date.now }) {
    this.negotiate = encodeNegotiate();
  }

  authenticate(challengeBytes: Buffer): { message: Buffer; session: NtlmSession } {
    const ch = parseChallenge(challengeBytes);
    if ((ch.flags & REQUIRED) !== REQUIRED) {
      throw new RdpProtocolError('the NTLM server does not offer NTLMv2 with extended session security, 128-bit keys and key exchange');
    }
    const random = this.opts.random ?? randomBytes;
    const pairs = ch.targetInfo.length ? parseAvPairs(ch.targetInfo) : [];
    const ts = avGet(pairs, MsvAvTimestamp);
    const time = ts && ts.length === 8 ? ts : fileTime(this.opts.now());
    const out: AvPair[] = pairs.filter((p) => p.id !== MsvAvFlags);
    const oldFlags = avGet(pairs, MsvAvFlags);
    const withMic = ts !== null;
    const avFlags = (oldFlags && oldFlags.length === 4 ? oldFlags.readUInt32LE(0) : 0) | (withMic ? AV_FLAG_MIC : 0);
    if (avFlags) { const f = Buffer.alloc(4); f.writeUInt32LE(avFlags >>> 0); out.push({ id: MsvAvFlags, value: f }); }
    const responseKey = ntowfv2FromHash(this.cred.ntHash, this.cred.user, this.cred.domain);
    const clientChallenge = random(8);
    const r = ntlmv2Response(responseKey, ch.serverChallenge, clientChallenge, time, encodeAvPairs(out));
    const exportedSessionKey = random(16);
    const flags = (ch.flags & (CLIENT_FLAGS | NTLMSSP_NEGOTIATE_TARGET_INFO)) >>> 0;
    const unicode = !!(flags & NTLMSSP_NEGOTIATE_UNICODE);
    const str = (s: string) => unicode ? utf16(s) : Buffer.from(s, 'latin1');
    const enc = encodeAuthenticate({
      flags,
      // With a timestamp (MIC), the LMv2 response is Z(24) (MS-NLMP §3.1.5.1.2).
      lmChallengeResponse: withMic ? Buffer.alloc(24) : r.lmChallengeResponse,
      ntChallengeResponse: r.ntChallengeResponse,
      domain: str(this.cred.domain), user: str(this.cred.user), workstation: str(this.cred.workstation ?? 'TOLLGATE'),
      encryptedRandomSessionKey: rc4(kxkey(r.sessionBaseKey), exportedSessionKey),
      version: null, mic: null, withMic,
    });
    const message = enc.message;
    if (enc.micOffset !== null) hmacMd5(exportedSessionKey, this.negotiate, challengeBytes, message).copy(message, enc.micOffset);
    return {
      message,
      session: {
        flags, exportedSessionKey,
        send: new NtlmSealer(exportedSessionKey, flags, 'client-to-server'),
        recv: new NtlmSealer(exportedSessionKey, flags, 'server-to-client'),
      },
    };
  }
}

// ---------------------------------------------------------------- server role

export interface ServerIdentity { computer: string; domain: string; dnsComputer: string; dnsDomain: string }

/** A candidate the server tries: an id and the NT hash of a password it would accept. */
export interface NtlmCandidate { id: string; ntHash: Buffer }

/** The gateway as NTLM server: CHALLENGE for the client's NEGOTIATE, then verify its AUTHENTICATE. */
export class NtlmServer {
  private negotiateBytes: Buffer | null = null;
  private challengeBytes: Buffer | null = null;
  private serverChallenge: Buffer;

  constructor(private readonly identity: ServerIdentity, private readonly opts: { now: () => number; random?: (n: number) => Buffer } = { now: Date.now }) {
    this.serverChallenge = (opts.random ?? randomBytes)(8);
  }

  challenge(negotiateBytes: Buffer): Buffer {
    const neg = parseNegotiate(negotiateBytes);
    if ((neg.flags & REQUIRED) !== REQUIRED) throw new RdpProtocolError('the NTLM client does not offer extended session security, 128-bit keys, key exchange, signing and sealing');
    this.negotiateBytes = Buffer.from(negotiateBytes);
    const id = this.identity;
    const info = encodeAvPairs([
      { id: MsvAvNbDomainName, value: utf16(id.domain) },
      { id: MsvAvNbComputerName, value: utf16(id.computer) },
      { id: MsvAvDnsDomainName, value: utf16(id.dnsDomain) },
      { id: MsvAvDnsComputerName, value: utf16(id.dnsComputer) },
      { id: MsvAvTimestamp, value: fileTime(this.opts.now()) },
    ]);
    const flags = ((neg.flags & CLIENT_FLAGS & ~NTLM_NEGOTIATE_OEM) | NTLMSSP_NEGOTIATE_UNICODE | NTLMSSP_NEGOTIATE_TARGET_INFO | NTLMSSP_TARGET_TYPE_SERVER) >>> 0;
    this.challengeBytes = encodeChallenge({ flags, serverChallenge: this.serverChallenge, targetName: utf16(id.computer), targetInfo: info, version: null });
    return this.challengeBytes;
  }

  /** The user and domain names the AUTHENTICATE message claims (before verification). */
  static claimed(authBytes: Buffer): { user: string; domain: string } {
    const a = parseAuthenticate(authBytes);
    return { user: fieldText(a.user, a.flags), domain: fieldText(a.domain, a.flags) };
  }

  /**
   * Verify the client's NTLMv2 response against each candidate's NT hash; the first that matches
   * (and whose MIC verifies when present) wins. Returns null when none does.
   */
  verify(authBytes: Buffer, candidates: NtlmCandidate[]): { id: string; user: string; domain: string; session: NtlmSession } | null {
    if (!this.challengeBytes || !this.negotiateBytes) throw new RdpProtocolError('NTLM AUTHENTICATE before CHALLENGE');
    const a = parseAuthenticate(authBytes);
    const user = fieldText(a.user, a.flags);
    const domain = fieldText(a.domain, a.flags);
    if (a.ntChallengeResponse.length < 44) throw new RdpProtocolError('the NTLM client did not send an NTLMv2 response');
    if ((a.flags & REQUIRED) !== REQUIRED) throw new RdpProtocolError('the NTLM AUTHENTICATE message lacks key exchange or extended session security');
    if (a.encryptedRandomSessionKey.length !== 16) throw new RdpProtocolError('bad NTLM encrypted session key');
    const clientPairs = parseAvPairs(a.ntChallengeResponse.subarray(44));
    const avFlags = avGet(clientPairs, MsvAvFlags);
    const micPresent = !!(avFlags && avFlags.length === 4 && avFlags.readUInt32LE(0) & AV_FLAG_MIC);
    for (const c of candidates) {
      const key = ntowfv2FromHash(c.ntHash, user, domain);
      const base = verifyNtlmv2(key, this.serverChallenge, a.ntChallengeResponse);
      if (!base) continue;
      const exportedSessionKey = rc4(kxkey(base), a.encryptedRandomSessionKey);
      if (micPresent) {
        if (!a.mic || a.micOffset === null) return null;
        const zeroed = Buffer.from(authBytes);
        zeroed.fill(0, a.micOffset, a.micOffset + 16);
        const mic = hmacMd5(exportedSessionKey, this.negotiateBytes, this.challengeBytes, zeroed);
        if (!timingSafeEqual(mic, a.mic)) return null;
      }
      return {
        id: c.id, user, domain,
        session: {
          flags: a.flags, exportedSessionKey,
          send: new NtlmSealer(exportedSessionKey, a.flags, 'server-to-client'),
          recv: new NtlmSealer(exportedSessionKey, a.flags, 'client-to-server'),
        },
      };
    }
    return null;
  }
}
