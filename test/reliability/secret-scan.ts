/**
 * The secret scan's engine: read the registry the suite wrote (auth/secret.ts noteIssued,
 * test/support/secret-registry.ts), derive the forms a leaked secret could take on disk (clear,
 * JSON-escaped, URL-encoded, UTF-16LE, hex, base64 and base64url at every byte alignment) and look
 * for each of them in every file under the given directories. Used by secret-scan.scan.ts after the
 * suite and by secret-scan.test.ts.
 */
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';

export interface RecordedSecret { kind: string; value: string }
export interface Registry { secrets: RecordedSecret[]; dirs: string[] }
export interface Pattern { bytes: Buffer; kind: string; form: string; secretIndex: number }
export interface Hit { file: string; offset: number; kind: string; form: string; secretIndex: number }
export interface ScanResult { files: number; bytes: number; hits: Hit[]; patterns: number; skippedShort: number }

/** Shorter forms than this are not looked for (too likely to occur by chance). */
export const MIN_PATTERN = 8;

export function readRegistry(file: string): Registry {
  const seen = new Set<string>();
  const secrets: RecordedSecret[] = [];
  const dirs = new Set<string>();
  if (!existsSync(file)) return { secrets, dirs: [] };
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let j: { kind?: unknown; value?: unknown; dir?: unknown };
    try { j = JSON.parse(line); } catch { throw new Error(`secret registry ${file}: a line that is not JSON`); }
    if (typeof j.dir === 'string') { dirs.add(j.dir); continue; }
    if (typeof j.value !== 'string' || !j.value) continue;
    if (seen.has(j.value)) continue;
    seen.add(j.value);
    secrets.push({ kind: typeof j.kind === 'string' ? j.kind : 'secret', value: j.value });
  }
  return { secrets, dirs: [...dirs] };
}

/** The part of base64(prefix k zero bytes + value) that depends on value's bytes only. */
function base64Inner(value: Buffer, k: number, url: boolean): string {
  const b64 = Buffer.concat([Buffer.alloc(k), value, Buffer.alloc(3)]).toString(url ? 'base64url' : 'base64');
  const start = Math.ceil((8 * k) / 6);
  const end = Math.floor((8 * (k + value.length)) / 6);
  return b64.slice(start, end);
}

export function patternsOf(secrets: RecordedSecret[]): { patterns: Pattern[]; skippedShort: number } {
  const patterns: Pattern[] = [];
  let skippedShort = 0;
  secrets.forEach((s, secretIndex) => {
    const clear = Buffer.from(s.value, 'utf8');
    const forms = new Map<string, Buffer>();
    forms.set('clear', clear);
    forms.set('json', Buffer.from(JSON.stringify(s.value).slice(1, -1), 'utf8'));
    forms.set('url', Buffer.from(encodeURIComponent(s.value), 'utf8'));
    forms.set('utf16le', Buffer.from(s.value, 'utf16le'));
    forms.set('hex', Buffer.from(clear.toString('hex'), 'latin1'));
    forms.set('HEX', Buffer.from(clear.toString('hex').toUpperCase(), 'latin1'));
    for (let k = 0; k < 3; k++) {
      forms.set(`base64@${k}`, Buffer.from(base64Inner(clear, k, false), 'latin1'));
      forms.set(`base64url@${k}`, Buffer.from(base64Inner(clear, k, true), 'latin1'));
    }
    const unique = new Map<string, [string, Buffer]>();
    for (const [form, bytes] of forms) {
      const key = bytes.toString('latin1');
      if (!unique.has(key)) unique.set(key, [form, bytes]);
    }
    if (clear.length < MIN_PATTERN) skippedShort++;
    for (const [form, bytes] of unique.values()) {
      if (bytes.length < MIN_PATTERN) continue;
      patterns.push({ bytes, kind: s.kind, form, secretIndex });
    }
  });
  return { patterns, skippedShort };
}

