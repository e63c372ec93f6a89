/**
 * T.124 GCC Conference Create Request / Response as carried in the MCS connect PDUs, and the RDP
 * user data blocks inside them (client core, security, network data; server core, security,
 * network data). Blocks the gateway does not change are kept verbatim.
 */
import { RdpProtocolError, need } from './errors.js';
import { perLength, perReadLength } from './mcs.js';

export const CS_CORE = 0xc001;
export const CS_SECURITY = 0xc002;
export const CS_NET = 0xc003;
export const CS_CLUSTER = 0xc004;
export const CS_MONITOR = 0xc005;
export const CS_MCS_MSGCHANNEL = 0xc006;
export const CS_MONITOR_EX = 0xc008;
export const CS_MULTITRANSPORT = 0xc00a;
export const SC_CORE = 0x0c01;
export const SC_SECURITY = 0x0c02;
export const SC_NET = 0x0c03;

export const RNS_UD_CS_SUPPORT_DYNVC_GFX_PROTOCOL = 0x0100;

export interface Block { type: number; data: Buffer }

const T124_PREFIX = Buffer.from([0x00, 0x05, 0x00, 0x14, 0x7c, 0x00, 0x01]);
const REQUEST_HEAD = Buffer.from([0x00, 0x08, 0x00, 0x10, 0x00, 0x01, 0xc0, 0x00]);
const RESPONSE_HEAD = Buffer.from([0x14, 0x76, 0x0a, 0x01, 0x01, 0x00, 0x01, 0xc0, 0x00]);

export function parseBlocks(p: Buffer): Block[] {
  const out: Block[] = [];
  let off = 0;
  while (off < p.length) {
    need(p, off, 4, 'GCC user data block header');
    const type = p.readUInt16LE(off);
    const len = p.readUInt16LE(off + 2);
    if (len < 4) throw new RdpProtocolError(`GCC user data block 0x${type.toString(16)} has length ${len}`);
    need(p, off, len, 'GCC user data block');
    out.push({ type, data: Buffer.from(p.subarray(off + 4, off + len)) });
    off += len;
    if (out.length > 64) throw new RdpProtocolError('too many GCC user data blocks');
  }
  return out;
}

export function encodeBlocks(blocks: Block[]): Buffer {
  return Buffer.concat(blocks.map((b) => {
    const h = Buffer.alloc(4);
    h.writeUInt16LE(b.type, 0);
    h.writeUInt16LE(b.data.length + 4, 2);
    return Buffer.concat([h, b.data]);
  }));
}

function userDataAfter(p: Buffer, key: string, what: string): Buffer {
  need(p, 0, T124_PREFIX.length, what);
  if (!p.subarray(0, T124_PREFIX.length).equals(T124_PREFIX)) throw new RdpProtocolError(`${what}: not a T.124 ConnectData`);
  const at = p.indexOf(key, T124_PREFIX.length, 'latin1');
  if (at < 0 || at > 40) throw new RdpProtocolError(`${what}: no ${key} key`);
  const [len, used] = perReadLength(p, at + 4);
  need(p, at + 4 + used, len, what);
  return p.subarray(at + 4 + used, at + 4 + used + len);
}

export function parseConferenceCreateRequest(p: Buffer): Block[] {
  return parseBlocks(userDataAfter(p, 'Duca', 'GCC Conference Create Request'));
}

export function parseConferenceCreateResponse(p: Buffer): Block[] {
  return parseBlocks(userDataAfter(p, 'McDn', 'GCC Conference Create Response'));
}

function wrap(head: Buffer, key: string, blocks: Block[]): Buffer {
  const ud = encodeBlocks(blocks);
  const body = Buffer.concat([head, Buffer.from(key, 'latin1'), perLength(ud.length), ud]);
  return Buffer.concat([T124_PREFIX, perLength(body.length), body]);
}

export function encodeConferenceCreateRequest(blocks: Block[]): Buffer { return wrap(REQUEST_HEAD, 'Duca', blocks); }
export function encodeConferenceCreateResponse(blocks: Block[]): Buffer { return wrap(RESPONSE_HEAD, 'McDn', blocks); }

// ---- client core data (offsets are into the block's data, after the 4-byte header) ----
const CORE_WIDTH = 4;
const CORE_HEIGHT = 6;
const CORE_COLOR_DEPTH = 8;
const CORE_HIGH_COLOR_DEPTH = 136;
const CORE_EARLY_CAPS = 140;
const CORE_SERVER_SELECTED = 208;

