/**
 * Banners the gateway draws into a desktop's screen stream (VNC and RDP, native viewers and the
 * browser alike): a warning before a grant ends or a working-hours kill, and a last frame with
 * the reason when the gateway ends the session. Text is drawn with a tiny built-in bitmap font
 * (5x7 glyphs with one row of descender, printable ASCII; anything else shows as '?'), scaled to
 * stay readable, on a full-width strip at the top of the screen. The result is RGBA that each
 * protocol encodes in its own way (an RFB Raw rectangle, an RDP bitmap update).
 */

/** Glyph rows, top to bottom: '#' is ink. Rows 0-6 hold capitals and digits, row 7 descenders. */
const GLYPHS: Record<string, string> = {
  ' ': '..... ..... ..... ..... ..... ..... ..... .....',
  '!': '..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#.. .....',
  '"': '.#.#. .#.#. .#.#. ..... ..... ..... ..... .....',
  '#': '.#.#. .#.#. ##### .#.#. ##### .#.#. .#.#. .....',
  '$': '..#.. .#### #.#.. .###. ..#.# ####. ..#.. .....',
  '%': '##... ##..# ...#. ..#.. .#... #..## ...## .....',
  '&': '.##.. #..#. #.#.. .#... #.#.# #..#. .##.# .....',
  "'": '..#.. ..#.. .#... ..... ..... ..... ..... .....',
  '(': '...#. ..#.. .#... .#... .#... ..#.. ...#. .....',
  ')': '.#... ..#.. ...#. ...#. ...#. ..#.. .#... .....',
  '*': '..... ..#.. #.#.# .###. #.#.# ..#.. ..... .....',
  '+': '..... ..#.. ..#.. ##### ..#.. ..#.. ..... .....',
  ',': '..... ..... ..... ..... ..... .##.. ..#.. .#...',
  '-': '..... ..... ..... ##### ..... ..... ..... .....',
  '.': '..... ..... ..... ..... ..... .##.. .##.. .....',
  '/': '..... ....# ...#. ..#.. .#... #.... ..... .....',
  '0': '.###. #...# #..## #.#.# ##..# #...# .###. .....',
  '1': '..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###. .....',
  '2': '.###. #...# ....# ...#. ..#.. .#... ##### .....',
  '3': '##### ...#. ..#.. ...#. ....# #...# .###. .....',
  '4': '...#. ..##. .#.#. #..#. ##### ...#. ...#. .....',
  '5': '##### #.... ####. ....# ....# #...# .###. .....',
  '6': '..##. .#... #.... ####. #...# #...# .###. .....',
  '7': '##### ....# ...#. ..#.. .#... .#... .#... .....',
  '8': '.###. #...# #...# .###. #...# #...# .###. .....',
  '9': '.###. #...# #...# .#### ....# ...#. .##.. .....',
  ':': '..... .##.. .##.. ..... .##.. .##.. ..... .....',
  ';': '..... .##.. .##.. ..... .##.. ..#.. .#... .....',
  '<': '...#. ..#.. .#... #.... .#... ..#.. ...#. .....',
  '=': '..... ..... ##### ..... ##### ..... ..... .....',
  '>': '.#... ..#.. ...#. ....# ...#. ..#.. .#... .....',
  '?': '.###. #...# ....# ...#. ..#.. ..... ..#.. .....',
  '@': '.###. #...# ....# .##.# #.#.# #.#.# .###. .....',
  A: '.###. #...# #...# ##### #...# #...# #...# .....',
  B: '####. #...# #...# ####. #...# #...# ####. .....',
  C: '.###. #...# #.... #.... #.... #...# .###. .....',
  D: '###.. #..#. #...# #...# #...# #..#. ###.. .....',
  E: '##### #.... #.... ####. #.... #.... ##### .....',
  F: '##### #.... #.... ####. #.... #.... #.... .....',
  G: '.###. #...# #.... #.### #...# #...# .#### .....',
  H: '#...# #...# #...# ##### #...# #...# #...# .....',
  I: '.###. ..#.. ..#.. ..#.. ..#.. ..#.. .###. .....',
  J: '..### ...#. ...#. ...#. ...#. #..#. .##.. .....',
  K: '#...# #..#. #.#.. ##... #.#.. #..#. #...# .....',
  L: '#.... #.... #.... #.... #.... #.... ##### .....',
  M: '#...# ##.## #.#.# #.#.# #...# #...# #...# .....',
  N: '#...# #...# ##..# #.#.# #..## #...# #...# .....',
  O: '.###. #...# #...# #...# #...# #...# .###. .....',
  P: '####. #...# #...# ####. #.... #.... #.... .....',
  Q: '.###. #...# #...# #...# #.#.# #..#. .##.# .....',
  R: '####. #...# #...# ####. #.#.. #..#. #...# .....',
  S: '.#### #.... #.... .###. ....# ....# ####. .....',
  T: '##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.. .....',
  U: '#...# #...# #...# #...# #...# #...# .###. .....',
  V: '#...# #...# #...# #...# #...# .#.#. ..#.. .....',
  W: '#...# #...# #...# #.#.# #.#.# #.#.# .#.#. .....',
  X: '#...# #...# .#.#. ..#.. .#.#. #...# #...# .....',
  Y: '#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.. .....',
  Z: '##### ....# ...#. ..#.. .#... #.... ##### .....',
  '[': '.###. .#... .#... .#... .#... .#... .###. .....',
  '\\': '..... #.... .#... ..#.. ...#. ....# ..... .....',
  ']': '.###. ...#. ...#. ...#. ...#. ...#. .###. .....',
  '^': '..#.. .#.#. #...# ..... ..... ..... ..... .....',
  _: '..... ..... ..... ..... ..... ..... ##### .....',
  '`': '.#... ..#.. ...#. ..... ..... ..... ..... .....',
  a: '..... ..... .###. ....# .#### #...# .#### .....',
  b: '#.... #.... #.##. ##..# #...# #...# ####. .....',
  c: '..... ..... .###. #.... #.... #...# .###. .....',
  d: '....# ....# .##.# #..## #...# #...# .#### .....',
  e: '..... ..... .###. #...# ##### #.... .###. .....',
  f: '..##. .#..# .#... ###.. .#... .#... .#... .....',
  g: '..... ..... .#### #...# #...# .#### ....# .###.',
  h: '#.... #.... #.##. ##..# #...# #...# #...# .....',
  i: '..#.. ..... .##.. ..#.. ..#.. ..#.. .###. .....',
  j: '...#. ..... ..##. ...#. ...#. ...#. #..#. .##..',
  k: '#.... #.... #..#. #.#.. ##... #.#.. #..#. .....',
  l: '.##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###. .....',
  m: '..... ..... ##.#. #.#.# #.#.# #...# #...# .....',
  n: '..... ..... #.##. ##..# #...# #...# #...# .....',
  o: '..... ..... .###. #...# #...# #...# .###. .....',
  p: '..... ..... ####. #...# #...# ####. #.... #....',
  q: '..... ..... .##.# #..## #...# .#### ....# ....#',
  r: '..... ..... #.##. ##..# #.... #.... #.... .....',
  s: '..... ..... .###. #.... .###. ....# ####. .....',
  t: '.#... .#... ###.. .#... .#... .#..# ..##. .....',
  u: '..... ..... #...# #...# #...# #..## .##.# .....',
  v: '..... ..... #...# #...# #...# .#.#. ..#.. .....',
  w: '..... ..... #...# #...# #.#.# #.#.# .#.#. .....',
  x: '..... ..... #...# .#.#. ..#.. .#.#. #...# .....',
  y: '..... ..... #...# #...# #...# .#### ....# .###.',
  z: '..... ..... ##### ...#. ..#.. .#... ##### .....',
  '{': '...#. ..#.. ..#.. .#... ..#.. ..#.. ...#. .....',
  '|': '..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#.. .....',
  '}': '.#... ..#.. ..#.. ...#. ..#.. ..#.. .#... .....',
  '~': '..... ..... .#... #.#.# ...#. ..... ..... .....',
};

