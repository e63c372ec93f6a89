/**
 * The relay after both handshakes: every message is parsed in both directions; SetEncodings is cut
 * down to what the recorder decodes, view-only roles lose input, clipboard follows the role,
 * FramebufferUpdates stream through the screen model (recorded with PNG keyframes) piece by piece,
 * keystrokes, clicks and clipboard are logged. A protocol error on either side closes both
 * cleanly; a server that exceeds a budget (buffered bytes, ZRLE inflation, area per update) ends
 * the session as resource_limit. Server input is parsed in slices of bounded time per event-loop
 * turn (SlicedPump), so an expensive stream never stalls the other sessions.
 */
import type { Duplex } from 'node:stream';
import type { EndReason, LiveSession, ProtocolContext } from '../types.js';
import type { ScreenWriter } from '../../recorder/screen/index.js';
import type { TimerHandle } from '../../policies/clock.js';
import { ResourceLimitError, SlicedPump } from '../bounded.js';
import { ChunkQueue } from '../chunks.js';
import { clientMessageLength, encodeSetEncodings, filterEncodings, parseClientMessage, type ClientMessage } from './client-messages.js';
import { ServerStream, type ServerMessage, type ServerStreamState } from './server-messages.js';
import { ProtocolError } from './reader.js';
import { KeyLog } from './keysym.js';
import type { Clipboard } from './config.js';

const MAX_CLIPBOARD_LOG = 4096;
const KEY_FLUSH_MS = 2000;
/** Most server bytes held unparsed (a cursor or cut text in progress is the legitimate maximum). */
export const MAX_SERVER_BUFFERED = 8 << 20;

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
  /** Each server message once it has passed (ServerCutText only when the role lets it through). */
  onServerMessage?: (m: ServerMessage) => void;
}

export class VncRelay {
  private cq = new ChunkQueue();
  /** Length of the viewer message being waited for (0: its header is not complete yet). */
  private cneed = 0;
  private stream: ServerStream;
  private pump: SlicedPump;
  private done = false;
  private keys = new KeyLog();
  private keyText = '';
  private keyTimer: TimerHandle | null = null;
  private buttons = 0;
  private pointer = { x: 0, y: 0 };

  constructor(private o: RelayOptions) {
    this.stream = new ServerStream(o.state, o.writer, {
      forward: (b) => this.toClient(b),
      message: (m, raw) => this.serverMessage(m, raw),
    });
    this.pump = new SlicedPump(o.upstream, (more) => this.parseServer(more));
  }

  /** Slices of server parsing that ran out of time and yielded to other sessions. */
  get deferrals(): number { return this.pump.deferrals; }

  start(): void {
    const { client, upstream, session } = this.o;
    session.onTerminate((reason) => this.finish(reason));
    client.on('data', (c: Buffer) => this.fromClient(c));
    upstream.on('data', (c: Buffer) => this.fromServer(c));
    client.on('close', () => this.finish({ code: 'client_exit', message: 'the viewer disconnected' }));
    upstream.on('close', () => this.finish({ code: 'target_closed', message: 'the VNC server closed the connection' }));
    client.on('error', (e) => session.log.debug({ err: e.message }, 'vnc client socket error'));
    upstream.on('error', (e) => session.log.debug({ err: e.message }, 'vnc server socket error'));
    client.on('drain', () => this.pump.release('viewer backpressure'));
    upstream.on('drain', () => client.resume());
    client.resume();
    upstream.resume();
    if (this.o.clientRest.length) this.fromClient(this.o.clientRest);
    if (this.o.upstreamRest.length) this.fromServer(this.o.upstreamRest);
  }

  private protocolError(side: 'viewer' | 'server', e: unknown): void {
    if (e instanceof ResourceLimitError) {
      this.o.session.log.warn({ side, err: e.message }, 'vnc resource limit; closing the session');
      this.o.session.audit('vnc.resource_limit', { side, error: e.message.slice(0, 300) });
      this.finish({ code: 'resource_limit', message: `the VNC ${side} exceeded a limit: ${e.message}` });
      return;
    }
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
    if (!this.o.client.write(b)) this.pump.hold('viewer backpressure');
  }

  private fromClient(chunk: Buffer): void {
    if (this.done) return;
    const q = this.cq;
    q.push(chunk);
    if (q.length < this.cneed) return;
    try {
      for (;;) {
        const len = clientMessageLength(q.peek(Math.min(q.length, 8)));
        this.cneed = len;
        if (!len || q.length < len) break;
        this.cneed = 0;
        const raw = q.take(len);
        this.clientMessage(parseClientMessage(raw)!.msg, raw);
        if (this.done) return;
      }
    } catch (e) {
      this.protocolError('viewer', e);
    }
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
    this.stream.push(chunk);
    if (this.stream.buffered > MAX_SERVER_BUFFERED) {
      this.protocolError('server', new ResourceLimitError(`more than ${MAX_SERVER_BUFFERED} bytes buffered`));
      return;
    }
    this.pump.kick();
  }

  private parseServer(more: () => boolean): boolean {
    if (this.done) return false;
    const writer = this.o.writer;
    let left: boolean;
    try {
      left = this.stream.run(() => !this.done && more() && !writer?.busy);
    } catch (e) {
      this.protocolError('server', e);
      return false;
    }
    if (writer?.busy && !this.done) {
      // The recording's PNG backlog is full: read the server again once it has drained.
      this.pump.hold('recorder');
      writer.whenReady(() => this.pump.release('recorder'));
    }
    return left;
  }

  private serverMessage(m: ServerMessage, raw: Buffer | null): void {
    if (m.type === 'ServerCutText') {
      const allowed = this.o.clipboard === 'both' || this.o.clipboard === 'to-client';
      this.clipboardEvent('to-client', m.text, allowed);
      if (!allowed) return;
      this.toClient(raw!);
    } else if (m.type === 'Bell') {
      this.o.writer?.input({ kind: 'bell' });
    }
    this.o.onServerMessage?.(m);
  }

  /** Close both sides now and end the session (idempotent). */
  finish(reason: EndReason): void {
    if (this.done) return;
    this.done = true;
    this.pump.stop();
    this.flushKeys();
    this.o.client.destroy();
    this.o.upstream.destroy();
    try { this.o.writer?.close(); } catch (e) { this.o.session.log.warn({ err: (e as Error).message }, 'vnc final keyframe failed'); }
    void this.o.session.end(reason);
  }
}
