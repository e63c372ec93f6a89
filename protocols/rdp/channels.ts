/**
 * Static virtual channel PDUs: CHANNEL_PDU_HEADER (total length of the reassembled message,
 * flags with FIRST/LAST) and, for the channels the recorder reports, the first header of a
 * reassembled message: cliprdr (clipboard) and rdpdr (drive redirection).
 */
import { need } from './errors.js';

export const CHANNEL_FLAG_FIRST = 0x01;
export const CHANNEL_FLAG_LAST = 0x02;

export interface ChannelChunk { length: number; flags: number; data: Buffer }

export function parseChannelChunk(p: Buffer): ChannelChunk {
  need(p, 0, 8, 'virtual channel header');
  return { length: p.readUInt32LE(0), flags: p.readUInt32LE(4), data: p.subarray(8) };
}

/** Reassembles one channel's chunks into messages, up to a size limit (larger ones are summarised). */
export class ChannelAssembler {
  private parts: Buffer[] = [];
  private size = 0;
  private total = 0;
  constructor(private readonly limit = 1 << 20) {}

  /** Returns a message once its LAST chunk arrived: its first bytes (up to the limit) and its total length. */
  push(c: ChannelChunk): { head: Buffer; length: number } | null {
    if (c.flags & CHANNEL_FLAG_FIRST) { this.parts = []; this.size = 0; this.total = c.length; }
    if (this.size < this.limit) {
      const take = c.data.subarray(0, this.limit - this.size);
      this.parts.push(Buffer.from(take));
      this.size += take.length;
    }
    if (!(c.flags & CHANNEL_FLAG_LAST)) return null;
    const head = Buffer.concat(this.parts);
    this.parts = [];
    this.size = 0;
    return { head, length: this.total };
  }
}

export const CLIPRDR_MSG: Record<number, string> = {
  0x0001: 'monitor_ready', 0x0002: 'format_list', 0x0003: 'format_list_response', 0x0004: 'format_data_request',
  0x0005: 'format_data_response', 0x0006: 'temp_directory', 0x0007: 'capabilities', 0x0008: 'file_contents_request',
  0x0009: 'file_contents_response', 0x000a: 'lock_clipdata', 0x000b: 'unlock_clipdata',
};

export interface ClipboardMessage { type: string; flags: number; dataLen: number; data: Buffer }

export function parseClipboard(m: Buffer): ClipboardMessage {
  need(m, 0, 8, 'clipboard header');
  const t = m.readUInt16LE(0);
  return { type: CLIPRDR_MSG[t] ?? `0x${t.toString(16)}`, flags: m.readUInt16LE(2), dataLen: m.readUInt32LE(4), data: m.subarray(8) };
}

/** rdpdr: component 0x4472 ('rD') core; packet ids of interest. */
export const RDPDR_PACKET: Record<number, string> = {
  0x496e: 'server_announce', 0x4343: 'client_id_confirm', 0x434e: 'client_name', 0x4441: 'device_list_announce',
  0x4472: 'device_reply', 0x4952: 'device_iorequest', 0x4943: 'device_iocompletion', 0x5350: 'server_capability',
  0x4350: 'client_capability', 0x444d: 'device_list_remove', 0x5543: 'client_id_confirm', 0x554c: 'user_loggedon',
};

export interface RdpdrMessage { component: number; packet: string; body: Buffer }

export function parseRdpdr(m: Buffer): RdpdrMessage {
  need(m, 0, 4, 'rdpdr header');
  const p = m.readUInt16LE(2);
  return { component: m.readUInt16LE(0), packet: RDPDR_PACKET[p] ?? `0x${p.toString(16)}`, body: m.subarray(4) };
}

export interface AnnouncedDevice { type: number; id: number; name: string }

/** Devices of a Device List Announce (type 8 = filesystem drive, 4 = printer, 1 = serial, 2 = parallel, 0x20 = smartcard). */
export function parseDeviceListAnnounce(body: Buffer): AnnouncedDevice[] {
  need(body, 0, 4, 'device list');
  const n = Math.min(body.readUInt32LE(0), 64);
  const out: AnnouncedDevice[] = [];
  let off = 4;
  for (let i = 0; i < n; i++) {
    need(body, off, 20, 'device announce');
    const type = body.readUInt32LE(off);
    const id = body.readUInt32LE(off + 4);
    const dosName = body.subarray(off + 8, off + 16);
    const z = dosName.indexOf(0);
    const len = body.readUInt32LE(off + 16);
    need(body, off + 20, len, 'device data');
    out.push({ type, id, name: dosName.subarray(0, z < 0 ? 8 : z).toString('latin1').replace(/[^\x20-\x7e]/g, '?') });
    off += 20 + len;
  }
  return out;
}
