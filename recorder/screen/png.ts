/** PNG encode/decode of RGBA pixels (pngjs), tuned for speed over size when recording. */
import { PNG } from 'pngjs';

/** pngjs options: fast (recording) or small (artifacts). The PNG worker uses the fast ones too. */
export function pngOptions(fast = true): { deflateLevel: number; filterType: number } {
  return { deflateLevel: fast ? 1 : 6, filterType: fast ? 1 : -1 };
}

export function encodePng(width: number, height: number, rgba: Uint8Array, opts: { fast?: boolean } = {}): Buffer {
  const png = new PNG({ width, height, colorType: 6, inputHasAlpha: true });
  png.data = Buffer.from(rgba.buffer, rgba.byteOffset, width * height * 4);
  return PNG.sync.write(png, pngOptions(opts.fast !== false));
}

export function decodePng(buf: Buffer): { width: number; height: number; rgba: Uint8Array } {
  const png = PNG.sync.read(buf);
  let rgba: Uint8Array = new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length);
  if (rgba.length !== png.width * png.height * 4) rgba = new Uint8Array(png.width * png.height * 4);
  return { width: png.width, height: png.height, rgba };
}
