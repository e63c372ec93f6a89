/** A small RFB test client (VeNCrypt X509Plain or classic auth) and helpers for the VNC tests. */
import net from 'node:net';
import tls from 'node:tls';
import { spawn, spawnSync } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { ByteReader } from '../../protocols/vnc/reader.js';
import { vncAuthResponse } from '../../protocols/vnc/des.js';
import { encodeServerInit, parseServerInitHead, type ServerInit } from '../../protocols/vnc/handshake.js';
import { parseClientMessage, type ClientMessage } from '../../protocols/vnc/client-messages.js';
import type { PixelFormat } from '../../protocols/vnc/pixel.js';
import type { ScreenSink } from '../../protocols/vnc/server-messages.js';
import { Framebuffer } from '../../recorder/screen/framebuffer.js';
import { Deflate } from 'pako';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs: number, what: string): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

export interface RfbResult {
  ok: boolean;
  reason?: string;
  sock: Duplex;
  reader: ByteReader;
  init?: ServerInit;
  closed: Promise<number>;
}

/** Log in through VeNCrypt X509Plain (or classic auth when `classic` is the 8-char secret). */
export async function rfbLogin(o: { host: string; port: number; ca: string; username?: string; password?: string; classic?: string; version?: string }): Promise<RfbResult> {
  const raw = net.connect({ host: o.host, port: o.port });
  const closedAt = new Promise<number>((res) => raw.once('close', () => res(Date.now())));
  raw.on('error', () => {});
  let sock: Duplex = raw;
  const reader = new ByteReader(raw, 'the gateway');
  await reader.read(12);
  raw.write(o.version ?? 'RFB 003.008\n');
  const n = await reader.u8();
  if (n === 0) return { ok: false, reason: (await reader.string(4096, 'reason')).toString(), sock, reader, closed: closedAt };
  const types = [...(await reader.read(n))];
  if (o.classic !== undefined) {
    if (!types.includes(2)) return { ok: false, reason: `no classic auth offered (${types})`, sock, reader, closed: closedAt };
    raw.write(Buffer.from([2]));
    const ch = await reader.read(16);
    raw.write(vncAuthResponse(o.classic, ch));
  } else {
    raw.write(Buffer.from([19]));
    await reader.read(2);
    raw.write(Buffer.from([0, 2]));
    if ((await reader.u8()) !== 0) throw new Error('VeNCrypt version refused');
    const k = await reader.u8();
    const subs = [];
    for (let i = 0; i < k; i++) subs.push(await reader.u32());
    if (!subs.includes(262)) throw new Error(`no X509Plain: ${subs}`);
    const b = Buffer.alloc(4); b.writeUInt32BE(262, 0); raw.write(b);
    if ((await reader.u8()) !== 1) throw new Error('TLS not accepted');
    reader.detach();
    const t = tls.connect({ socket: raw, ca: o.ca, servername: 'localhost' });
    await new Promise<void>((res, rej) => { t.once('secureConnect', () => res()); t.once('error', rej); });
    t.on('error', () => {});
    sock = t;
    reader.attach(t);
    const u = Buffer.from(o.username ?? '', 'utf8');
    const p = Buffer.from(o.password ?? '', 'utf8');
    const h = Buffer.alloc(8); h.writeUInt32BE(u.length, 0); h.writeUInt32BE(p.length, 4);
    t.write(Buffer.concat([h, u, p]));
  }
  const result = await reader.u32();
  if (result !== 0) {
    const reason = (await reader.string(4096, 'reason')).toString();
    return { ok: false, reason, sock, reader, closed: closedAt };
  }
  sock.write(Buffer.from([1]));
  const head = parseServerInitHead(await reader.read(24));
  const name = (await reader.read(head.nameLength)).toString();
  return { ok: true, sock, reader, init: { width: head.width, height: head.height, pf: head.pf, name }, closed: closedAt };
}

/** Run a command, resolve its exit code and output. */
export function run(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, out, err }); });
  });
}

export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export const PF32: PixelFormat = { bpp: 32, depth: 24, bigEndian: false, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0 };

/**
 * A fake VNC server (the hostile target of the tests): accepts any VNC-auth response, sends a
 * ServerInit of the given size, then hands the socket to onClient; the client's messages are
 * collected in `received`. close() also drops open connections.
 */
