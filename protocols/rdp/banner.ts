/**
 * A gateway banner as RDP: slow-path Update PDUs (TS_UPDATE_BITMAP) with uncompressed bitmaps in
 * the session's colour depth, as the target would send them, so every client draws them (xfreerdp,
 * mstsc, the gateway's own browser client). The banner is cut into tiles of at most 64x32 pixels
 * so each PDU stays well below the MCS length the gateway encodes. The same update bodies go to the
 * recorder, which decodes them like the target's bitmaps: the recording shows what the client shows.
 */
import { renderBanner, type BannerKind } from '../banner.js';
import { encodeDomainPdu } from './mcs.js';
import { encodeShareControl, encodeShareData, PDUTYPE_DATA, PDUTYPE2_UPDATE, UPDATETYPE_BITMAP } from './pdu.js';
import { encodeTpkt } from './tpkt.js';
import { encodeData } from './x224.js';

/** One tile per PDU: at most 64*32*4 = 8 KiB of pixels. */
const TILE_W = 64;
const TILE_H = 32;

/** Where the banner's PDUs go, learnt from the target's Demand Active and its first PDUs. */
export interface BannerTarget {
  shareId: number;
  /** The target's share control pduSource (its channel, usually 1002). */
  pduSource: number;
  /** The MCS initiator of the target's PDUs. */
  initiator: number;
  /** The client-side I/O channel. */
  ioChannel: number;
  /** The session's colour depth (15, 16, 24 or 32). */
  bpp: number;
  width: number;
  height: number;
}

export interface RdpBanner {
  /** TPKT frames for the client, in order. */
  frames: Buffer[];
  /** The TS_UPDATE_BITMAP_DATA bodies of those frames (for the recorder). */
  updates: Buffer[];
}

function bytesPerPixel(bpp: number): number {
  return bpp === 32 ? 4 : bpp === 24 ? 3 : bpp === 15 || bpp === 16 ? 2 : 0;
}

/** Uncompressed bitmap data of a tile: bottom-up rows padded to 4 bytes, little-endian pixels. */
function tileData(rgba: Uint8Array, stride: number, x0: number, y0: number, w: number, h: number, padW: number, bpp: number): Buffer {
  const bytes = bytesPerPixel(bpp);
  const row = (padW * bytes + 3) & ~3;
  const out = Buffer.alloc(row * h);
  for (let y = 0; y < h; y++) {
    const dst = (h - 1 - y) * row;
    for (let x = 0; x < w; x++) {
      const s = ((y0 + y) * stride + x0 + x) * 4;
      const r = rgba[s]!, g = rgba[s + 1]!, b = rgba[s + 2]!;
      const d = dst + x * bytes;
      if (bytes >= 3) { out[d] = b; out[d + 1] = g; out[d + 2] = r; if (bytes === 4) out[d + 3] = 255; }
      else {
        const v = bpp === 16 ? ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3) : ((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3);
        out.writeUInt16LE(v, d);
      }
    }
  }
  return out;
}

function bitmapData(left: number, top: number, w: number, h: number, padW: number, bpp: number, data: Buffer): Buffer {
  const b = Buffer.alloc(18);
  b.writeUInt16LE(left, 0);
  b.writeUInt16LE(top, 2);
  b.writeUInt16LE(left + w - 1, 4);
  b.writeUInt16LE(top + h - 1, 6);
  b.writeUInt16LE(padW, 8);
  b.writeUInt16LE(h, 10);
  b.writeUInt16LE(bpp, 12);
  b.writeUInt16LE(0, 14); // uncompressed
  b.writeUInt16LE(data.length, 16);
  return Buffer.concat([b, data]);
}

function updateFrame(t: BannerTarget, body: Buffer): Buffer {
  const sc = encodeShareControl(PDUTYPE_DATA, t.pduSource, encodeShareData(t.shareId, PDUTYPE2_UPDATE, body));
  return encodeTpkt(encodeData(encodeDomainPdu({ type: 'sendData', indication: true, initiator: t.initiator, channelId: t.ioChannel, flags: 0x70, data: sc })));
}

/** The banner as Update PDUs; null when the colour depth has no uncompressed form here (8 bpp). */
export function bannerPdus(t: BannerTarget, text: string, kind: BannerKind): RdpBanner | null {
  if (!bytesPerPixel(t.bpp) || t.width <= 0 || t.height <= 0) return null;
  const b = renderBanner(t.width, t.height, text, kind);
  const frames: Buffer[] = [];
  const updates: Buffer[] = [];
  for (let y = 0; y < b.height; y += TILE_H) {
    for (let x = 0; x < b.width; x += TILE_W) {
      const w = Math.min(TILE_W, b.width - x);
      const h = Math.min(TILE_H, b.height - y);
      const padW = (w + 3) & ~3;
      const head = Buffer.alloc(4);
      head.writeUInt16LE(UPDATETYPE_BITMAP, 0);
      head.writeUInt16LE(1, 2);
      const body = Buffer.concat([head, bitmapData(b.x + x, b.y + y, w, h, padW, t.bpp, tileData(b.rgba, b.width, x, y, w, h, padW, t.bpp))]);
      updates.push(body);
      frames.push(updateFrame(t, body));
    }
  }
  return { frames, updates };
}
