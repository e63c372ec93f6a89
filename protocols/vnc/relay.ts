/**
 * The relay after both handshakes: every message is parsed in both directions; SetEncodings is cut
 * down to what the recorder decodes, view-only roles lose input, clipboard follows the role,
 * FramebufferUpdates are applied to the screen model (recorded with PNG keyframes), keystrokes,
 * clicks and clipboard are logged. A protocol error on either side closes both cleanly.
 */
import type { Duplex } from 'node:stream';
import type { EndReason, LiveSession, ProtocolContext } from '../types.js';
import type { ScreenWriter } from '../../recorder/screen/index.js';
import type { TimerHandle } from '../../policies/clock.js';
import { encodeSetEncodings, filterEncodings, parseClientMessage, type ClientMessage } from './client-messages.js';
import { decodeServerMessage, measureServerMessage, type ServerStreamState } from './server-messages.js';
import { ProtocolError } from './reader.js';
import { KeyLog } from './keysym.js';
import type { Clipboard } from './config.js';

const MAX_CLIPBOARD_LOG = 4096;
const KEY_FLUSH_MS = 2000;

export interface RelayOptions {
  ctx: ProtocolContext;
  session: LiveSession;
  client: Duplex;
  upstream: Duplex;
  state: ServerStreamState;
  writer: ScreenWriter | null;
  clipboard: Clipboard;
  viewOnly: boolean;
  clientRest: Buffer;
  upstreamRest: Buffer;
}

export class VncRelay {
  private cbuf: Buffer = Buffer.alloc(0);
  private schunks: Buffer[] = [];
  private stotal = 0;
  private sneed = 1;
  private done = false;
  private keys = new KeyLog();
  private keyText = '';
  private keyTimer: TimerHandle | null = null;
  private buttons = 0;
  private pointer = { x: 0, y: 0 };

  constructor(private o: RelayOptions) {}

  start(): void {
    const { client, upstream, session } = this.o;
    session.onTerminate((reason) => this.finish(reason));
    client.on('data', (c: Buffer) => this.fromClient(c));
    upstream.on('data', (c: Buffer) => this.fromServer(c));
    client.on('close', () => this.finish({ code: 'client_exit', message: 'the viewer disconnected' }));
    upstream.on('close', () => this.finish({ code: 'target_closed', message: 'the VNC server closed the connection' }));
    client.on('error', (e) => session.log.debug({ err: e.message }, 'vnc client socket error'));
    upstream.on('error', (e) => session.log.debug({ err: e.message }, 'vnc server socket error'));
    client.on('drain', () => upstream.resume());
    upstream.on('drain', () => client.resume());
    if (this.o.clientRest.length) this.fromClient(this.o.clientRest);
    if (this.o.upstreamRest.length) this.fromServer(this.o.upstreamRest);
    client.resume();
    upstream.resume();
  }

  private protocolError(side: 'viewer' | 'server', e: unknown): void {
    const msg = e instanceof ProtocolError ? e.message : `internal error: ${(e as Error)?.message}`;
    this.o.session.log.warn({ side, err: msg }, 'vnc protocol error; closing the session');
    this.o.session.audit('vnc.protocol_error', { side, error: msg.slice(0, 300) });
    this.finish({ code: side === 'server' ? 'target_error' : 'error', message: `protocol error from the ${side}: ${msg}` });
  }

  private toServer(b: Buffer): void {
    if (this.done) return;
    this.o.session.addBytes(b.length, 0);
    if (!this.o.upstream.write(b)) this.o.client.pause();
  }

  private toClient(b: Buffer): void {
    if (this.done) return;
    this.o.session.addBytes(0, b.length);
    if (!this.o.client.write(b)) this.o.upstream.pause();
  }

  private fromClient(chunk: Buffer): void {
    if (this.done) return;
    this.cbuf = this.cbuf.length ? Buffer.concat([this.cbuf, chunk]) : chunk;
    let off = 0;
    try {
      for (;;) {
        const r = parseClientMessage(this.cbuf, off);
        if (!r) break;
        const raw = this.cbuf.subarray(off, off + r.length);
        off += r.length;
        this.clientMessage(r.msg, raw);
        if (this.done) return;
      }
    } catch (e) {
      this.protocolError('viewer', e);
      return;
    }
    this.cbuf = off ? Buffer.from(this.cbuf.subarray(off)) : this.cbuf;
  }

