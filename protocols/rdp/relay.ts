/**
 * Relays an established RDP connection both ways with backpressure. Per PDU it rewrites only what
 * must change: MCS user / channel ids (the gateway answered the client's MCS connect itself, so
 * numbering may differ from the target's), the client's Confirm Active (no orders, codecs or
 * surface commands, so the target sends bitmaps), and refused virtual channels (dropped). It feeds
 * the recorder with server updates, client input and channel messages. Malformed PDUs end the
 * session cleanly; a target whose updates exceed the recorder's budget ends it as resource_limit.
 * Each direction is processed in slices of bounded time per event-loop turn (SlicedPump), so one
 * expensive stream of bitmaps never stalls the other sessions.
 */
import type { Duplex } from 'node:stream';
import type { BannerKind } from '../banner.js';
import { ResourceLimitError, SlicedPump } from '../bounded.js';
import { bannerPdus, type BannerTarget } from './banner.js';
import { bitmapBpp, bitmapDesktop, stripClientCapabilities } from './capabilities.js';
import { ClipboardFilter, type ClipboardEvent, type ClipboardRules } from './cliprdr.js';
import { RdpProtocolError } from './errors.js';
import { encodeDomainPdu, parseDomainPdu } from './mcs.js';
import {
  encodeConfirmActive, encodeShareControl, parseConfirmActive, parseDemandActive, parseFastPathInput, parseFastPathOutput,
  parseShareControl, parseShareData, parseSlowPathInput, PDUTYPE_CONFIRMACTIVE, PDUTYPE_DATA, PDUTYPE_DEACTIVATEALL, PDUTYPE_DEMANDACTIVE,
  PDUTYPE2_INPUT, PDUTYPE2_UPDATE,
} from './pdu.js';
import type { DomainMessage } from './mcs.js';
import type { RdpRecorder } from './record.js';
import { SEC_LICENSE_PKT } from './security.js';
import { encodeTpkt, FrameSplitter, type Frame } from './tpkt.js';
import { encodeData, parseData } from './x224.js';

export interface ChannelMap {
  /** client-side id -> target-side id (null: refused, dropped). */
  up: Map<number, number | null>;
  /** target-side id -> client-side id. */
  down: Map<number, number>;
  /** client-side id -> channel name. */
  names: Map<number, string>;
  clientIo: number;
  clientUser: number;
  upstreamUser: number;
}

type EndCode = 'client_exit' | 'target_closed' | 'error' | 'resource_limit';

/** Frames waiting to be forwarded, in order (an index, not shift(): a chunk can hold thousands). */
class FrameQueue {
  private items: Frame[] = [];
  private head = 0;
  push(fs: Frame[]): void { for (const f of fs) this.items.push(f); }
  next(): Frame | undefined {
    const f = this.items[this.head];
    if (!f) return undefined;
    this.items[this.head++] = undefined as unknown as Frame;
    if (this.head === this.items.length) { this.items = []; this.head = 0; }
    return f;
  }
  get length(): number { return this.items.length - this.head; }
}

export interface RelayOptions {
  client: Duplex;
  upstream: Duplex;
  map: ChannelMap;
  recorder: RdpRecorder;
  /** Frames already read from the target (after the Client Info) and bytes after them. */
  upstreamFrames: Frame[];
  upstreamRest: Buffer;
  clientRest: Buffer;
  onBytes(up: number, down: number): void;
  onEnd(code: EndCode, message: string): void;
  onConfirmActive?(changed: string[]): void;
  /** The role's clipboard rules, enforced on the cliprdr channel whatever the client sends. */
  clipboard: ClipboardRules;
  /** What the clipboard filter saw and decided (for the event log and the audit). */
  onClipboard?(e: ClipboardEvent): void;
}

/** The MCS initiator of target PDUs when none was seen yet (the server's channel, 1002). */
const SERVER_INITIATOR = 1002;

/**
 * A PDU that starts with a basic security header carrying the licensing flag, followed by a
 * licensing preamble whose size matches the rest of the PDU. (flagsHi is not reliable: xrdp sends
 * 0x0010 there, which also looks like a share control version field.)
 */
