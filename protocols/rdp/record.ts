/**
 * What an RDP session records: the screen from bitmap updates (slow-path and fast-path) through
 * the shared framebuffer model (recorder/screen) as NDJSON with PNG keyframes; keystrokes as text
 * with modifiers; mouse clicks; clipboard and drive redirection messages as events. Nothing here
 * ever throws into the relay for a picture it cannot decode: it counts and reports it instead.
 * Work is bounded by the desktop: a bitmap larger than the desktop is not decoded, and an update
 * whose bitmaps cover more than MAX_UPDATE_SCREENS desktops throws ResourceLimitError, which ends
 * the session as resource_limit. Decoding is done one bitmap per step() for the relay to schedule.
 */
import type { Clock, TimerHandle } from '../../policies/clock.js';
import type { EventRecorder, SessionRecording } from '../../recorder/types.js';
import { ScreenWriter } from '../../recorder/screen/index.js';
import { validSize } from '../../recorder/screen/framebuffer.js';
import { ResourceLimitError } from '../bounded.js';
import { BitmapScratch, decodeBitmap, parseBitmapUpdate, type BitmapRect } from './bitmap.js';
import { bitmapDesktop, type CapabilitySet } from './capabilities.js';
import { ChannelAssembler, parseDeviceListAnnounce, parseRdpdr, parseChannelChunk } from './channels.js';
import type { ClipboardEvent } from './cliprdr.js';
import { KeyTranslator } from './keys.js';
import {
  FASTPATH_FRAGMENT_FIRST, FASTPATH_FRAGMENT_LAST, FASTPATH_FRAGMENT_NEXT, FASTPATH_FRAGMENT_SINGLE, FASTPATH_UPDATETYPE_BITMAP,
  PTR_FLAGS_BUTTON1, PTR_FLAGS_BUTTON2, PTR_FLAGS_BUTTON3, PTR_FLAGS_DOWN, UPDATETYPE_BITMAP, type FastPathUpdate, type InputEvent,
} from './pdu.js';

const KEY_FLUSH_MS = 1000;
/** A bitmap update may cover at most this many desktops (sum of its bitmaps' areas). */
export const MAX_UPDATE_SCREENS = 4;
/** Bitmaps may be padded past the desktop's edge up to one 64-pixel tile. */
const TILE_PAD = 64;

export class RdpRecorder {
  private screen: ScreenWriter | null = null;
  private events: EventRecorder;
  private keys = new KeyTranslator();
  private typed = '';
  private flushTimer: TimerHandle | null = null;
  private fragments: Buffer[] = [];
  private fragmentBytes = 0;
  private assemblers = new Map<string, ChannelAssembler>();
  private refused = new Set<string>();
  private lastButtons = 0;
  private scratch = new BitmapScratch();
  /** Bitmap updates checked and waiting to be decoded (at most one PDU's: the relay decodes before it reads on). */
  private work: { rects: BitmapRect[]; next: number }[] = [];
  undecoded = 0;
  decoded = 0;
  bpp = 0;
  closed = false;

  constructor(private recording: SessionRecording, private clock: Clock, private log: { warn(o: object, m: string): void }, private audit?: (action: string, data: Record<string, unknown>) => void) {
    this.events = recording.events();
  }

  /** The screen recording's PNG backlog is full: stop feeding updates until whenReady() calls back. */
  get busy(): boolean { return !!this.screen?.busy && !this.closed; }

  whenReady(cb: () => void): void {
    if (this.screen && !this.closed) this.screen.whenReady(cb);
    else cb();
  }

  /** Client capabilities (before the gateway strips them): the colour depth the screen will use. */
  capabilities(sets: CapabilitySet[]): void {
    const d = bitmapDesktop(sets);
    if (d) this.desktop(d.width, d.height);
  }

  demandActive(sets: CapabilitySet[]): void {
    const d = bitmapDesktop(sets);
    if (d) this.desktop(d.width, d.height);
  }

  private desktop(width: number, height: number): void {
    if (this.closed || !validSize(width, height)) return;
    if (!this.screen) {
      this.screen = new ScreenWriter(this.recording.screen({ width, height }), this.clock, width, height);
      this.screen.keyframe();
    } else {
      this.screen.resize(width, height);
    }
  }

  slowPathUpdate(body: Buffer): void {
    if (body.length < 2) return;
    if (body.readUInt16LE(0) === UPDATETYPE_BITMAP) this.bitmaps(body);
  }

