/**
 * The LOGIN7 message (MS-TDS 2.2.6.4): a fixed part of 94 bytes (TDS 7.2+) with offset/length
 * pairs into a variable part of UTF-16LE strings, the obfuscated password, an SSPI blob and the
 * feature extension block. Every offset and length is checked against the message.
 */
import { Secret } from '../../auth/secret.js';
import { ProtocolError } from './packets.js';

/** TDS versions as LOGIN7 carries them (little-endian DWORD) and LOGINACK returns them (big-endian). */
export const TDS = {
  V7_2: 0x72090002,
  V7_3A: 0x730a0003,
  V7_3B: 0x730b0003,
  V7_4: 0x74000004,
  V8_0: 0x08000000,
} as const;

export const OPT2_INTEGRATED_SECURITY = 0x80;
export const OPT3_CHANGE_PASSWORD = 0x01;
export const OPT3_EXTENSION = 0x10;

/** Feature extension ids (2.2.6.4 FeatureExt). */
export const FEATURE = {
  SESSIONRECOVERY: 0x01,
  FEDAUTH: 0x02,
  COLUMNENCRYPTION: 0x04,
  GLOBALTRANSACTIONS: 0x05,
  AZURESQLSUPPORT: 0x08,
  DATACLASSIFICATION: 0x09,
  UTF8_SUPPORT: 0x0a,
  AZURESQLDNSCACHING: 0x0b,
  JSONSUPPORT: 0x0d,
  VECTORSUPPORT: 0x0e,
  TERMINATOR: 0xff,
} as const;

export const FIXED_LENGTH = 94;

export interface Feature { id: number; data: Buffer }

export interface Login7 {
  tdsVersion: number;
  packetSize: number;
  clientProgVer: number;
  clientPid: number;
  connectionId: number;
  optionFlags1: number;
  optionFlags2: number;
  typeFlags: number;
  optionFlags3: number;
  clientTimeZone: number;
  clientLcid: number;
  hostName: string;
  userName: string;
  password: Secret;
  appName: string;
  serverName: string;
  cltIntName: string;
  language: string;
  database: string;
  clientId: Buffer;
  /** Length of the SSPI (integrated authentication) blob; the gateway does not take it. */
  sspiLength: number;
  atchDbFile: string;
  /** A new password was sent (fChangePassword): refused, secrets are not changed through a login. */
  changePassword: boolean;
  features: Feature[];
}

/** LOGIN7 obfuscation of a UTF-16LE password: nibbles swapped, then XOR 0xA5 (and back). */
export function obfuscatePassword(utf16: Buffer): Buffer {
  const out = Buffer.allocUnsafe(utf16.length);
  for (let i = 0; i < utf16.length; i++) {
    const b = utf16[i]!;
    out[i] = (((b << 4) & 0xf0) | (b >> 4)) ^ 0xa5;
  }
  return out;
}

export function deobfuscatePassword(data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(data.length);
  for (let i = 0; i < data.length; i++) {
    const b = data[i]! ^ 0xa5;
    out[i] = ((b << 4) & 0xf0) | (b >> 4);
  }
  return out;
}

const MAX_FEATURES = 32;

export function parseFeatures(buf: Buffer, at: number): Feature[] {
  const out: Feature[] = [];
  for (;;) {
    if (at >= buf.length) throw new ProtocolError('LOGIN7 feature extension without a terminator');
    const id = buf[at]!;
    if (id === FEATURE.TERMINATOR) return out;
    if (out.length >= MAX_FEATURES) throw new ProtocolError('LOGIN7 with too many features');
    if (at + 5 > buf.length) throw new ProtocolError('LOGIN7 feature header truncated');
    const len = buf.readUInt32LE(at + 1);
    if (at + 5 + len > buf.length) throw new ProtocolError(`LOGIN7 feature 0x${id.toString(16)} longer than the message`);
    out.push({ id, data: buf.subarray(at + 5, at + 5 + len) });
    at += 5 + len;
  }
}

export function parseLogin7(buf: Buffer): Login7 {
  if (buf.length < FIXED_LENGTH) throw new ProtocolError('LOGIN7 shorter than its fixed part');
  const length = buf.readUInt32LE(0);
  if (length < FIXED_LENGTH || length > buf.length) throw new ProtocolError('LOGIN7 length does not match the message');
  const msg = buf.subarray(0, length);
  const str = (pos: number, what: string): string => {
    const off = msg.readUInt16LE(pos);
    const cch = msg.readUInt16LE(pos + 2);
    if (!cch) return '';
    if (off < FIXED_LENGTH || off + cch * 2 > length) throw new ProtocolError(`LOGIN7 ${what} points outside the message`);
    return msg.toString('utf16le', off, off + cch * 2);
  };
  const bytes = (off: number, cb: number, what: string): Buffer => {
    if (!cb) return Buffer.alloc(0);
    if (off < FIXED_LENGTH || off + cb > length) throw new ProtocolError(`LOGIN7 ${what} points outside the message`);
    return msg.subarray(off, off + cb);
  };
  const optionFlags3 = msg[27]!;
  const pwOff = msg.readUInt16LE(44);
  const pwLen = msg.readUInt16LE(46);
  const password = bytes(pwOff, pwLen * 2, 'password');
  let features: Feature[] = [];
  const extOff = msg.readUInt16LE(56);
  const extLen = msg.readUInt16LE(58);
  if (optionFlags3 & OPT3_EXTENSION && extLen) {
    const ptr = bytes(extOff, extLen, 'extension');
    if (ptr.length < 4) throw new ProtocolError('LOGIN7 extension pointer truncated');
    const at = ptr.readUInt32LE(0);
    if (at < FIXED_LENGTH || at >= length) throw new ProtocolError('LOGIN7 feature extension points outside the message');
    features = parseFeatures(msg, at);
  }
  const sspiShort = msg.readUInt16LE(80);
  const sspiLong = msg.readUInt32LE(90);
  return {
    tdsVersion: msg.readUInt32LE(4),
    packetSize: msg.readUInt32LE(8),
    clientProgVer: msg.readUInt32LE(12),
    clientPid: msg.readUInt32LE(16),
    connectionId: msg.readUInt32LE(20),
    optionFlags1: msg[24]!,
    optionFlags2: msg[25]!,
    typeFlags: msg[26]!,
    optionFlags3,
    clientTimeZone: msg.readInt32LE(28),
    clientLcid: msg.readUInt32LE(32),
    hostName: str(36, 'host name'),
    userName: str(40, 'user name'),
    password: new Secret(deobfuscatePassword(password).toString('utf16le')),
    appName: str(48, 'application name'),
    serverName: str(52, 'server name'),
    cltIntName: str(60, 'client interface name'),
    language: str(64, 'language'),
    database: str(68, 'database'),
    clientId: Buffer.from(msg.subarray(72, 78)),
    sspiLength: sspiShort === 0xffff ? sspiLong : sspiShort,
    atchDbFile: str(82, 'attach file'),
    changePassword: !!(optionFlags3 & OPT3_CHANGE_PASSWORD) || msg.readUInt16LE(88) > 0,
    features,
  };
}

