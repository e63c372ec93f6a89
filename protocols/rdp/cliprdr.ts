/**
 * The clipboard virtual channel (MS-RDPECLIP): message codec, and the filter the relay runs on it
 * so a role's clipboard rule holds whatever the client is (xfreerdp, mstsc, the gateway's own
 * browser client).
 *
 * Directions are the person's: `to-server` is their clipboard going to the desktop, `to-client`
 * the desktop's coming back. In a refused direction the filter empties the sender's Format Lists
 * (the other side sees nothing to paste, and the protocol's list/response exchange goes on), answers
 * Format Data Requests for that direction itself with CB_RESPONSE_FAIL, and drops any Format Data
 * Response that would carry content that way. File copy (stream file clipping) is cut out unless
 * the role allows file transfer: the capability flag is cleared both ways, file formats are taken
 * out of Format Lists, and File Contents Requests are answered with a failure.
 */
import { CHANNEL_FLAG_FIRST, CHANNEL_FLAG_LAST, parseChannelChunk } from './channels.js';
import { RdpProtocolError, need } from './errors.js';

export const CB_MONITOR_READY = 0x0001;
export const CB_FORMAT_LIST = 0x0002;
export const CB_FORMAT_LIST_RESPONSE = 0x0003;
export const CB_FORMAT_DATA_REQUEST = 0x0004;
export const CB_FORMAT_DATA_RESPONSE = 0x0005;
export const CB_TEMP_DIRECTORY = 0x0006;
export const CB_CLIP_CAPS = 0x0007;
export const CB_FILECONTENTS_REQUEST = 0x0008;
export const CB_FILECONTENTS_RESPONSE = 0x0009;

export const CB_RESPONSE_OK = 0x0001;
export const CB_RESPONSE_FAIL = 0x0002;
export const CB_ASCII_NAMES = 0x0004;

export const CF_UNICODETEXT = 13;

export const CB_CAPSTYPE_GENERAL = 0x0001;
export const CB_CAPS_VERSION_2 = 0x00000002;
export const CB_USE_LONG_FORMAT_NAMES = 0x00000002;
export const CB_STREAM_FILECLIP_ENABLED = 0x00000004;
export const CB_FILECLIP_NO_FILE_PATHS = 0x00000008;
export const CB_CAN_LOCK_CLIPDATA = 0x00000010;
export const CB_HUGE_FILE_SUPPORT_ENABLED = 0x00000020;

/** Static virtual channel chunks are at most this long (CHANNEL_CHUNK_LENGTH), unless the server says otherwise. */
export const CHANNEL_CHUNK_LENGTH = 1600;
/** A message the filter must rewrite (caps, format list) may be at most this long. */
const MAX_COLLECT = 64 * 1024;
/** Clipboard text kept for the event log. */
const MAX_LOGGED_TEXT = 4096;

/** Format names that carry files rather than text or pictures. */
const FILE_FORMATS = /^(FileGroupDescriptorW?|FileContents|FileNameW?|x-special\/gnome-copied-files|text\/uri-list)$/i;

export interface ClipMessage { type: number; flags: number; data: Buffer }

export function parseClipMessage(m: Buffer): ClipMessage {
  need(m, 0, 8, 'clipboard PDU header');
  const len = m.readUInt32LE(4);
  need(m, 8, len, 'clipboard PDU');
  return { type: m.readUInt16LE(0), flags: m.readUInt16LE(2), data: m.subarray(8, 8 + len) };
}

export function encodeClipMessage(type: number, flags: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16LE(type, 0);
  h.writeUInt16LE(flags, 2);
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data]);
}

/** A message as static virtual channel chunks (CHANNEL_PDU_HEADER + at most chunkSize bytes each). */
export function channelChunks(msg: Buffer, extraFlags = 0, chunkSize = CHANNEL_CHUNK_LENGTH): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < msg.length || off === 0; off += chunkSize) {
    const part = msg.subarray(off, off + chunkSize);
    const h = Buffer.alloc(8);
    h.writeUInt32LE(msg.length, 0);
    h.writeUInt32LE(((off === 0 ? CHANNEL_FLAG_FIRST : 0) | (off + chunkSize >= msg.length ? CHANNEL_FLAG_LAST : 0) | extraFlags) >>> 0, 4);
    out.push(Buffer.concat([h, part]));
    if (!msg.length) break;
  }
  return out;
}

