/**
 * A gateway banner as RFB: a FramebufferUpdate with one Raw rectangle in the viewer's own pixel
 * format (true colour at any depth and byte order, or the nearest entries of its colour map), for
 * the relay to put into the server-to-viewer stream at a message boundary. The pixels the viewer
 * will show (after its format's loss of precision) go to the recording.
 */
import { renderBanner, type BannerKind } from '../banner.js';
import { ENC } from './client-messages.js';
import { PixelDecoder, type PixelFormat } from './pixel.js';

export interface VncBanner {
  message: Buffer;
  x: number;
  y: number;
  w: number;
  h: number;
  /** RGBA of the rectangle as the viewer shows it. */
  shown: Uint8Array;
}

/** The pixel value of an RGB colour in this format. */
function pixelValue(pf: PixelFormat, colourMap: Uint8Array, r: number, g: number, b: number): number {
  if (pf.trueColour) {
    const c = (v: number, max: number) => Math.round((v * max) / 255);
    return ((c(r, pf.redMax) << pf.redShift) | (c(g, pf.greenMax) << pf.greenShift) | (c(b, pf.blueMax) << pf.blueShift)) >>> 0;
  }
  let best = 0;
  let bestD = Infinity;
  const entries = Math.min(256, 1 << Math.min(pf.bpp, 8));
  for (let i = 0; i < entries; i++) {
    const d = Math.abs(colourMap[i * 3]! - r) + Math.abs(colourMap[i * 3 + 1]! - g) + Math.abs(colourMap[i * 3 + 2]! - b);
    if (d < bestD) { bestD = d; best = i; }
  }
  return best;
}

function writePixel(out: Buffer, o: number, v: number, pf: PixelFormat): void {
  const n = pf.bpp / 8;
  for (let k = 0; k < n; k++) out[o + k] = (v >>> (8 * (pf.bigEndian ? n - 1 - k : k))) & 255;
}

export function bannerUpdate(pf: PixelFormat, colourMap: Uint8Array, screenW: number, screenH: number, text: string, kind: BannerKind): VncBanner {
  const b = renderBanner(screenW, screenH, text, kind);
  const bytes = pf.bpp / 8;
  const data = Buffer.alloc(b.width * b.height * bytes);
  const cache = new Map<number, number>();
  for (let i = 0; i < b.width * b.height; i++) {
    const r = b.rgba[i * 4]!, g = b.rgba[i * 4 + 1]!, bl = b.rgba[i * 4 + 2]!;
    const key = (r << 16) | (g << 8) | bl;
    let v = cache.get(key);
    if (v === undefined) cache.set(key, v = pixelValue(pf, colourMap, r, g, bl));
    writePixel(data, i * bytes, v, pf);
  }
  const head = Buffer.alloc(16);
  head[0] = 0; // FramebufferUpdate
  head.writeUInt16BE(1, 2);
  head.writeUInt16BE(b.x, 4);
  head.writeUInt16BE(b.y, 6);
  head.writeUInt16BE(b.width, 8);
  head.writeUInt16BE(b.height, 10);
  head.writeInt32BE(ENC.Raw, 12);
  const shown = new Uint8Array(b.width * b.height * 4);
  new PixelDecoder(pf, colourMap).rgbaRun(data, 0, b.width * b.height, shown, 0);
  return { message: Buffer.concat([head, data]), x: b.x, y: b.y, w: b.width, h: b.height, shown };
}