export function isLicensing(p: Buffer): boolean {
  return p.length >= 8 && (p.readUInt16LE(0) & SEC_LICENSE_PKT) !== 0 && p.readUInt16LE(6) === p.length - 4;
}

export class RdpRelay {
  private done = false;
  /** Until the first Demand Active, IO-channel PDUs may be licensing PDUs with a security header. */
  private licensing = true;
  private c2u = new FrameSplitter();
  private u2c = new FrameSplitter();
  private fromC = new FrameQueue();
  private fromU = new FrameQueue();
  private cpump: SlicedPump;
  private upump: SlicedPump;
  private clip: ClipboardFilter;
  /** Learnt from the target's Demand Active: where a gateway banner goes and in what colour depth. */
  private screen: Omit<BannerTarget, 'ioChannel'> | null = null;
  /** The target sends screen updates (the client has finished its connection sequence). */
  private screenReady = false;
  private serverInitiator = SERVER_INITIATOR;
  private pendingBanner: { text: string; kind: BannerKind } | null = null;

  constructor(private o: RelayOptions) {
    this.cpump = new SlicedPump(o.client, (more) => this.drain(true, more));
    this.upump = new SlicedPump(o.upstream, (more) => this.drain(false, more));
    this.clip = new ClipboardFilter(o.clipboard, (e) => o.onClipboard?.(e));
  }

  /** Slices that ran out of time and yielded to other sessions (both directions). */
  get deferrals(): number { return this.cpump.deferrals + this.upump.deferrals; }

  start(): void {
    const { client, upstream } = this.o;
    client.on('data', (d: Buffer) => this.pump(d, true));
    upstream.on('data', (d: Buffer) => this.pump(d, false));
    client.on('close', () => this.finish('client_exit', 'the RDP client disconnected'));
    upstream.on('close', () => this.finish('target_closed', 'the RDP target closed the connection'));
    client.on('error', () => this.finish('client_exit', 'the RDP client connection failed'));
    upstream.on('error', (e: Error) => this.finish('target_closed', `the RDP target connection failed: ${e.message}`));
    client.resume();
    upstream.resume();
    this.fromU.push(this.o.upstreamFrames);
    if (this.o.upstreamRest.length) this.pump(this.o.upstreamRest, false);
    else this.upump.kick();
    if (this.o.clientRest.length) this.pump(this.o.clientRest, true);
  }

  private pump(chunk: Buffer, fromClient: boolean): void {
    if (this.done) return;
    try {
      (fromClient ? this.fromC : this.fromU).push((fromClient ? this.c2u : this.u2c).push(chunk));
    } catch (e) {
      this.failed(e, fromClient);
      return;
    }
    (fromClient ? this.cpump : this.upump).kick();
  }

  /**
   * Forward queued frames of one direction while more() allows; returns whether work is left. From
   * the target, the recorder decodes a frame's bitmaps (one per step) before the next frame is read.
   */
  private drain(fromClient: boolean, more: () => boolean): boolean {
    const q = fromClient ? this.fromC : this.fromU;
    const rec = this.o.recorder;
    try {
      while (!this.done) {
        if (!fromClient && rec.hasWork) {
          if (!more()) return true;
          if (rec.busy) {
            // The recording's PNG backlog is full: carry on once it has drained.
            this.upump.hold('recorder');
            rec.whenReady(() => this.upump.release('recorder'));
            return true;
          }
          rec.step();
          continue;
        }
        if (!q.length) return false;
        if (!more()) return true;
        this.forward(q.next()!, fromClient);
      }
    } catch (e) {
      this.failed(e, fromClient);
    }
    return false;
  }

  private failed(e: unknown, fromClient: boolean): void {
    const side = fromClient ? 'client' : 'target';
    if (e instanceof ResourceLimitError) { this.finish('resource_limit', `the RDP ${side} exceeded a limit: ${e.message}`); return; }
    const msg = e instanceof RdpProtocolError ? e.message : `gateway error: ${(e as Error).message}`;
    this.finish('error', `${side} sent a malformed PDU: ${msg}`);
  }

