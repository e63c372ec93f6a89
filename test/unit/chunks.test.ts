/**
 * ChunkQueue and the framers built on it (PostgreSQL FrameSplitter, MySQL PacketReader, the SFTP
 * inspector's packets): same frames whatever the chunking, work linear in the bytes (a message in
 * 1-byte chunks costs a bounded multiple of one chunk) and memory close to the bytes held.
 */
import t from 'tap';
import fc from 'fast-check';
import { ChunkQueue } from '../../protocols/chunks.js';
import { FrameSplitter } from '../../protocols/postgres/framing.js';
import { PacketReader, type Packet } from '../../protocols/mysql/packets.js';
import { SftpInspector } from '../../protocols/ssh/inspector/sftp.js';

/** Split b at the given cut points. */
function chunked(b: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  for (let k = 0; i < b.length; k++) {
    const n = Math.max(1, sizes[k % sizes.length] ?? 1);
    out.push(b.subarray(i, i + n));
    i += n;
  }
  return out;
}

/** Bytes Buffer.concat produces while fn runs (re-concatenating a growing buffer shows up here). */
function concatBytes(fn: () => void): number {
  const orig = Buffer.concat;
  let total = 0;
  Buffer.concat = ((list: readonly Uint8Array[], len?: number) => { const r = orig(list, len); total += r.length; return r; }) as typeof Buffer.concat;
  try { fn(); } finally { Buffer.concat = orig; }
  return total;
}

t.test('ChunkQueue: take/peek/skip/drain give back the bytes pushed, in any chunking (fixed seed)', async (t) => {
  fc.assert(fc.property(
    fc.uint8Array({ minLength: 1, maxLength: 3000 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 8 }),
    fc.array(fc.integer({ min: 0, max: 900 }), { minLength: 1, maxLength: 8 }),
    (bytes, sizes, takes) => {
      const src = Buffer.from(bytes);
      const q = new ChunkQueue();
      const got: Buffer[] = [];
      let k = 0;
      for (const c of chunked(src, sizes)) {
        q.push(c);
        // Consume in odd-sized steps while bytes are there (peek, then take or skip).
        for (let want = takes[k++ % takes.length]!; want > 0 && q.length >= want; want = takes[k++ % takes.length]!) {
          const seen = Buffer.from(q.peek(want));
          if (k % 3 === 0) { q.skip(want); got.push(seen); } else { const b = q.take(want); if (!b.equals(seen)) return false; got.push(b); }
        }
      }
      got.push(q.drain());
      return q.length === 0 && Buffer.concat(got).equals(src);
    },
  ), { seed: 25, numRuns: 500 });
  const q = new ChunkQueue();
  t.throws(() => q.peek(1), RangeError, 'cannot peek past what is held');
  q.push(Buffer.from('abc'));
  t.throws(() => q.skip(4), RangeError);
  t.equal(q.take(3).toString(), 'abc');
  t.equal(q.drain().length, 0);
});

t.test('ChunkQueue: 1 MiB in 1-byte chunks holds about 1 MiB, not one object per byte', async (t) => {
  const q = new ChunkQueue();
  const src = Buffer.alloc(1 << 20, 7);
  for (let i = 0; i < src.length; i++) q.push(src.subarray(i, i + 1));
  // Small chunks are copied into 16 KiB blocks: ~64 list entries instead of a million.
  t.ok((q as unknown as { chunks: Buffer[] }).chunks.length <= 70, `list entries: ${(q as unknown as { chunks: Buffer[] }).chunks.length}`);
  t.ok(q.take(src.length).equals(src));
});

t.test('PostgreSQL frames: a 256 KiB message in 1-byte chunks is linear (was ~50 s: an array shift per chunk)', async (t) => {
  const n = 256 * 1024;
  const msg = Buffer.alloc(1 + n, 0x61); msg[0] = 0x51; msg.writeUInt32BE(n, 1);
  const sp = new FrameSplitter(1 << 24);
  const frames = [];
  const t0 = performance.now();
  for (let i = 0; i < msg.length; i++) frames.push(...sp.push(msg.subarray(i, i + 1)));
  const ms = performance.now() - t0;
  t.equal(frames.length, 1);
  t.ok(frames[0]!.raw.equals(msg), 'the message is intact');
  t.ok(ms < 5000, `took ${ms.toFixed(0)} ms (bound 5 s; a few hundred ms expected)`);
  // Copies: the message is joined once (plus the small-chunk blocks), not per chunk.
  const sp2 = new FrameSplitter(1 << 24);
  const copied = concatBytes(() => { for (let i = 0; i < msg.length; i += 256) sp2.push(msg.subarray(i, i + 256)); });
  t.ok(copied <= 2 * msg.length, `bytes copied by concat: ${copied} for a ${msg.length}-byte message`);
});

t.test('MySQL packets: a 1 MiB packet in 1-byte chunks is joined once', async (t) => {
  const n = 1 << 20;
  const p = Buffer.alloc(4 + n, 0x62); p.writeUIntLE(n, 0, 3); p[3] = 0;
  const r = new PacketReader(1 << 26);
  const got: Packet[] = [];
  const copied = concatBytes(() => {
    for (let i = 0; i < p.length; i++) { r.push(p.subarray(i, i + 1)); const pk = r.next(); if (pk) got.push(pk); }
  });
  t.equal(got.length, 1);
  t.ok(got[0]?.raw.equals(p), 'the packet is intact');
  t.ok(copied <= 2 * p.length, `bytes copied by concat: ${copied}`);
});

t.test('SFTP inspector: a 1 MiB packet in 256-byte chunks is not re-concatenated per chunk (was 161 ms, ~2 GB copied)', async (t) => {
  const len = (1 << 20) - 8;
  const pkt = Buffer.alloc(4 + len); pkt.writeUInt32BE(len, 0); pkt[4] = 200; // an extended packet type we do not follow
  const insp = new SftpInspector(() => {});
  const copied = concatBytes(() => { for (let i = 0; i < pkt.length; i += 256) insp.feedClient(pkt.subarray(i, i + 256)); });
  t.ok(copied <= 2 * pkt.length, `bytes copied by concat: ${copied} for a ${pkt.length}-byte packet`);
  t.equal(insp.held, 0, 'nothing held once the packet is complete');
  t.notOk(insp.broken);
});
