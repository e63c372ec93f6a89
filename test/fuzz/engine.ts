/**
 * The fuzzing engine shared by every target (test/fuzz/targets/*): a seeded PRNG, AFL-style
 * mutations over a corpus of real messages, deterministic chunking of stream inputs, and the
 * target contract. The engine is pure: the worker (worker.ts) runs it, the runner (runner.ts)
 * watches the worker for hangs and memory, and saves failing inputs into the corpus.
 *
 * A target fails on:
 *   - a throw that is not the parser's own protocol error (`expected`),
 *   - an invariant it checks itself (it throws FuzzInvariant),
 *   - one input taking more than HANG_MS (measured, confirmed by re-running it),
 *   - heap + ArrayBuffer memory growing more than its `memoryBound` over the run.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type fc from 'fast-check';

export const CORPUS_DIR = join(import.meta.dirname, 'corpus');
/** One input running longer than this is a hang. */
export const HANG_MS = 1000;
/** Default bound on memory growth over a target's run (heap + ArrayBuffers, after a full GC). */
export const DEFAULT_MEMORY_BOUND = 64 * 1024 * 1024;
/** Default longest input a mutation may produce. */
export const DEFAULT_MAX_LENGTH = 64 * 1024;

export interface FuzzTarget {
  /** `<protocol>.<what>`, also the corpus directory name. */
  name: string;
  /** What the target drives (one line, for reports and the README). */
  covers: string;
  /** The code under test's own refusals (its protocol error classes): anything else thrown fails. */
  expected(e: unknown): boolean;
  /** Run one input through the code under test; throw FuzzInvariant when an invariant breaks. */
  run(input: Buffer): void | Promise<void>;
  /** Structured inputs for the fast-check part (valid messages from the protocol's own encoders, with random fields). */
  arbitrary(fcl: typeof fc): fc.Arbitrary<Uint8Array>;
  /** Built-in seeds added to the corpus files (encoder-built messages the capture script does not produce). */
  seeds?(): Buffer[];
  maxLength?: number;
  memoryBound?: number;
}

/** A target's own check failed (not an exception of the code under test). */
export class FuzzInvariant extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FuzzInvariant';
  }
}

export function invariant(cond: unknown, message: string): asserts cond {
  if (!cond) throw new FuzzInvariant(message);
}

/** sfc32: small, fast, seedable; good enough to drive mutations. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(seed: number) {
    this.a = 0x9e3779b9; this.b = 0x243f6a88; this.c = 0xb7e15162; this.d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** 0 <= n < max */
  int(max: number): number { return max <= 1 ? 0 : this.u32() % max; }
  chance(oneIn: number): boolean { return this.int(oneIn) === 0; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
}

/** A seed from the input itself, so a saved input alone reproduces its run (chunking included). */
export function inputSeed(input: Buffer): number {
  let h = 0x811c9dc5 ^ input.length;
  const n = Math.min(input.length, 64);
  for (let i = 0; i < n; i++) h = Math.imul(h ^ input[i]!, 0x01000193);
  return h >>> 0;
}

/**
 * Split a stream input into chunks the way sockets deliver them: deterministic from the input,
 * a mix of single bytes, small pieces and large ones.
 */
export function chunks(input: Buffer): Buffer[] {
  const rng = new Rng(inputSeed(input));
  const out: Buffer[] = [];
  const mode = rng.int(4);
  for (let i = 0; i < input.length;) {
    const n = mode === 0 ? input.length
      : mode === 1 ? 1 + rng.int(8)
        : mode === 2 ? 1 + rng.int(512)
          : rng.chance(3) ? 1 + rng.int(4) : 1 + rng.int(4096);
    out.push(input.subarray(i, i + n));
    i += n;
  }
  return out;
}

/** Tagged records in one input: [direction byte][u16 length][bytes]... (the rest of a record that does not fit is its bytes). */
export function records(input: Buffer): { tag: number; data: Buffer }[] {
  const out: { tag: number; data: Buffer }[] = [];
  for (let i = 0; i < input.length;) {
    const tag = input[i]!;
    const len = i + 3 <= input.length ? input.readUInt16BE(i + 1) : 0;
    const start = Math.min(input.length, i + 3);
    out.push({ tag, data: input.subarray(start, Math.min(input.length, start + len)) });
    i = start + len;
  }
  return out;
}

/** The inverse of records(): build one input from tagged pieces (pieces over 65,535 bytes are split). */
export function encodeRecords(rs: { tag: number; data: Buffer }[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of rs) {
    for (let off = 0; off === 0 || off < r.data.length; off += 0xffff) {
      const piece = r.data.subarray(off, off + 0xffff);
      const h = Buffer.alloc(3);
      h[0] = r.tag;
      h.writeUInt16BE(piece.length, 1);
      parts.push(h, piece);
    }
  }
  return Buffer.concat(parts);
}

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 0xfe];
const INTERESTING_16 = [0, 1, 0x7fff, 0x8000, 0xffff, 0x100, 0x3fff, 0x4000, 0xfffe];
const INTERESTING_32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x10000, 0x1000000, 0xfffffffe, 0x40000000];