  private forward(f: Frame, fromClient: boolean): void {
    const out = fromClient ? this.fromClient(f) : this.fromUpstream(f);
    if (!out) {
      if (!fromClient) this.drawBanner();
      return;
    }
    const dst = fromClient ? this.o.upstream : this.o.client;
    const pump = fromClient ? this.cpump : this.upump;
    if (fromClient) this.o.onBytes(out.length, 0); else this.o.onBytes(0, out.length);
    if (!dst.write(out) && !pump.held('backpressure')) {
      pump.hold('backpressure');
      dst.once('drain', () => { if (!this.done) pump.release('backpressure'); });
    }
    // A banner waiting for the target's first screen update (or the end of a fragmented one) goes right after it.
    if (!fromClient) this.drawBanner();
  }

  private fromClient(f: Frame): Buffer | null {
    const rec = this.o.recorder;
    if (f.kind === 'fastpath') {
      rec.input(parseFastPathInput(f.header, f.payload));
      return f.raw;
    }
    const mcs = parseData(f.payload);
    if (!mcs) return f.raw; // X.224 disconnect: the target closes
    const m = parseDomainPdu(mcs);
    if (m.type !== 'sendData') return f.raw;
    const map = this.o.map;
    const up = map.up.get(m.channelId);
    if (up === undefined) throw new RdpProtocolError(`client sent data on unknown channel ${m.channelId}`);
    if (up === null) {
      rec.refusedChannel(map.names.get(m.channelId) ?? String(m.channelId));
      return null;
    }
    if (map.names.get(m.channelId) === 'cliprdr') return this.clipboard(true, m, up);
    let data = m.data;
    if (m.channelId === map.clientIo && !(this.licensing && isLicensing(data))) {
      const sc = parseShareControl(data);
      if (sc.pduType === PDUTYPE_CONFIRMACTIVE) {
        const ca = parseConfirmActive(sc.body);
        const s = stripClientCapabilities(ca.sets);
        rec.capabilities(ca.sets);
        this.o.onConfirmActive?.(s.changed);
        data = encodeShareControl(PDUTYPE_CONFIRMACTIVE, sc.pduSource, encodeConfirmActive({ ...ca, sets: s.sets }));
      } else if (sc.pduType === PDUTYPE_DATA) {
        const sd = parseShareData(sc.body);
        if (sd.pduType2 === PDUTYPE2_INPUT) rec.input(parseSlowPathInput(sd.body));
      }
    } else {
      rec.channel(map.names.get(m.channelId) ?? String(m.channelId), data, true);
    }
    if (up === m.channelId && map.upstreamUser === map.clientUser && data === m.data) return f.raw;
    return encodeTpkt(encodeData(encodeDomainPdu({ ...m, initiator: map.upstreamUser, channelId: up, data })));
  }

  private fromUpstream(f: Frame): Buffer | null {
    const rec = this.o.recorder;
    if (f.kind === 'fastpath') {
      rec.fastPath(parseFastPathOutput(f.header, f.payload));
      if (!this.licensing) this.screenReady = true;
      return f.raw;
    }
    const mcs = parseData(f.payload);
    if (!mcs) return f.raw;
    const m = parseDomainPdu(mcs);
    if (m.type !== 'sendData') return f.raw;
    const map = this.o.map;
    const down = m.channelId === map.upstreamUser ? map.clientUser : map.down.get(m.channelId);
    if (down === undefined) throw new RdpProtocolError(`target sent data on unknown channel ${m.channelId}`);
    if (down === map.clientIo && !(this.licensing && isLicensing(m.data))) {
      this.serverInitiator = m.initiator;
      const sc = parseShareControl(m.data);
      if (sc.pduType === PDUTYPE_DEMANDACTIVE) {
        this.licensing = false;
        const da = parseDemandActive(sc.body);
        rec.demandActive(da.sets);
        const size = bitmapDesktop(da.sets);
        this.screen = { shareId: da.shareId, pduSource: sc.pduSource, initiator: m.initiator, bpp: bitmapBpp(da.sets) ?? 16, width: size?.width ?? 0, height: size?.height ?? 0 };
        this.screenReady = false;
      } else if (sc.pduType === PDUTYPE_DEACTIVATEALL) {
        this.screenReady = false;
      } else if (sc.pduType === PDUTYPE_DATA) {
        const sd = parseShareData(sc.body);
        if (sd.pduType2 === PDUTYPE2_UPDATE && sd.compressedType === 0) { rec.slowPathUpdate(sd.body); this.screenReady = true; }
      }
    } else if (down !== map.clientUser && map.names.get(down) === 'cliprdr') {
      return this.clipboard(false, m, down);
    } else if (down !== map.clientUser) {
      rec.channel(map.names.get(down) ?? String(down), m.data, false);
    }
    if (down === m.channelId && map.upstreamUser === map.clientUser) return f.raw;
    return encodeTpkt(encodeData(encodeDomainPdu({ ...m, initiator: m.initiator === map.upstreamUser ? map.clientUser : m.initiator, channelId: down })));
  }

