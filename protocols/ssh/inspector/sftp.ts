/**
 * Follows the SFTP packets in both directions of an sftp subsystem relay (a copy of the bytes; the
 * relay never waits for it) and reports each file transfer at CLOSE: path, direction, size, SHA-256.
 * Pure over buffers: feedClient()/feedServer() take whatever chunks the channel delivers.
 */
import { createHash, type Hash } from 'node:crypto';
import { ChunkQueue } from '../../chunks.js';

export interface FileTransfer {
  path: string;
  direction: 'upload' | 'download';
  size: number;
  sha256: string | null;
  /** false when bytes came out of order beyond what we buffer, or a packet was unparseable. */
  complete: boolean;
}

const FXP = { INIT: 1, VERSION: 2, OPEN: 3, CLOSE: 4, READ: 5, WRITE: 6, REMOVE: 13, MKDIR: 14, RMDIR: 15, RENAME: 18, STATUS: 101, HANDLE: 102, DATA: 103 } as const;
const FXF_WRITE = 0x02;
const MAX_PACKET = 1 << 20;
const MAX_PENDING = 16 << 20;
/** What one tracked request or open file costs us, roughly (map entry, hash state), besides its path. */
const ENTRY_COST = 128;
const FILE_COST = 512;

class Framer {
  private readonly q = new ChunkQueue();
  broken = false;
  constructor(private readonly onPacket: (p: Buffer) => void) {}
  feed(chunk: Buffer): void {
    if (this.broken) return;
    this.q.push(chunk);
    while (this.q.length >= 4) {
      const len = this.q.peek(4).readUInt32BE(0);
      if (len < 1 || len > MAX_PACKET) { this.broken = true; this.q.clear(); return; }
      if (this.q.length < 4 + len) return;
      this.q.skip(4);
      this.onPacket(this.q.take(len));
    }
  }
  /** Bytes held waiting for the rest of a packet. */
  get held(): number { return this.q.length; }
}

class Reader {
  p = 0;
  constructor(readonly b: Buffer) {}
  u8(): number { if (this.p + 1 > this.b.length) throw new RangeError('short'); return this.b[this.p++]!; }
  u32(): number { if (this.p + 4 > this.b.length) throw new RangeError('short'); const v = this.b.readUInt32BE(this.p); this.p += 4; return v; }
  u64(): number { if (this.p + 8 > this.b.length) throw new RangeError('short'); const v = Number(this.b.readBigUInt64BE(this.p)); this.p += 8; return v; }
  str(): Buffer { const n = this.u32(); if (this.p + n > this.b.length) throw new RangeError('short'); const s = this.b.subarray(this.p, this.p + n); this.p += n; return s; }
}

interface OpenFile {
  path: string;
  writeFlag: boolean;
  hash: Hash;
  next: number;
  size: number;
  pending: Map<number, Buffer>;
  pendingBytes: number;
  complete: boolean;
  wrote: boolean;
  read: boolean;
}

export class SftpInspector {
  private readonly c: Framer;
  private readonly s: Framer;
  private openReq = new Map<number, { path: string; writeFlag: boolean; cost: number }>();
  private readReq = new Map<number, { handle: string; offset: number; cost: number }>();
  private files = new Map<string, OpenFile>();
  /** Bytes of out-of-order data waiting, over all open files. */
  private pendingTotal = 0;
  /** Rough bytes of the request and file tables. */
  private tracked = 0;

  constructor(
    private readonly onTransfer: (t: FileTransfer) => void,
    private readonly onOp: (op: string, data: Record<string, unknown>) => void = () => {},
  ) {
    this.c = new Framer((p) => this.safe(() => this.client(p)));
    this.s = new Framer((p) => this.safe(() => this.server(p)));
  }

  feedClient(chunk: Buffer): void { this.c.feed(chunk); }
  feedServer(chunk: Buffer): void { this.s.feed(chunk); }
  get broken(): boolean { return this.c.broken || this.s.broken; }
  /**
   * Bytes this inspector holds now: partial packets, out-of-order data and its tables. The caller
   * counts it against the session's buffer budget (a client that opens thousands of files or
   * writes far out of order is stopped there).
   */
  get held(): number { return this.c.held + this.s.held + this.pendingTotal + this.tracked; }

  /** Report files still open when the channel ends. */
  finish(): void {
    for (const [h, f] of this.files) { this.report(f); this.forget(h, f); }
    this.tracked = 0;
    this.openReq.clear();
    this.readReq.clear();
  }

  private safe(fn: () => void): void {
    try { fn(); } catch { /* a malformed packet: the target will answer it; we just do not follow it */ }
  }

