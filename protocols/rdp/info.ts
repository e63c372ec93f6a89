/**
 * The Client Info PDU (TS_INFO_PACKET): code page, flags, and domain / user name / password /
 * alternate shell / working directory as UTF-16LE strings (lengths exclude the terminating NUL),
 * followed by the extended info kept verbatim. The gateway reads the person's target and
 * connection secret from it and writes the minted credential with auto-logon upstream.
 */
import { Secret } from '../../auth/secret.js';
import { RdpProtocolError, need } from './errors.js';

export const INFO_MOUSE = 0x00000001;
export const INFO_DISABLECTRLALTDEL = 0x00000002;
export const INFO_AUTOLOGON = 0x00000008;
export const INFO_UNICODE = 0x00000010;
export const INFO_MAXIMIZESHELL = 0x00000020;
export const INFO_COMPRESSION = 0x00000080;
export const INFO_COMPRESSION_TYPE_MASK = 0x00001e00;
export const INFO_PASSWORD_IS_SC_PIN = 0x00040000;

/** Longest string field accepted (bytes, UTF-16). The spec allows 512 for most; 256 for the password. */
const MAX_FIELD = 512;

export interface ClientInfo {
  codePage: number;
  flags: number;
  domain: string;
  userName: string;
  password: Secret;
  alternateShell: string;
  workingDir: string;
  /** TS_EXTENDED_INFO_PACKET and anything after, verbatim. */
  extra: Buffer;
}

export function parseClientInfo(p: Buffer): ClientInfo {
  need(p, 0, 18, 'Client Info PDU');
  const codePage = p.readUInt32LE(0);
  const flags = p.readUInt32LE(4);
  const unicode = (flags & INFO_UNICODE) !== 0;
  const lens = [0, 1, 2, 3, 4].map((i) => p.readUInt16LE(8 + i * 2));
  const nul = unicode ? 2 : 1;
  let off = 18;
  const fields: string[] = [];
  for (const len of lens) {
    if (len > MAX_FIELD) throw new RdpProtocolError(`Client Info field of ${len} bytes is too long`);
    if (unicode && len % 2) throw new RdpProtocolError('Client Info field of odd length');
    need(p, off, len + nul, 'Client Info field');
    fields.push(p.subarray(off, off + len).toString(unicode ? 'utf16le' : 'latin1'));
    off += len + nul;
  }
  return {
    codePage, flags, domain: fields[0]!, userName: fields[1]!, password: new Secret(fields[2]!),
    alternateShell: fields[3]!, workingDir: fields[4]!, extra: Buffer.from(p.subarray(off)),
  };
}

export function encodeClientInfo(ci: ClientInfo): Buffer {
  const unicode = (ci.flags & INFO_UNICODE) !== 0;
  const enc = (s: string) => Buffer.concat([Buffer.from(s, unicode ? 'utf16le' : 'latin1'), Buffer.alloc(unicode ? 2 : 1)]);
  const strs = [ci.domain, ci.userName, ci.password.reveal(), ci.alternateShell, ci.workingDir].map(enc);
  const head = Buffer.alloc(18);
  head.writeUInt32LE(ci.codePage >>> 0, 0);
  head.writeUInt32LE(ci.flags >>> 0, 4);
  strs.forEach((s, i) => {
    const len = s.length - (unicode ? 2 : 1);
    if (len > MAX_FIELD) throw new RdpProtocolError('Client Info field too long');
    head.writeUInt16LE(len, 8 + i * 2);
  });
  return Buffer.concat([head, ...strs, ci.extra]);
}

/**
 * The Client Info the target sees: minted user name and password, auto-logon on, bulk compression
 * off (the recorder reads the update stream), no alternate shell the person chose.
 */
export function rewriteClientInfo(ci: ClientInfo, cred: { username: string; password: Secret; domain?: string }): ClientInfo {
  let flags = (ci.flags | INFO_AUTOLOGON | INFO_UNICODE) & ~(INFO_COMPRESSION | INFO_COMPRESSION_TYPE_MASK | INFO_PASSWORD_IS_SC_PIN);
  flags >>>= 0;
  return { ...ci, flags, domain: cred.domain ?? '', userName: cred.username, password: cred.password, alternateShell: '', workingDir: '' };
}