/** generalFlags of a Clipboard Capabilities PDU's general set (0 when it has none). */
export function parseCapsFlags(data: Buffer): number {
  need(data, 0, 4, 'clipboard capabilities');
  const n = data.readUInt16LE(0);
  let off = 4;
  for (let i = 0; i < n && i < 16; i++) {
    need(data, off, 4, 'clipboard capability set');
    const type = data.readUInt16LE(off);
    const len = data.readUInt16LE(off + 2);
    if (len < 4) throw new RdpProtocolError(`clipboard capability set of length ${len}`);
    need(data, off, len, 'clipboard capability set');
    if (type === CB_CAPSTYPE_GENERAL && len >= 12) return data.readUInt32LE(off + 8);
    off += len;
  }
  return 0;
}

/** The capabilities data with generalFlags rewritten by fn (other sets kept). */
export function rewriteCapsFlags(data: Buffer, fn: (flags: number) => number): Buffer {
  const out = Buffer.from(data);
  const n = out.readUInt16LE(0);
  let off = 4;
  for (let i = 0; i < n && i < 16 && off + 4 <= out.length; i++) {
    const type = out.readUInt16LE(off);
    const len = out.readUInt16LE(off + 2);
    if (len < 4 || off + len > out.length) break;
    if (type === CB_CAPSTYPE_GENERAL && len >= 12) out.writeUInt32LE(fn(out.readUInt32LE(off + 8)) >>> 0, off + 8);
    off += len;
  }
  return out;
}

export function encodeCaps(generalFlags: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(1, 0);
  b.writeUInt16LE(CB_CAPSTYPE_GENERAL, 4);
  b.writeUInt16LE(12, 6);
  b.writeUInt32LE(CB_CAPS_VERSION_2, 8);
  b.writeUInt32LE(generalFlags >>> 0, 12);
  return b;
}

export interface ClipFormat { id: number; name: string }

/** The formats of a Format List PDU's data (long names, or the 32-byte short ones). */
export function parseFormatList(data: Buffer, flags: number, longNames: boolean): ClipFormat[] {
  const out: ClipFormat[] = [];
  if (!longNames) {
    if (data.length % 36) throw new RdpProtocolError('short format list not a multiple of 36 bytes');
    for (let off = 0; off < data.length; off += 36) {
      const raw = data.subarray(off + 4, off + 36);
      const name = flags & CB_ASCII_NAMES ? raw.toString('latin1') : raw.toString('utf16le');
      out.push({ id: data.readUInt32LE(off), name: name.replace(/\0[\s\S]*$/, '') });
    }
    return out;
  }
  let off = 0;
  while (off < data.length) {
    need(data, off, 6, 'format list entry');
    const id = data.readUInt32LE(off);
    off += 4;
    let end = off;
    while (end + 1 < data.length && (data[end] !== 0 || data[end + 1] !== 0)) end += 2;
    need(data, end, 2, 'format name');
    out.push({ id, name: data.subarray(off, end).toString('utf16le') });
    off = end + 2;
    if (out.length > 1024) throw new RdpProtocolError('too many clipboard formats');
  }
  return out;
}

export function encodeFormatList(formats: ClipFormat[], longNames: boolean): Buffer {
  if (!longNames) {
    return Buffer.concat(formats.map((f) => {
      const b = Buffer.alloc(36);
      b.writeUInt32LE(f.id >>> 0, 0);
      b.write(f.name.slice(0, 15), 4, 'utf16le');
      return b;
    }));
  }
  return Buffer.concat(formats.map((f) => {
    const id = Buffer.alloc(4);
    id.writeUInt32LE(f.id >>> 0, 0);
    return Buffer.concat([id, Buffer.from(f.name, 'utf16le'), Buffer.alloc(2)]);
  }));
}

/** CF_UNICODETEXT data to a string (up to its terminating NUL). */
export function unicodeText(data: Buffer): string {
  return data.subarray(0, data.length - (data.length % 2)).toString('utf16le').replace(/\0[\s\S]*$/, '');
}

export function encodeUnicodeText(text: string): Buffer {
  return Buffer.concat([Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'utf16le'), Buffer.alloc(2)]);
}

export const CLIP_NAMES: Record<number, string> = {
  [CB_MONITOR_READY]: 'monitor_ready', [CB_FORMAT_LIST]: 'format_list', [CB_FORMAT_LIST_RESPONSE]: 'format_list_response',
  [CB_FORMAT_DATA_REQUEST]: 'format_data_request', [CB_FORMAT_DATA_RESPONSE]: 'format_data_response', [CB_TEMP_DIRECTORY]: 'temp_directory',
  [CB_CLIP_CAPS]: 'capabilities', [CB_FILECONTENTS_REQUEST]: 'file_contents_request', [CB_FILECONTENTS_RESPONSE]: 'file_contents_response',
  0x000a: 'lock_clipdata', 0x000b: 'unlock_clipdata',
};