  private client(p: Buffer): void {
    const r = new Reader(p);
    const type = r.u8();
    if (type === FXP.INIT) return;
    const id = r.u32();
    switch (type) {
      case FXP.OPEN: {
        const path = r.str().toString('utf8');
        const flags = r.u32();
        this.track(this.openReq, id, { path, writeFlag: (flags & FXF_WRITE) !== 0, cost: ENTRY_COST + 2 * path.length });
        break;
      }
      case FXP.READ: {
        const handle = r.str().toString('hex');
        const offset = r.u64();
        if (this.files.has(handle)) this.track(this.readReq, id, { handle, offset, cost: ENTRY_COST + handle.length });
        break;
      }
      case FXP.WRITE: {
        const handle = r.str().toString('hex');
        const offset = r.u64();
        const data = r.str();
        const f = this.files.get(handle);
        if (f) { f.wrote = true; this.add(f, offset, data); }
        break;
      }
      case FXP.CLOSE: {
        const handle = r.str().toString('hex');
        const f = this.files.get(handle);
        if (f) { this.forget(handle, f); this.report(f); }
        break;
      }
      case FXP.REMOVE: this.onOp('sftp.remove', { path: r.str().toString('utf8') }); break;
      case FXP.MKDIR: this.onOp('sftp.mkdir', { path: r.str().toString('utf8') }); break;
      case FXP.RMDIR: this.onOp('sftp.rmdir', { path: r.str().toString('utf8') }); break;
      case FXP.RENAME: { const from = r.str().toString('utf8'); const to = r.str().toString('utf8'); this.onOp('sftp.rename', { from, to }); break; }
      default: break;
    }
  }

  private server(p: Buffer): void {
    const r = new Reader(p);
    const type = r.u8();
    if (type === FXP.VERSION) return;
    const id = r.u32();
    if (type === FXP.HANDLE) {
      const open = this.openReq.get(id);
      if (!open) return;
      this.untrack(this.openReq, id);
      const handle = r.str().toString('hex');
      const old = this.files.get(handle);
      if (old) { this.forget(handle, old); this.report(old); } // the server reused a handle we never saw closed
      this.files.set(handle, { path: open.path, writeFlag: open.writeFlag, hash: createHash('sha256'), next: 0, size: 0, pending: new Map(), pendingBytes: 0, complete: true, wrote: false, read: false });
      this.tracked += FILE_COST + 2 * open.path.length + handle.length;
    } else if (type === FXP.DATA) {
      const req = this.readReq.get(id);
      if (!req) return;
      this.untrack(this.readReq, id);
      const f = this.files.get(req.handle);
      if (f) { f.read = true; this.add(f, req.offset, r.str()); }
    } else if (type === FXP.STATUS) {
      this.untrack(this.openReq, id);
      this.untrack(this.readReq, id);
    }
  }

  /** Remember a request until its answer (a reused id replaces the earlier entry). */
  private track<V extends { cost: number }>(map: Map<number, V>, id: number, v: V): void {
    this.untrack(map, id);
    map.set(id, v);
    this.tracked += v.cost;
  }

  private untrack<V extends { cost: number }>(map: Map<number, V>, id: number): void {
    const had = map.get(id);
    if (!had) return;
    map.delete(id);
    this.tracked -= had.cost;
  }

  private forget(handle: string, f: OpenFile): void {
    this.files.delete(handle);
    this.tracked -= FILE_COST + 2 * f.path.length + handle.length;
    this.pendingTotal -= f.pendingBytes;
  }

  /** Hash bytes in offset order; out-of-order pieces wait (bounded). */
  private add(f: OpenFile, offset: number, data: Buffer): void {
    if (!data.length) return;
    if (offset === f.next) {
      f.hash.update(data); f.next += data.length; f.size += data.length;
      for (let piece = f.pending.get(f.next); piece; piece = f.pending.get(f.next)) {
        f.pending.delete(f.next); f.pendingBytes -= piece.length; this.pendingTotal -= piece.length;
        f.hash.update(piece); f.next += piece.length; f.size += piece.length;
      }
    } else if (offset > f.next && f.pendingBytes + data.length <= MAX_PENDING) {
      const was = f.pending.get(offset);
      if (was) { f.pendingBytes -= was.length; this.pendingTotal -= was.length; }
      f.pending.set(offset, Buffer.from(data)); f.pendingBytes += data.length; this.pendingTotal += data.length;
    } else {
      f.complete = false; f.size += data.length;
    }
  }

  private report(f: OpenFile): void {
    if (!f.wrote && !f.read) {
      if (f.writeFlag) this.onTransfer({ path: f.path, direction: 'upload', size: 0, sha256: createHash('sha256').digest('hex'), complete: true });
      return;
    }
    for (const piece of f.pending.values()) f.size += piece.length;
    const complete = f.complete && f.pending.size === 0;
    this.onTransfer({ path: f.path, direction: f.wrote ? 'upload' : 'download', size: f.size, sha256: complete ? f.hash.digest('hex') : null, complete });
  }
}