export async function fakeServer(onClient: (sock: net.Socket, received: ClientMessage[]) => void, size = { width: 64, height: 48 }) {
  const received: ClientMessage[] = [];
  const open = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let stage = 0;
    sock.write('RFB 003.008\n');
    sock.on('data', (c) => {
      buf = Buffer.concat([buf, c]);
      for (;;) {
        if (stage === 0 && buf.length >= 12) { buf = buf.subarray(12); sock.write(Buffer.from([1, 2])); stage = 1; continue; }
        if (stage === 1 && buf.length >= 1) { buf = buf.subarray(1); sock.write(Buffer.alloc(16, 7)); stage = 2; continue; }
        if (stage === 2 && buf.length >= 16) { buf = buf.subarray(16); sock.write(Buffer.alloc(4)); stage = 3; continue; }
        if (stage === 3 && buf.length >= 1) {
          buf = buf.subarray(1);
          sock.write(encodeServerInit({ ...size, pf: PF32, name: 'fake' }));
          stage = 4;
          onClient(sock, received);
          continue;
        }
        if (stage === 4) {
          const m = buf.length ? parseClientMessage(buf) : null;
          if (!m) break;
          received.push(m.msg);
          buf = buf.subarray(m.length);
          continue;
        }
        break;
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    received,
    close: () => new Promise<void>((r) => { for (const s of open) s.destroy(); server.close(() => r()); }),
  };
}

/** A ScreenSink onto a Framebuffer (what the recorder's model does with decoded updates). */
export class FramebufferSink implements ScreenSink {
  fb: Framebuffer;
  constructor(width: number, height: number) { this.fb = new Framebuffer(width, height); }
  putRect(x: number, y: number, w: number, h: number, rgba: Uint8Array) { this.fb.putRect(x, y, w, h, rgba); }
  fillRect(x: number, y: number, w: number, h: number, r: number, g: number, b: number) { this.fb.fillRect(x, y, w, h, r, g, b); }
  copyRect(sx: number, sy: number, x: number, y: number, w: number, h: number) { this.fb.copyRect(sx, sy, x, y, w, h); }
  resize(w: number, h: number) { this.fb.resize(w, h); }
  cursor() {}
  endUpdate() {}
}

/** A FramebufferUpdate header for n rectangles. */
export function rfbUpdate(n: number): Buffer {
  const b = Buffer.alloc(4); b.writeUInt16BE(n, 2);
  return b;
}

/** A rectangle header (with ZRLE's length when given). */
export function rfbRect(x: number, y: number, w: number, h: number, enc: number, zrleLength?: number): Buffer {
  const b = Buffer.alloc(zrleLength === undefined ? 12 : 16);
  b.writeUInt16BE(x, 0); b.writeUInt16BE(y, 2); b.writeUInt16BE(w, 4); b.writeUInt16BE(h, 6); b.writeInt32BE(enc, 8);
  if (zrleLength !== undefined) b.writeUInt32BE(zrleLength, 12);
  return b;
}

/** A w×h Hextile rectangle at 0,0 of raw tiles (32 bpp), each tile one byte value. */
export function hextileScreen(w: number, h: number, seed: number): Buffer {
  const parts: Buffer[] = [rfbRect(0, 0, w, h, 5)];
  for (let ty = 0; ty < h; ty += 16) {
    for (let tx = 0; tx < w; tx += 16) {
      const tile = Buffer.alloc(1 + Math.min(16, w - tx) * Math.min(16, h - ty) * 4, (tx * 7 + ty * 3 + seed) & 255);
      tile[0] = 1;
      parts.push(tile);
    }
  }
  return Buffer.concat(parts);
}

/** Full-screen ZRLE updates on one zlib stream, each tile one solid colour (a few dozen bytes for millions of pixels). */
export class ZrleFills {
  private z = new Deflate({ level: 9 });
  constructor(private w: number, private h: number) {}
  update(colour: number): Buffer {
    const tiles = Math.ceil(this.w / 64) * Math.ceil(this.h / 64);
    const raw = Buffer.alloc(tiles * 4);
    for (let i = 0; i < tiles; i++) { raw[i * 4] = 1; raw[i * 4 + 1] = colour; raw[i * 4 + 2] = 255 - colour; raw[i * 4 + 3] = i & 255; }
    const out: Uint8Array[] = [];
    this.z.onData = (c: Uint8Array) => { out.push(c); };
    this.z.push(raw, 2);
    const data = Buffer.concat(out);
    return Buffer.concat([rfbUpdate(1), rfbRect(0, 0, this.w, this.h, 16, data.length), data]);
  }
}

/** Write in pieces, waiting for drain (the peer's backpressure) between them; stops when the socket closes. */
export async function writeAll(sock: Duplex & { destroyed: boolean }, b: Buffer, piece = 65536): Promise<void> {
  for (let i = 0; i < b.length && !sock.destroyed; i += piece) {
    if (sock.write(b.subarray(i, i + piece))) continue;
    await new Promise<void>((r) => {
      const done = () => { sock.off('drain', done); sock.off('close', done); r(); };
      sock.on('drain', done);
      sock.on('close', done);
    });
  }
}