  fastPath(updates: FastPathUpdate[]): void {
    for (const u of updates) {
      if (u.compression) { this.undecoded++; continue; }
      let data: Buffer | null = null;
      if (u.fragmentation === FASTPATH_FRAGMENT_SINGLE) data = u.data;
      else if (u.fragmentation === FASTPATH_FRAGMENT_FIRST) { this.fragments = [Buffer.from(u.data)]; this.fragmentBytes = u.data.length; }
      else if (u.fragmentation === FASTPATH_FRAGMENT_NEXT || u.fragmentation === FASTPATH_FRAGMENT_LAST) {
        this.fragmentBytes += u.data.length;
        if (this.fragmentBytes > 8 << 20) { this.fragments = []; this.fragmentBytes = 0; this.undecoded++; continue; }
        this.fragments.push(Buffer.from(u.data));
        if (u.fragmentation === FASTPATH_FRAGMENT_LAST) { data = Buffer.concat(this.fragments); this.fragments = []; this.fragmentBytes = 0; }
      }
      if (data && u.code === FASTPATH_UPDATETYPE_BITMAP) this.bitmaps(data);
    }
  }

  /**
   * A bitmap update is checked now (its structure; its bitmaps against the desktop) and decoded
   * later, one bitmap per step(), so the relay can yield between them: a PDU of a few hundred
   * bytes may stand for several desktops of pixels.
   */
  private bitmaps(data: Buffer): void {
    if (!this.screen || this.closed) return;
    const { width: dw, height: dh } = this.screen.fb;
    let rects: BitmapRect[];
    try {
      rects = parseBitmapUpdate(data);
    } catch (e) {
      this.refusedBitmap((e as Error).message);
      return;
    }
    let area = 0;
    const kept: BitmapRect[] = [];
    for (const r of rects) {
      if (r.width > dw + TILE_PAD || r.height > dh + TILE_PAD) {
        this.refusedBitmap(`a ${r.width}x${r.height} bitmap is larger than the ${dw}x${dh} desktop`);
        continue;
      }
      area += r.width * r.height;
      if (area > MAX_UPDATE_SCREENS * dw * dh) {
        throw new ResourceLimitError(`a bitmap update covers more than ${MAX_UPDATE_SCREENS} times the ${dw}x${dh} desktop`);
      }
      kept.push(r);
    }
    this.work.push({ rects: kept, next: 0 });
  }

  /** Bitmaps are waiting to be decoded (step() does one). */
  get hasWork(): boolean { return this.work.length > 0; }

  /** Decode one waiting bitmap into the screen, or end an update whose bitmaps are all done. */
  step(): void {
    const u = this.work[0];
    if (!u) return;
    const screen = this.screen;
    if (!screen || this.closed) { this.work = []; return; }
    const r = u.rects[u.next++];
    if (!r) {
      this.work.shift();
      screen.endUpdate();
      return;
    }
    let px: Uint8Array | null;
    try {
      px = decodeBitmap(r, this.scratch);
    } catch (e) {
      this.refusedBitmap((e as Error).message);
      return;
    }
    if (!px) { this.undecoded++; return; }
    this.decoded++;
    this.bpp = r.bpp;
    const w = r.right - r.left + 1;
    const h = r.bottom - r.top + 1;
    if (w === r.width && h === r.height) screen.putRect(r.left, r.top, r.width, r.height, px);
    else screen.putRect(r.left, r.top, Math.min(w, r.width), Math.min(h, r.height), crop(px, r.width, Math.min(w, r.width), Math.min(h, r.height)));
  }

  private refusedBitmap(why: string): void {
    this.undecoded++;
    if (this.undecoded < 5) this.log.warn({ err: why }, 'rdp: bitmap update not recorded');
  }

  input(events: InputEvent[]): void {
    if (this.closed) return;
    for (const e of events) {
      if (e.kind === 'scancode') this.typedText(this.keys.scancode(e.code, e.release, e.extended));
      else if (e.kind === 'unicode') this.typedText(this.keys.unicode(e.code, e.release));
      else if (e.kind === 'mouse' && !e.extended) {
        const buttons = e.flags & (PTR_FLAGS_BUTTON1 | PTR_FLAGS_BUTTON2 | PTR_FLAGS_BUTTON3);
        if (buttons && (e.flags & PTR_FLAGS_DOWN)) {
          const button = buttons & PTR_FLAGS_BUTTON1 ? 'left' : buttons & PTR_FLAGS_BUTTON2 ? 'right' : 'middle';
          this.screen?.input({ kind: 'click', button, x: e.x, y: e.y });
          this.events.event('rdp.click', { button, x: e.x, y: e.y });
        }
        this.lastButtons = buttons;
      }
    }
  }