/**
 * One mutated input from a parent: 1–8 stacked AFL "havoc" operations (bit flips, interesting
 * values, ±small arithmetic on 8/16/32-bit fields in either byte order, block deletes, copies,
 * inserts, splices with another corpus entry, truncation, repetition).
 */
export function mutate(rng: Rng, parent: Buffer, corpus: readonly Buffer[], maxLength: number): Buffer {
  let b = Buffer.from(parent.length ? parent : Buffer.from([rng.int(256)]));
  const ops = 1 + rng.int(rng.chance(4) ? 16 : 4);
  for (let k = 0; k < ops; k++) {
    const at = rng.int(b.length);
    switch (rng.int(13)) {
      case 0: b[at] = b[at]! ^ (1 << rng.int(8)); break;
      case 1: b[at] = rng.int(256); break;
      case 2: b[at] = rng.pick(INTERESTING_8); break;
      case 3: if (at + 2 <= b.length) { const v = rng.pick(INTERESTING_16); if (rng.chance(2)) b.writeUInt16BE(v, at); else b.writeUInt16LE(v, at); } break;
      case 4: if (at + 4 <= b.length) { const v = rng.pick(INTERESTING_32); if (rng.chance(2)) b.writeUInt32BE(v >>> 0, at); else b.writeUInt32LE(v >>> 0, at); } break;
      case 5: b[at] = (b[at]! + (rng.int(35) - 17)) & 0xff; break;
      case 6: if (at + 2 <= b.length) {
        const be = rng.chance(2);
        const v = ((be ? b.readUInt16BE(at) : b.readUInt16LE(at)) + rng.int(35) - 17) & 0xffff;
        if (be) b.writeUInt16BE(v, at); else b.writeUInt16LE(v, at);
      } break;
      case 7: if (at + 4 <= b.length) {
        const be = rng.chance(2);
        const v = ((be ? b.readUInt32BE(at) : b.readUInt32LE(at)) + rng.int(35) - 17) >>> 0;
        if (be) b.writeUInt32BE(v, at); else b.writeUInt32LE(v, at);
      } break;
      case 8: if (b.length > 1) { const n = 1 + rng.int(Math.min(b.length - at, rng.chance(4) ? 1024 : 16)); b = Buffer.concat([b.subarray(0, at), b.subarray(at + n)]); } break;
      case 9: { const from = rng.int(b.length); const n = 1 + rng.int(Math.min(b.length - from, 256)); b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + n), b.subarray(at)]); break; }
      case 10: { const n = 1 + rng.int(32); const ins = Buffer.alloc(n); for (let i = 0; i < n; i++) ins[i] = rng.chance(2) ? rng.int(256) : b[rng.int(b.length)]!; b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]); break; }
      case 11: if (corpus.length) { const o = rng.pick(corpus); const cut = rng.int(o.length + 1); b = rng.chance(2) ? Buffer.concat([b.subarray(0, at), o.subarray(cut)]) : Buffer.concat([o.subarray(0, cut), b.subarray(at)]); } break;
      case 12: if (rng.chance(3)) b = b.subarray(0, at); else {
        // repeat a block many times: long runs of the same message stress bounded state
        const from = rng.int(b.length); const n = 1 + rng.int(Math.min(b.length - from, 64)); const times = 2 + rng.int(200);
        const block = b.subarray(from, from + n);
        b = Buffer.concat([b.subarray(0, at), ...Array.from({ length: times }, () => block), b.subarray(at)]);
      } break;
    }
    if (b.length > maxLength) b = b.subarray(0, maxLength);
    if (!b.length) b = Buffer.from([rng.int(256)]);
  }
  return b;
}

/** The corpus of a target: its files (sorted, regression cases named crash-*) plus its built-in seeds. */
export function loadCorpus(target: FuzzTarget, root = CORPUS_DIR): { files: { name: string; data: Buffer }[]; all: Buffer[] } {
  const dir = join(root, target.name);
  const files = existsSync(dir)
    ? readdirSync(dir).filter((f) => f.endsWith('.bin')).sort().map((name) => ({ name, data: readFileSync(join(dir, name)) }))
    : [];
  const seeds = target.seeds?.() ?? [];
  return { files, all: [...files.map((f) => f.data), ...seeds] };
}

export function corpusName(kind: string, data: Buffer): string {
  return `${kind}-${createHash('sha256').update(data).digest('hex').slice(0, 16)}.bin`;
}

/** A short, printable description of an exception for reports. */
export function describe(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`.slice(0, 500) + (e.stack ? `\n${e.stack.split('\n').slice(1, 6).join('\n')}` : '');
  return String(e).slice(0, 500);
}