  /**
   * The clipboard channel goes through the filter: what it lets through is forwarded (re-chunked
   * when it rewrote a message), what it answers itself goes back to the sender.
   */
  private clipboard(fromClient: boolean, m: Extract<DomainMessage, { type: 'sendData' }>, to: number): Buffer | null {
    const map = this.o.map;
    const r = this.clip.push(fromClient, m.data);
    const mcs = (indication: boolean, initiator: number, channelId: number, data: Buffer) =>
      encodeTpkt(encodeData(encodeDomainPdu({ type: 'sendData', indication, initiator, channelId, flags: m.flags, data })));
    if (r.reply.length) {
      const back = Buffer.concat(r.reply.map((d) => (fromClient ? mcs(true, this.serverInitiator, m.channelId, d) : mcs(false, map.upstreamUser, m.channelId, d))));
      const dst = fromClient ? this.o.client : this.o.upstream;
      if (fromClient) this.o.onBytes(0, back.length); else this.o.onBytes(back.length, 0);
      if (!dst.destroyed) dst.write(back);
    }
    if (!r.forward.length) return null;
    const initiator = fromClient ? map.upstreamUser : m.initiator === map.upstreamUser ? map.clientUser : m.initiator;
    return Buffer.concat(r.forward.map((d) => mcs(!fromClient, initiator, to, d)));
  }

  /**
   * Draw a banner across the top of the client's screen (and into the recording) as soon as the
   * target sends screen updates and no fast-path update is half-way: bitmap updates in the
   * session's colour depth. It stays until the desktop draws over it.
   */
  banner(text: string, kind: BannerKind): void {
    if (this.done) return;
    this.pendingBanner = { text, kind };
    this.drawBanner();
  }

  /** The banner's frames (already given to the recorder), or null when it cannot be drawn now. */
  private bannerFrames(text: string, kind: BannerKind): Buffer[] | null {
    const rec = this.o.recorder;
    if (!this.screen || !this.screenReady || rec.fragmenting) return null;
    const size = rec.frame ?? this.screen;
    const b = bannerPdus({ ...this.screen, width: size.width, height: size.height, ioChannel: this.o.map.clientIo }, text, kind);
    if (!b) return null;
    for (const u of b.updates) rec.slowPathUpdate(u);
    rec.note('rdp.banner', { kind, text });
    return b.frames;
  }

  private drawBanner(): void {
    const p = this.pendingBanner;
    if (!p || this.done) return;
    const frames = this.bannerFrames(p.text, p.kind);
    if (!frames) return;
    this.pendingBanner = null;
    const out = Buffer.concat(frames);
    this.o.onBytes(0, out.length);
    this.o.client.write(out);
    this.upump.kick();
  }

  /**
   * Close both sides (idempotent). lastBanner: the gateway ends the session, and the client (and
   * the recording) gets this reason drawn on the screen before finalToClient.
   */
  close(finalToClient?: Buffer, lastBanner?: string): void {
    if (this.done) return;
    const last = lastBanner ? this.bannerFrames(lastBanner, 'ended') : null;
    this.done = true;
    this.cpump.stop();
    this.upump.stop();
    const { client, upstream } = this.o;
    const final = Buffer.concat([...(last ?? []), ...(finalToClient ? [finalToClient] : [])]);
    if (final.length && !client.destroyed) client.write(final);
    upstream.destroy();
    client.end();
    setTimeout(() => client.destroy(), last ? 250 : 50).unref();
  }

  private finish(code: EndCode, message: string): void {
    if (this.done) return;
    this.close();
    this.o.onEnd(code, message);
  }
}