  private clientMessage(m: ClientMessage, raw: Buffer): void {
    const { session, writer } = this.o;
    switch (m.type) {
      case 'SetPixelFormat':
        this.o.state.setPixelFormat(m.pf);
        this.toServer(raw);
        return;
      case 'SetEncodings':
        this.toServer(encodeSetEncodings(filterEncodings(m.encodings)));
        return;
      case 'FramebufferUpdateRequest':
        this.toServer(raw);
        return;
      case 'KeyEvent': {
        if (this.o.viewOnly) return;
        const text = this.keys.key(m.down, m.key);
        if (text) {
          writer?.input({ kind: 'key', text });
          this.keyText += text;
          if (text === '\n' || this.keyText.length >= 200) this.flushKeys();
          else {
            this.keyTimer?.cancel();
            this.keyTimer = this.o.ctx.clock.setTimer(KEY_FLUSH_MS, () => this.flushKeys());
          }
        }
        this.toServer(raw);
        return;
      }
      case 'PointerEvent': {
        if (this.o.viewOnly) return;
        const pressed = m.mask & ~this.buttons;
        this.buttons = m.mask;
        this.pointer = { x: m.x, y: m.y };
        for (let b = 0; b < 8; b++) {
          if (pressed & (1 << b)) {
            writer?.input({ kind: 'click', button: b + 1, x: m.x, y: m.y });
            session.recording.events().event('vnc.click', { button: b + 1, x: m.x, y: m.y });
          }
        }
        this.toServer(raw);
        return;
      }
      case 'ClientCutText': {
        const allowed = this.o.clipboard === 'both' || this.o.clipboard === 'to-server';
        this.clipboardEvent('to-server', m.text, allowed);
        if (allowed) this.toServer(raw);
        return;
      }
    }
  }

  private clipboardEvent(direction: 'to-server' | 'to-client', text: Buffer, allowed: boolean): void {
    const s = text.toString('latin1');
    const data = { direction, allowed, bytes: text.length, text: s.slice(0, MAX_CLIPBOARD_LOG), truncated: s.length > MAX_CLIPBOARD_LOG };
    this.o.session.recording.events().event('vnc.clipboard', data);
    this.o.writer?.input({ kind: 'clipboard', direction, allowed, text: data.text });
    if (!allowed) this.o.session.audit('vnc.clipboard_refused', { direction, bytes: text.length });
  }

  private flushKeys(): void {
    this.keyTimer?.cancel();
    this.keyTimer = null;
    if (!this.keyText) return;
    this.o.session.recording.events().event('vnc.keys', { text: this.keyText });
    this.keyText = '';
  }

  private fromServer(chunk: Buffer): void {
    if (this.done) return;
    this.schunks.push(chunk);
    this.stotal += chunk.length;
    if (this.stotal < this.sneed) return;
    let buf = this.schunks.length === 1 ? this.schunks[0]! : Buffer.concat(this.schunks, this.stotal);
    this.schunks = [];
    this.stotal = 0;
    let off = 0;
    try {
      for (;;) {
        if (off >= buf.length) { this.sneed = 1; break; }
        const m = measureServerMessage(buf, off, this.o.state);
        if (m.length === null) { this.sneed = m.need - off; break; }
        const raw = buf.subarray(off, off + m.length);
        off += m.length;
        const msg = decodeServerMessage(raw, this.o.state, this.o.writer);
        if (msg.type === 'ServerCutText') {
          const allowed = this.o.clipboard === 'both' || this.o.clipboard === 'to-client';
          this.clipboardEvent('to-client', msg.text, allowed);
          if (!allowed) continue;
        } else if (msg.type === 'Bell') {
          this.o.writer?.input({ kind: 'bell' });
        }
        this.toClient(raw);
        if (this.done) return;
      }
    } catch (e) {
      this.protocolError('server', e);
      return;
    }
    if (off < buf.length) {
      buf = buf.subarray(off);
      this.schunks = [buf];
      this.stotal = buf.length;
    }
  }

  /** Close both sides now and end the session (idempotent). */
  finish(reason: EndReason): void {
    if (this.done) return;
    this.done = true;
    this.flushKeys();
    this.o.client.destroy();
    this.o.upstream.destroy();
    try { this.o.writer?.close(); } catch (e) { this.o.session.log.warn({ err: (e as Error).message }, 'vnc final keyframe failed'); }
    void this.o.session.end(reason);
  }
}