export interface ClientCore { version: number; width: number; height: number; highColorDepth: number | null; earlyCapabilityFlags: number | null; serverSelectedProtocol: number | null }

export function readClientCore(d: Buffer): ClientCore {
  need(d, 0, 128, 'client core data');
  return {
    version: d.readUInt32LE(0),
    width: d.readUInt16LE(CORE_WIDTH),
    height: d.readUInt16LE(CORE_HEIGHT),
    highColorDepth: d.length >= CORE_HIGH_COLOR_DEPTH + 2 ? d.readUInt16LE(CORE_HIGH_COLOR_DEPTH) : null,
    earlyCapabilityFlags: d.length >= CORE_EARLY_CAPS + 2 ? d.readUInt16LE(CORE_EARLY_CAPS) : null,
    serverSelectedProtocol: d.length >= CORE_SERVER_SELECTED + 4 ? d.readUInt32LE(CORE_SERVER_SELECTED) : null,
  };
}

/** A copy of the client core data with serverSelectedProtocol set and the GFX early capability cleared. */
export function patchClientCore(d: Buffer, serverSelectedProtocol: number): Buffer {
  const out = Buffer.from(d);
  if (out.length >= CORE_EARLY_CAPS + 2) out.writeUInt16LE(out.readUInt16LE(CORE_EARLY_CAPS) & ~RNS_UD_CS_SUPPORT_DYNVC_GFX_PROTOCOL, CORE_EARLY_CAPS);
  if (out.length >= CORE_SERVER_SELECTED + 4) out.writeUInt32LE(serverSelectedProtocol >>> 0, CORE_SERVER_SELECTED);
  void CORE_COLOR_DEPTH;
  return out;
}

export interface ChannelDef { name: string; options: number }

export function readClientNetwork(d: Buffer): ChannelDef[] {
  need(d, 0, 4, 'client network data');
  const n = d.readUInt32LE(0);
  if (n > 31) throw new RdpProtocolError(`client network data asks for ${n} channels (at most 31)`);
  need(d, 4, n * 12, 'client network data');
  const out: ChannelDef[] = [];
  for (let i = 0; i < n; i++) {
    const raw = d.subarray(4 + i * 12, 4 + i * 12 + 8);
    const end = raw.indexOf(0);
    out.push({ name: raw.subarray(0, end < 0 ? 8 : end).toString('latin1').toLowerCase(), options: d.readUInt32LE(4 + i * 12 + 8) });
  }
  return out;
}

export function encodeClientNetwork(chs: ChannelDef[]): Buffer {
  const b = Buffer.alloc(4 + chs.length * 12);
  b.writeUInt32LE(chs.length, 0);
  chs.forEach((c, i) => {
    b.write(c.name.slice(0, 7), 4 + i * 12, 'latin1');
    b.writeUInt32LE(c.options >>> 0, 4 + i * 12 + 8);
  });
  return b;
}

export interface ServerNetwork { ioChannel: number; channelIds: number[] }

export function readServerNetwork(d: Buffer): ServerNetwork {
  need(d, 0, 4, 'server network data');
  const n = d.readUInt16LE(2);
  need(d, 4, n * 2, 'server network data');
  const ids: number[] = [];
  for (let i = 0; i < n; i++) ids.push(d.readUInt16LE(4 + i * 2));
  return { ioChannel: d.readUInt16LE(0), channelIds: ids };
}

export function encodeServerNetwork(s: ServerNetwork): Buffer {
  const n = s.channelIds.length;
  const b = Buffer.alloc(4 + n * 2 + (n % 2 ? 2 : 0));
  b.writeUInt16LE(s.ioChannel, 0);
  b.writeUInt16LE(n, 2);
  s.channelIds.forEach((id, i) => b.writeUInt16LE(id, 4 + i * 2));
  return b;
}

export function encodeServerCore(clientRequestedProtocols: number, earlyCapabilityFlags = 0): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(0x00080004, 0);
  b.writeUInt32LE(clientRequestedProtocols >>> 0, 4);
  b.writeUInt32LE(earlyCapabilityFlags >>> 0, 8);
  return b;
}

/** Server security data for TLS: no RDP standard security (method 0, level 0). */
export function encodeServerSecurityNone(): Buffer { return Buffer.alloc(8); }

/** Server core data: clientRequestedProtocols patched (FreeRDP refuses a mismatch with what it asked for). */
export function patchServerCore(d: Buffer, clientRequestedProtocols: number): Buffer {
  const out = Buffer.from(d);
  if (out.length >= 8) out.writeUInt32LE(clientRequestedProtocols >>> 0, 4);
  return out;
}