export interface Login7Fields {
  tdsVersion: number;
  packetSize: number;
  clientProgVer?: number;
  clientPid?: number;
  optionFlags1?: number;
  optionFlags2?: number;
  typeFlags?: number;
  optionFlags3?: number;
  clientTimeZone?: number;
  clientLcid?: number;
  hostName?: string;
  userName: string;
  password: string;
  appName?: string;
  serverName?: string;
  cltIntName?: string;
  language?: string;
  database?: string;
  clientId?: Buffer;
  features?: Feature[];
}

/** Build a LOGIN7 (SQL authentication, no SSPI, no password change). */
export function buildLogin7(f: Login7Fields): Buffer {
  const fixed = Buffer.alloc(FIXED_LENGTH);
  const parts: Buffer[] = [];
  let off = FIXED_LENGTH;
  const put = (pos: number, data: Buffer, units: number) => {
    fixed.writeUInt16LE(data.length ? off : 0, pos);
    fixed.writeUInt16LE(units, pos + 2);
    parts.push(data);
    off += data.length;
  };
  const s = (v: string | undefined) => Buffer.from(v ?? '', 'utf16le');
  const features = f.features ?? [];
  let opt3 = (f.optionFlags3 ?? 0) & ~(OPT3_CHANGE_PASSWORD | OPT3_EXTENSION);
  if (features.length) opt3 |= OPT3_EXTENSION;
  fixed.writeUInt32LE(f.tdsVersion >>> 0, 4);
  fixed.writeUInt32LE(f.packetSize >>> 0, 8);
  fixed.writeUInt32LE((f.clientProgVer ?? 0) >>> 0, 12);
  fixed.writeUInt32LE((f.clientPid ?? 0) >>> 0, 16);
  fixed.writeUInt32LE(0, 20);
  fixed[24] = f.optionFlags1 ?? 0xe0;
  fixed[25] = (f.optionFlags2 ?? 0x03) & ~OPT2_INTEGRATED_SECURITY;
  fixed[26] = f.typeFlags ?? 0;
  fixed[27] = opt3;
  fixed.writeInt32LE(f.clientTimeZone ?? 0, 28);
  fixed.writeUInt32LE((f.clientLcid ?? 0x409) >>> 0, 32);
  put(36, s(f.hostName), (f.hostName ?? '').length);
  put(40, s(f.userName), f.userName.length);
  put(44, obfuscatePassword(s(f.password)), f.password.length);
  put(48, s(f.appName), (f.appName ?? '').length);
  put(52, s(f.serverName), (f.serverName ?? '').length);
  // ibExtension: a 4-byte pointer to the feature block, which goes at the end.
  const extPtr = Buffer.alloc(features.length ? 4 : 0);
  put(56, extPtr, extPtr.length);
  put(60, s(f.cltIntName), (f.cltIntName ?? '').length);
  put(64, s(f.language), (f.language ?? '').length);
  put(68, s(f.database), (f.database ?? '').length);
  (f.clientId ?? Buffer.alloc(6)).copy(fixed, 72, 0, 6);
  put(78, Buffer.alloc(0), 0); // SSPI
  put(82, Buffer.alloc(0), 0); // AtchDBFile
  put(86, Buffer.alloc(0), 0); // ChangePassword
  fixed.writeUInt32LE(0, 90);
  if (features.length) {
    extPtr.writeUInt32LE(off, 0);
    for (const ft of features) {
      const h = Buffer.alloc(5);
      h[0] = ft.id;
      h.writeUInt32LE(ft.data.length, 1);
      parts.push(h, ft.data);
      off += 5 + ft.data.length;
    }
    parts.push(Buffer.from([FEATURE.TERMINATOR]));
    off += 1;
  }
  fixed.writeUInt32LE(off, 0);
  return Buffer.concat([fixed, ...parts]);
}

/** "7.4" for logs and audit. */
export function tdsVersionName(v: number): string {
  switch (v) {
    case TDS.V7_2: return '7.2';
    case TDS.V7_3A: return '7.3A';
    case TDS.V7_3B: return '7.3B';
    case TDS.V7_4: return '7.4';
    case TDS.V8_0: return '8.0';
    default: return `0x${(v >>> 0).toString(16)}`;
  }
}