export interface ClipboardRules {
  /** The person's clipboard may go to the desktop. */
  toServer: boolean;
  /** The desktop's clipboard may come to the person. */
  toClient: boolean;
  /** File copy through the clipboard (stream file clipping). */
  files: boolean;
}

/** What the filter saw and decided, for the event log and the audit. */
export interface ClipboardEvent {
  message: string;
  direction: 'client_to_target' | 'target_to_client';
  allowed: boolean;
  bytes: number;
  formats?: string[];
  /** Text of a CF_UNICODETEXT Format Data Response (shortened). */
  text?: string;
  /** File formats taken out, or a file contents request refused. */
  files?: boolean;
}

interface Side {
  mode: 'pass' | 'drop' | 'collect';
  parts: Buffer[];
  size: number;
  total: number;
  extraFlags: number;
  /** The format this side asked the other for last (what the other's next data response holds). */
  requested: number;
  /** Text of a data response being relayed (or dropped), for the log. */
  textWanted: boolean;
  text: Buffer[];
  textBytes: number;
  logging: ClipboardEvent | null;
  capsFlags: number;
}

const newSide = (): Side => ({ mode: 'pass', parts: [], size: 0, total: 0, extraFlags: 0, requested: -1, textWanted: false, text: [], textBytes: 0, logging: null, capsFlags: -1 });

/** Chunks to forward to the other side and chunks to answer the sender with (channel PDUs). */
export interface FilterResult { forward: Buffer[]; reply: Buffer[] }

export class ClipboardFilter {
  private sides = { client: newSide(), server: newSide() };

  constructor(private rules: ClipboardRules, private onEvent: (e: ClipboardEvent) => void, private chunkSize = CHANNEL_CHUNK_LENGTH) {}

  private get longNames(): boolean {
    const c = this.sides.client.capsFlags, s = this.sides.server.capsFlags;
    return c >= 0 && s >= 0 && (c & s & CB_USE_LONG_FORMAT_NAMES) !== 0;
  }

  /** One channel PDU (CHANNEL_PDU_HEADER + chunk) from the client (fromClient) or the target. */
  push(fromClient: boolean, pdu: Buffer): FilterResult {
    const chunk = parseChannelChunk(pdu);
    const side = fromClient ? this.sides.client : this.sides.server;
    const res: FilterResult = { forward: [], reply: [] };
    if (chunk.flags & CHANNEL_FLAG_FIRST) this.first(fromClient, side, chunk.data, chunk.flags, chunk.length, res);
    if (side.logging) this.logText(side, chunk.data, (chunk.flags & CHANNEL_FLAG_FIRST) !== 0);
    if (side.mode === 'pass') {
      res.forward.push(pdu);
    } else if (side.mode === 'collect') {
      if (side.size + chunk.data.length > MAX_COLLECT) throw new RdpProtocolError(`a clipboard message of more than ${MAX_COLLECT} bytes`);
      side.parts.push(Buffer.from(chunk.data));
      side.size += chunk.data.length;
    }
    if (chunk.flags & CHANNEL_FLAG_LAST) {
      if (side.mode === 'collect') {
        const msg = Buffer.concat(side.parts);
        side.parts = [];
        side.size = 0;
        const out = this.rewrite(fromClient, side, msg);
        if (out) res.forward.push(...channelChunks(out, side.extraFlags, this.chunkSize));
      }
      if (side.logging) {
        const e = side.logging;
        if (side.text.length) e.text = unicodeText(Buffer.concat(side.text)).slice(0, MAX_LOGGED_TEXT);
        this.onEvent(e);
        side.logging = null;
        side.textWanted = false;
        side.text = [];
        side.textBytes = 0;
      }
      side.mode = 'pass';
    }
    return res;
  }

  private direction(fromClient: boolean): ClipboardEvent['direction'] {
    return fromClient ? 'client_to_target' : 'target_to_client';
  }