  private typedText(s: string): void {
    if (!s) return;
    this.screen?.input({ kind: 'key', text: s });
    this.typed += s;
    if (s === '<Enter>' || this.typed.length > 200) this.flushKeys();
    else if (!this.flushTimer) this.flushTimer = this.clock.setTimer(KEY_FLUSH_MS, () => { this.flushTimer = null; this.flushKeys(); });
  }

  private flushKeys(): void {
    this.flushTimer?.cancel();
    this.flushTimer = null;
    if (!this.typed) return;
    this.events.event('rdp.keys', { text: this.typed });
    this.typed = '';
  }

  refusedChannel(name: string): void {
    if (this.refused.has(name)) return;
    this.refused.add(name);
    this.events.event('rdp.channel_refused', { channel: name });
  }

  /** A fast-path update arrives in fragments and not all of them are in yet. */
  get fragmenting(): boolean { return this.fragments.length > 0; }

  /** An event of the session (a banner drawn, say) in the event log. */
  note(type: string, data: Record<string, unknown>): void {
    if (!this.closed) this.events.event(type, data);
  }

  /** A full frame in the screen recording now (a live viewer that fell behind catches up from it). */
  keyframe(): void {
    if (!this.closed) this.screen?.keyframe();
  }

  /** A clipboard message as the relay's filter saw it: the event log and the screen timeline. */
  clipboard(e: ClipboardEvent): void {
    if (this.closed) return;
    const data: Record<string, unknown> = { ...e };
    this.events.event('rdp.clipboard', data);
    this.screen?.input({ kind: 'clipboard', ...data });
  }

  /** A static virtual channel chunk in either direction (drive redirection is logged). */
  channel(name: string, data: Buffer, fromClient: boolean): void {
    if (this.closed || name !== 'rdpdr') return;
    const key = `${name}:${fromClient ? 'c' : 's'}`;
    let a = this.assemblers.get(key);
    if (!a) this.assemblers.set(key, a = new ChannelAssembler(64 * 1024));
    let msg: { head: Buffer; length: number } | null;
    try { msg = a.push(parseChannelChunk(data)); } catch { return; }
    if (!msg) return;
    const direction = fromClient ? 'client_to_target' : 'target_to_client';
    try {
      const r = parseRdpdr(msg.head);
      if (r.packet === 'device_list_announce') {
        const devices = parseDeviceListAnnounce(r.body);
        this.events.event('rdp.devices', { direction, count: devices.length, names: devices.map((d) => d.name) });
        for (const d of devices) this.events.event('rdp.device', { direction, type: d.type, name: d.name, drive: d.type === 8 });
        // Drive redirection where the role allows it: audited, with what the client shares.
        const drives = devices.filter((d) => d.type === 8).map((d) => d.name);
        if (drives.length) this.audit?.('rdp.drive_redirection', { drives });
      } else if (r.packet === 'device_iorequest' && r.body.length >= 20) {
        // DR_DEVICE_IOREQUEST: DeviceId, FileId, CompletionId, MajorFunction, MinorFunction.
        const major = r.body.readUInt32LE(12);
        const names: Record<number, string> = { 0: 'create', 2: 'close', 3: 'read', 4: 'write', 0x12: 'set_information' };
        if (names[major] && major !== 2) {
          const extra: Record<string, unknown> = {};
          if ((major === 3 || major === 4) && r.body.length >= 24) extra.length = r.body.readUInt32LE(20);
          if (major === 0 && r.body.length >= 52) {
            const pathLen = r.body.readUInt32LE(48);
            if (pathLen <= 1024 && r.body.length >= 52 + pathLen) extra.path = r.body.subarray(52, 52 + pathLen).toString('utf16le').replace(/\0+$/, '');
          }
          this.events.event('rdp.drive', { op: names[major], device: r.body.readUInt32LE(0), ...extra });
        }
      }
    } catch { /* a channel message the recorder cannot read is relayed anyway */ }
  }

  close(): void {
    if (this.closed) return;
    while (this.work.length) this.step();
    this.flushKeys();
    this.closed = true;
    this.screen?.close();
  }

  /** The framebuffer model (tests compare it with the client's window). */
  get frame(): { width: number; height: number; data: Uint8Array } | null {
    return this.screen ? this.screen.fb : null;
  }
}

function crop(px: Uint8Array, srcW: number, w: number, h: number): Uint8Array {
  const out = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) out.set(px.subarray(y * srcW * 4, y * srcW * 4 + w * 4), y * w * 4);
  return out;
}
