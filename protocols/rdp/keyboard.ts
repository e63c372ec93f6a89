/**
 * The browser's keyboard as RDP sees it: KeyboardEvent.code (the physical key, whatever the
 * layout) to a set-1 scancode with its extended flag, and the person's keyboard layout (a BCP 47
 * tag the page derives from the browser's layout map and language) to the Windows keyboard layout
 * id the client core data carries, so the target maps the scancodes with the person's layout.
 */

/** code -> [scancode, extended]. */
const CODES: Record<string, [number, boolean]> = {
  Escape: [0x01, false], Backspace: [0x0e, false], Tab: [0x0f, false], Enter: [0x1c, false], Space: [0x39, false],
  Minus: [0x0c, false], Equal: [0x0d, false], BracketLeft: [0x1a, false], BracketRight: [0x1b, false], Semicolon: [0x27, false],
  Quote: [0x28, false], Backquote: [0x29, false], Backslash: [0x2b, false], Comma: [0x33, false], Period: [0x34, false], Slash: [0x35, false],
  IntlBackslash: [0x56, false], IntlRo: [0x73, false], IntlYen: [0x7d, false], Convert: [0x79, false], NonConvert: [0x7b, false],
  KanaMode: [0x70, false], Lang1: [0x72, false], Lang2: [0x71, false],
  ShiftLeft: [0x2a, false], ShiftRight: [0x36, false], ControlLeft: [0x1d, false], ControlRight: [0x1d, true],
  AltLeft: [0x38, false], AltRight: [0x38, true], MetaLeft: [0x5b, true], MetaRight: [0x5c, true], ContextMenu: [0x5d, true],
  CapsLock: [0x3a, false], NumLock: [0x45, false], ScrollLock: [0x46, false], PrintScreen: [0x37, true],
  Insert: [0x52, true], Delete: [0x53, true], Home: [0x47, true], End: [0x4f, true], PageUp: [0x49, true], PageDown: [0x51, true],
  ArrowUp: [0x48, true], ArrowDown: [0x50, true], ArrowLeft: [0x4b, true], ArrowRight: [0x4d, true],
  NumpadDivide: [0x35, true], NumpadMultiply: [0x37, false], NumpadSubtract: [0x4a, false], NumpadAdd: [0x4e, false],
  NumpadEnter: [0x1c, true], NumpadDecimal: [0x53, false], NumpadEqual: [0x59, false], NumpadComma: [0x7e, false],
  Numpad0: [0x52, false], Numpad1: [0x4f, false], Numpad2: [0x50, false], Numpad3: [0x51, false], Numpad4: [0x4b, false],
  Numpad5: [0x4c, false], Numpad6: [0x4d, false], Numpad7: [0x47, false], Numpad8: [0x48, false], Numpad9: [0x49, false],
};
'1234567890'.split('').forEach((d, i) => { CODES[`Digit${d}`] = [0x02 + i, false]; });
const ROWS: [string, number][] = [['QWERTYUIOP', 0x10], ['ASDFGHJKL', 0x1e], ['ZXCVBNM', 0x2c]];
for (const [letters, first] of ROWS) letters.split('').forEach((l, i) => { CODES[`Key${l}`] = [first + i, false]; });
for (let i = 1; i <= 10; i++) CODES[`F${i}`] = [0x3a + i, false];
CODES['F11'] = [0x57, false];
CODES['F12'] = [0x58, false];
for (let i = 13; i <= 24; i++) CODES[`F${i}`] = [0x64 + (i - 13), false];

/** The scancode of a KeyboardEvent.code, or null for keys RDP has none for. */
export function scancodeOf(code: string): { code: number; extended: boolean } | null {
  const k = Object.prototype.hasOwnProperty.call(CODES, code) ? CODES[code] : undefined;
  return k ? { code: k[0], extended: k[1] } : null;
}

/** Keyboard layout ids (KLID) by language tag: the full tag first, then its language. */
const LAYOUTS: Record<string, number> = {
  'en-us': 0x0409, 'en-gb': 0x0809, 'en-ie': 0x1809, 'en-ca': 0x1009, 'en-au': 0x0409, en: 0x0409,
  'de-de': 0x0407, 'de-at': 0x0c07, 'de-ch': 0x0807, de: 0x0407,
  'fr-fr': 0x040c, 'fr-be': 0x080c, 'fr-ca': 0x0c0c, 'fr-ch': 0x100c, fr: 0x040c,
  'es-es': 0x040a, 'es-mx': 0x080a, es: 0x040a, 'it-it': 0x0410, it: 0x0410, 'pt-br': 0x0416, 'pt-pt': 0x0816, pt: 0x0816,
  'nl-nl': 0x0413, 'nl-be': 0x0813, nl: 0x0413, sv: 0x041d, nb: 0x0414, no: 0x0414, nn: 0x0414, da: 0x0406, fi: 0x040b,
  is: 0x040f, pl: 0x0415, cs: 0x0405, sk: 0x041b, hu: 0x040e, sl: 0x0424, hr: 0x041a, ro: 0x0418, tr: 0x041f, el: 0x0408,
  ru: 0x0419, uk: 0x0422, ja: 0x0411, ko: 0x0412, 'zh-cn': 0x0804, 'zh-tw': 0x0404, zh: 0x0804, he: 0x040d, ar: 0x0401,
  lt: 0x0427, lv: 0x0426, et: 0x0425, bg: 0x0402,
};

/** The layout id for a language tag such as "de-CH" (US English when unknown or malformed). */
export function keyboardLayoutOf(tag: string | null | undefined): number {
  const t = (tag ?? '').trim().toLowerCase();
  if (!/^[a-z]{2,3}(-[a-z0-9]{2,8})*$/.test(t)) return LAYOUTS['en-us']!;
  const parts = t.split('-');
  const region = parts.find((p, i) => i > 0 && p.length === 2);
  return LAYOUTS[region ? `${parts[0]}-${region}` : parts[0]!] ?? LAYOUTS[parts[0]!] ?? LAYOUTS['en-us']!;
}