/** Every regular file under the roots (symbolic links, sockets and devices are not followed or read). */
export function* walk(root: string): Generator<string> {
  let st;
  try { st = lstatSync(root); } catch { return; }
  if (st.isFile()) { yield root; return; }
  if (!st.isDirectory()) return;
  let names: string[];
  try { names = readdirSync(root); } catch { return; }
  for (const n of names) yield* walk(join(root, n));
}

const CHUNK = 8 * 1024 * 1024;

/** A multi-pattern matcher: a bitmap on the first 3 bytes, then candidates by the first 4 bytes. */
export class Matcher {
  private readonly bitmap = new Uint8Array(1 << 21);
  private readonly byPrefix = new Map<number, Pattern[]>();
  readonly maxLen: number;

  constructor(readonly patterns: Pattern[]) {
    let max = 0;
    for (const p of patterns) {
      const b = p.bytes;
      const k3 = b[0]! | (b[1]! << 8) | (b[2]! << 16);
      this.bitmap[k3 >>> 3]! |= 1 << (k3 & 7);
      const k4 = (k3 | (b[3]! << 24)) >>> 0;
      const list = this.byPrefix.get(k4);
      if (list) list.push(p); else this.byPrefix.set(k4, [p]);
      if (b.length > max) max = b.length;
    }
    this.maxLen = max;
  }

  /** Matches starting in buf[0 .. limit) (the rest of buf is the overlap with the next chunk). */
  scan(buf: Buffer, limit: number, onHit: (offset: number, p: Pattern) => void): void {
    const bm = this.bitmap;
    const n = buf.length;
    for (let i = 0; i < limit && i + MIN_PATTERN <= n; i++) {
      const k3 = buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16);
      if ((bm[k3 >>> 3]! & (1 << (k3 & 7))) === 0) continue;
      const list = this.byPrefix.get((k3 | (buf[i + 3]! << 24)) >>> 0);
      if (!list) continue;
      for (const p of list) {
        const b = p.bytes;
        if (i + b.length > n) continue;
        let j = 4;
        while (j < b.length && buf[i + j] === b[j]) j++;
        if (j === b.length) onHit(i, p);
      }
    }
  }
}

export function scanFiles(files: Iterable<string>, patterns: Pattern[]): Omit<ScanResult, 'patterns' | 'skippedShort'> {
  const m = new Matcher(patterns);
  const hits: Hit[] = [];
  let count = 0;
  let bytes = 0;
  if (!patterns.length) {
    for (const _ of files) count++;
    return { files: count, bytes, hits };
  }
  const overlap = m.maxLen - 1;
  const buf = Buffer.allocUnsafe(CHUNK + overlap);
  for (const file of files) {
    let fd: number;
    try { fd = openSync(file, 'r'); } catch { continue; }
    count++;
    try {
      let pos = 0;
      let have = 0; // bytes in buf carried over from the previous chunk
      for (;;) {
        const got = readSync(fd, buf, have, buf.length - have, pos + have);
        const len = have + got;
        if (len === 0) break;
        const last = got === 0 || len < buf.length;
        const limit = last ? len : len - overlap;
        m.scan(buf.subarray(0, len), limit, (off, p) => {
          hits.push({ file, offset: pos + off, kind: p.kind, form: p.form, secretIndex: p.secretIndex });
        });
        bytes += got;
        if (last) break;
        buf.copy(buf, 0, limit, len);
        pos += limit;
        have = len - limit;
      }
    } finally {
      closeSync(fd);
    }
  }
  return { files: count, bytes, hits };
}

export function scanDirs(dirs: string[], secrets: RecordedSecret[]): ScanResult {
  const { patterns, skippedShort } = patternsOf(secrets);
  const seen = new Set<string>();
  function* all(): Generator<string> {
    for (const d of dirs) for (const f of walk(d)) if (!seen.has(f)) { seen.add(f); yield f; }
  }
  return { ...scanFiles(all(), patterns), patterns: patterns.length, skippedShort };
}