  /** Decide what to do with a message from its first chunk. */
  private first(fromClient: boolean, side: Side, data: Buffer, flags: number, total: number, res: FilterResult): void {
    side.extraFlags = flags & ~(CHANNEL_FLAG_FIRST | CHANNEL_FLAG_LAST);
    side.total = total;
    side.mode = 'pass';
    if (data.length < 8) throw new RdpProtocolError('clipboard PDU header split across chunks');
    const type = data.readUInt16LE(0);
    const dataLen = data.readUInt32LE(4);
    // Content flows the sender's way for lists and responses, the other way for requests.
    const sending = fromClient ? this.rules.toServer : this.rules.toClient;
    const receiving = fromClient ? this.rules.toClient : this.rules.toServer;
    const direction = this.direction(fromClient);
    switch (type) {
      case CB_CLIP_CAPS:
      case CB_FORMAT_LIST:
        side.mode = 'collect';
        return;
      case CB_FORMAT_DATA_REQUEST: {
        side.requested = data.length >= 12 ? data.readUInt32LE(8) : -1;
        if (receiving) return;
        side.mode = 'drop';
        res.reply.push(...channelChunks(encodeClipMessage(CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_FAIL), side.extraFlags, this.chunkSize));
        return;
      }
      case CB_FORMAT_DATA_RESPONSE: {
        // The answer to the other side's request; a failure carries nothing and always passes.
        const other = fromClient ? this.sides.server : this.sides.client;
        const failed = (data.readUInt16LE(2) & CB_RESPONSE_FAIL) !== 0;
        side.logging = failed ? null : { message: 'format_data_response', direction, allowed: sending, bytes: dataLen };
        side.textWanted = !failed && other.requested === CF_UNICODETEXT;
        side.text = [];
        side.textBytes = 0;
        if (!sending && !failed) side.mode = 'drop';
        return;
      }
      case CB_FILECONTENTS_REQUEST: {
        // The request asks for file data flowing the other way.
        if (this.rules.files && receiving) {
          this.onEvent({ message: 'file_contents_request', direction, allowed: true, bytes: dataLen, files: true });
          return;
        }
        side.mode = 'drop';
        this.onEvent({ message: 'file_contents_request', direction, allowed: false, bytes: dataLen, files: true });
        const stream = data.length >= 12 ? data.subarray(8, 12) : Buffer.alloc(4);
        res.reply.push(...channelChunks(encodeClipMessage(CB_FILECONTENTS_RESPONSE, CB_RESPONSE_FAIL, Buffer.from(stream)), side.extraFlags, this.chunkSize));
        return;
      }
      case CB_FILECONTENTS_RESPONSE:
        if (this.rules.files && sending) return;
        side.mode = 'drop';
        return;
      default:
    }
  }

  private logText(side: Side, data: Buffer, first: boolean): void {
    if (!side.textWanted || side.textBytes >= MAX_LOGGED_TEXT * 2) return;
    const body = first ? data.subarray(8) : data;
    const part = body.subarray(0, MAX_LOGGED_TEXT * 2 - side.textBytes);
    side.text.push(Buffer.from(part));
    side.textBytes += part.length;
  }

  /** A collected caps or format list message, rewritten for the rules (null: dropped). */
  private rewrite(fromClient: boolean, side: Side, raw: Buffer): Buffer | null {
    const m = parseClipMessage(raw);
    const direction = this.direction(fromClient);
    if (m.type === CB_CLIP_CAPS) {
      side.capsFlags = parseCapsFlags(m.data);
      if (this.rules.files) return raw;
      return encodeClipMessage(m.type, m.flags, rewriteCapsFlags(m.data, (f) => f & ~(CB_STREAM_FILECLIP_ENABLED | CB_FILECLIP_NO_FILE_PATHS | CB_HUGE_FILE_SUPPORT_ENABLED)));
    }
    // Format List: what the sender offers to paste on the other side. Should a peer use the other
    // name variant than the capabilities say, that one is tried; a list neither reads as is sent on
    // only where everything it could hold is allowed, else it is emptied.
    const sending = fromClient ? this.rules.toServer : this.rules.toClient;
    let longNames = this.longNames;
    let formats: ClipFormat[] | null = null;
    for (const variant of [longNames, !longNames]) {
      try { formats = parseFormatList(m.data, m.flags, variant); longNames = variant; break; } catch { /* the other variant */ }
    }
    if (!formats) {
      const pass = sending && this.rules.files;
      this.onEvent({ message: 'format_list', direction, allowed: pass, bytes: m.data.length, formats: [] });
      return pass ? raw : encodeClipMessage(CB_FORMAT_LIST, 0, Buffer.alloc(0));
    }
    const files = formats.filter((f) => FILE_FORMATS.test(f.name));
    const kept = !sending ? [] : this.rules.files ? formats : formats.filter((f) => !FILE_FORMATS.test(f.name));
    if (formats.length) {
      this.onEvent({
        message: 'format_list', direction, allowed: sending, bytes: m.data.length, formats: formats.map((f) => f.name || String(f.id)).slice(0, 32),
        ...(files.length && !this.rules.files ? { files: true } : {}),
      });
    } else {
      this.onEvent({ message: 'format_list', direction, allowed: true, bytes: 0, formats: [] });
    }
    if (kept.length === formats.length) return raw;
    return encodeClipMessage(CB_FORMAT_LIST, longNames ? 0 : m.flags, encodeFormatList(kept, longNames));
  }
}
