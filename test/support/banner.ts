/**
 * Gateway banners in screens the tests see (recorded frames, screenshots of native viewers,
 * canvases): how far a region is from the banner the gateway renders for a text, and the part of
 * a frame below a banner.
 */
import { renderBanner, type BannerKind } from '../../protocols/banner.js';

export interface Pixels { width: number; height: number; rgba?: Uint8Array; data?: Uint8Array }

const px = (p: Pixels) => p.rgba ?? p.data!;

/**
 * Share of the banner's pixels that differ (sum over R, G, B above `tolerance`) between the
 * banner rendered for this screen width and the picture at (left, top); 1 when it does not fit.
 */
export function bannerOff(pic: Pixels, text: string, kind: BannerKind, opts: { left?: number; top?: number; width?: number; height?: number; tolerance?: number } = {}): number {
  const b = renderBanner(opts.width ?? pic.width, opts.height ?? pic.height, text, kind);
  const left = opts.left ?? 0, top = opts.top ?? 0;
  if (left + b.width > pic.width || top + b.height > pic.height) return 1;
  const p = px(pic);
  let off = 0;
  for (let y = 0; y < b.height; y++) {
    for (let x = 0; x < b.width; x++) {
      const i = (y * b.width + x) * 4;
      const j = ((top + y) * pic.width + left + x) * 4;
      const d = Math.abs(b.rgba[i]! - p[j]!) + Math.abs(b.rgba[i + 1]! - p[j + 1]!) + Math.abs(b.rgba[i + 2]! - p[j + 2]!);
      if (d > (opts.tolerance ?? 24)) off++;
    }
  }
  return off / (b.width * b.height);
}

/** The banner's height on a screen of this size (what a comparison below it skips). */
export function bannerHeight(width: number, height: number, text: string): number {
  return renderBanner(width, height, text, 'warning').height;
}

/** The rows of a picture from `from` on (the part a banner at the top does not cover). */
export function below(pic: Pixels, from: number): { width: number; height: number; rgba: Uint8Array } {
  const p = px(pic);
  return { width: pic.width, height: pic.height - from, rgba: p.subarray(from * pic.width * 4) };
}