export const GLYPH_W = 5;
export const GLYPH_H = 8;

/** Each glyph as 8 row masks (bit 4 = leftmost column), parsed once. */
const FONT = new Map<string, number[]>(Object.entries(GLYPHS).map(([ch, rows]) => [ch, rows.split(' ').map((r) => parseInt(r.replace(/#/g, '1').replace(/\./g, '0'), 2))]));

/** Ink rows of one character (unknown characters are drawn as '?'). */
export function glyph(ch: string): number[] {
  return FONT.get(ch) ?? FONT.get('?')!;
}

export type BannerKind = 'warning' | 'ended';

/** Colours (RGB) per kind: black on amber for a warning, white on dark red for the end. */
export const BANNER_COLOURS: Record<BannerKind, { bg: [number, number, number]; fg: [number, number, number] }> = {
  warning: { bg: [255, 196, 0], fg: [0, 0, 0] },
  ended: { bg: [160, 0, 24], fg: [255, 255, 255] },
};

export interface Banner {
  x: number;
  y: number;
  width: number;
  height: number;
  /** width*height RGBA pixels, top-down. */
  rgba: Uint8Array;
}

/** At most this many lines of text; longer messages end with "...". */
const MAX_LINES = 3;

/** Split text into lines of at most `cols` characters, at spaces where possible. */
export function wrapText(text: string, cols: number): string[] {
  const clean = text.replace(/\s+/g, ' ').trim();
  const out: string[] = [];
  let rest = clean;
  while (rest.length && out.length < MAX_LINES) {
    if (rest.length <= cols) { out.push(rest); rest = ''; break; }
    let cut = rest.lastIndexOf(' ', cols);
    if (cut <= 0) cut = cols;
    out.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(cut).trimStart();
  }
  if (rest.length && out.length) {
    const last = out[out.length - 1]!;
    out[out.length - 1] = `${last.slice(0, Math.max(0, cols - 3))}...`;
  }
  return out.length ? out : [''];
}

/**
 * The banner for a screen `screenWidth` pixels wide: a strip across the top with the text wrapped
 * to fit, never taller than a third of the screen. Glyphs are scaled 2x where the screen is wide
 * enough for 40 characters, else 1x.
 */
export function renderBanner(screenWidth: number, screenHeight: number, text: string, kind: BannerKind): Banner {
  const width = Math.max(1, Math.floor(screenWidth));
  const scale = width >= 40 * (GLYPH_W + 1) * 2 + 16 ? 2 : 1;
  const cellW = (GLYPH_W + 1) * scale;
  const cellH = (GLYPH_H + 2) * scale;
  const pad = 4 * scale;
  const cols = Math.max(1, Math.floor((width - 2 * pad) / cellW));
  let lines = wrapText(text, cols);
  const maxLines = Math.max(1, Math.floor((Math.max(1, screenHeight) / 3 - 2 * pad) / cellH));
  if (lines.length > maxLines) lines = lines.slice(0, maxLines);
  const height = Math.min(Math.max(1, screenHeight), lines.length * cellH + 2 * pad);
  const { bg, fg } = BANNER_COLOURS[kind];
  const rgba = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    rgba[i * 4] = bg[0]; rgba[i * 4 + 1] = bg[1]; rgba[i * 4 + 2] = bg[2]; rgba[i * 4 + 3] = 255;
  }
  lines.forEach((line, li) => {
    const top = pad + li * cellH + scale;
    [...line].forEach((ch, ci) => {
      const left = pad + ci * cellW;
      glyph(ch).forEach((mask, row) => {
        for (let col = 0; col < GLYPH_W; col++) {
          if (!(mask & (1 << (GLYPH_W - 1 - col)))) continue;
          for (let dy = 0; dy < scale; dy++) {
            const y = top + row * scale + dy;
            if (y >= height) continue;
            for (let dx = 0; dx < scale; dx++) {
              const x = left + col * scale + dx;
              if (x >= width) continue;
              const o = (y * width + x) * 4;
              rgba[o] = fg[0]; rgba[o + 1] = fg[1]; rgba[o + 2] = fg[2];
            }
          }
        }
      });
    });
  });
  return { x: 0, y: 0, width, height, rgba };
}
