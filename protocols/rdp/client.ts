/**
 * The gateway as the RDP client, for desktops in the browser. The browser speaks a small JSON
 * protocol over the gateway's WebSocket (keys as KeyboardEvent.code, pointer, wheel, clipboard
 * text); this client turns it into RDP and runs the client side of the connection itself:
 *
 *   - the hello: client core data (the browser window's size, 32-bit colour, the person's keyboard
 *     layout), security and network data, the MCS Connect-Initial parameters and the Client Info
 *     with the extended info block. upstream.ts sends it with the minted credential (and NLA where
 *     the target wants it), exactly as for a native client;
 *   - licensing (a target that does not license answers "valid client"; one that asks for a
 *     license is refused with a reason), the Demand Active / Confirm Active exchange with
 *     capabilities that ask for plain bitmaps, and the finalization PDUs (Synchronize, Control
 *     Cooperate / Request Control, Font List), again after a Deactivate All (a desktop resize);
 *   - input as slow-path Input PDUs (scancodes with the extended flag, pointer moves and buttons,
 *     wheel, lock-key synchronisation);
 *   - the clipboard channel (cliprdr): capabilities, Format Lists, text in CF_UNICODETEXT both
 *     ways where the role allows it.
 *
 * It sits where a native client's socket would: `socket` is the client end of the relay, so the
 * relay records, filters the clipboard, draws banners and enforces exactly as for xfreerdp. The
 * screen never goes through this client: the browser gets the recorder's lines (the same the
 * live view uses).
 */
import { Duplex } from 'node:stream';
import { Secret } from '../../auth/secret.js';
import { bitmapBpp, bitmapDesktop, type CapabilitySet } from './capabilities.js';
import { ChannelAssembler, parseChannelChunk } from './channels.js';
import {
  CB_CLIP_CAPS, CB_FORMAT_DATA_REQUEST, CB_FORMAT_DATA_RESPONSE, CB_FORMAT_LIST, CB_FORMAT_LIST_RESPONSE, CB_MONITOR_READY,
  CB_RESPONSE_FAIL, CB_RESPONSE_OK, CB_USE_LONG_FORMAT_NAMES, CF_UNICODETEXT, channelChunks, encodeCaps, encodeClipMessage,
  encodeFormatList, encodeUnicodeText, parseCapsFlags, parseClipMessage, parseFormatList, unicodeText,
} from './cliprdr.js';
import { RdpProtocolError } from './errors.js';
import { CS_CORE, CS_SECURITY, type Block, type ChannelDef } from './gcc.js';
import { INFO_DISABLECTRLALTDEL, INFO_MAXIMIZESHELL, INFO_MOUSE, INFO_UNICODE, type ClientInfo } from './info.js';
import { berInt, berTlv, encodeDomainPdu, parseDomainPdu } from './mcs.js';
import { encodeConfirmActive, encodeShareControl, encodeShareData, parseDemandActive, parseShareControl, parseShareData, PDUTYPE_CONFIRMACTIVE, PDUTYPE_DATA, PDUTYPE_DEACTIVATEALL, PDUTYPE_DEMANDACTIVE, PDUTYPE2_INPUT, PDUTYPE2_SET_ERROR_INFO } from './pdu.js';
import { isLicensing } from './relay.js';
import { LICENSE_ERROR_ALERT, parseLicensePreamble, parseSecurityHeader, STATUS_VALID_CLIENT } from './security.js';
import { scancodeOf } from './keyboard.js';
import { LICENSE_REQUEST, newLicenseRequest } from './license.js';
import { encodeTpkt, FrameSplitter, type Frame } from './tpkt.js';
import { encodeData, parseData, PROTOCOL_HYBRID, PROTOCOL_SSL } from './x224.js';

/** The server's MCS channel (share control pduSource and targetUser of the Synchronize PDU). */
const SERVER_CHANNEL = 0x03ea;
const INFO_ENABLEWINDOWSKEY = 0x00000100;
const PERF_DISABLE_WALLPAPER = 0x01;
const PERF_DISABLE_FULLWINDOWDRAG = 0x02;
const PERF_DISABLE_MENUANIMATIONS = 0x04;
const PERF_DISABLE_THEMING = 0x08;
const PERF_DISABLE_CURSOR_SHADOW = 0x20;
/** Channel options of cliprdr as clients announce it (initialized, encrypt, compress, show protocol). */
const CLIPRDR_OPTIONS = 0xc0a00000;
const CHANNEL_FLAG_SHOW_PROTOCOL = 0x10;
/** Largest clipboard text taken from the desktop (bytes of UTF-16). */
const MAX_CLIPBOARD = 1 << 20;

// Share data PDU types the client sends.
const PDUTYPE2_CONTROL = 0x14;
const PDUTYPE2_SYNCHRONIZE = 0x1f;
const PDUTYPE2_FONTLIST = 0x27;
const CTRLACTION_REQUEST_CONTROL = 1;
const CTRLACTION_COOPERATE = 4;

// Input events.
const INPUT_EVENT_SYNC = 0x0000;
const INPUT_EVENT_SCANCODE = 0x0004;
const INPUT_EVENT_MOUSE = 0x8001;
const INPUT_EVENT_MOUSEX = 0x8002;
const KBDFLAGS_EXTENDED = 0x0100;
const KBDFLAGS_RELEASE = 0x8000;
const PTR_FLAGS_MOVE = 0x0800;
const PTR_FLAGS_DOWN = 0x8000;
const PTR_FLAGS_WHEEL = 0x0200;
const PTR_FLAGS_HWHEEL = 0x0400;
const PTR_FLAGS_WHEEL_NEGATIVE = 0x0100;
const PTRXFLAGS_DOWN = 0x8000;
/** Browser MouseEvent.buttons bits -> RDP pointer flags (left, right, middle) and extended buttons (back, forward). */
const BUTTONS: [number, number, boolean][] = [[1, 0x1000, false], [2, 0x2000, false], [4, 0x4000, false], [8, 0x0001, true], [16, 0x0002, true]];

export interface BrowserHelloOptions {
  width: number;
  height: number;
  /** Windows keyboard layout id (keyboard.ts keyboardLayoutOf). */
  keyboardLayout: number;
  /** Virtual channels to ask for (the clipboard only, where the role has it). */
  channels: string[];
}

/** What a native client would have sent before its credentials: the browser client's hello. */
export function browserHello(o: BrowserHelloOptions): { requestedProtocols: number; mcsHead: Buffer; blocks: Block[]; channels: ChannelDef[]; info: ClientInfo; cookie: null } {
  const core = Buffer.alloc(212);
  core.writeUInt32LE(0x00080004, 0); // RDP 5.0+
  core.writeUInt16LE(o.width, 4);
  core.writeUInt16LE(o.height, 6);
  core.writeUInt16LE(0xca01, 8); // colorDepth: see highColorDepth
  core.writeUInt16LE(0xaa03, 10); // SASSequence
  core.writeUInt32LE(o.keyboardLayout >>> 0, 12);
  core.writeUInt32LE(2600, 16); // clientBuild
  core.write('tollgate-web', 20, 'utf16le');
  core.writeUInt32LE(4, 52); // keyboardType: IBM enhanced (101/102 keys)
  core.writeUInt32LE(0, 56);
  core.writeUInt32LE(12, 60); // function keys
  core.writeUInt16LE(0xca01, 128); // postBeta2ColorDepth
  core.writeUInt16LE(1, 130); // clientProductId
  core.writeUInt16LE(24, 136); // highColorDepth
  core.writeUInt16LE(0x0001 | 0x0002 | 0x0004 | 0x0008, 138); // supportedColorDepths: 24, 16, 15, 32
  core.writeUInt16LE(0x0001 | 0x0002, 140); // earlyCapabilityFlags: error info PDU, want a 32 bpp session
  core[206] = 6; // connectionType: LAN
  const domain = (v: number[]) => berTlv(0x30, Buffer.concat(v.map(berInt)));
  const mcsHead = Buffer.concat([
    berTlv(0x04, Buffer.from([1])), berTlv(0x04, Buffer.from([1])), berTlv(0x01, Buffer.from([0xff])),
    domain([34, 2, 0, 1, 0, 1, 0xffff, 2]), domain([1, 1, 1, 1, 0, 1, 0x420, 2]), domain([0xffff, 0xfc17, 0xffff, 1, 0, 1, 0xffff, 2]),
  ]);
  const tz = Buffer.alloc(172); // UTC
  const addr = Buffer.from('0.0.0.0\0', 'utf16le');
  const dir = Buffer.from('C:\\Windows\\System32\\mstscax.dll\0', 'utf16le');
  const extra = Buffer.alloc(4 + addr.length + 2 + dir.length + tz.length + 4 + 4 + 2);
  let p = 0;
  extra.writeUInt16LE(2, p); p += 2; // AF_INET
  extra.writeUInt16LE(addr.length, p); p += 2;
  addr.copy(extra, p); p += addr.length;
  extra.writeUInt16LE(dir.length, p); p += 2;
  dir.copy(extra, p); p += dir.length;
  tz.copy(extra, p); p += tz.length;
  p += 4; // clientSessionId
  extra.writeUInt32LE(PERF_DISABLE_WALLPAPER | PERF_DISABLE_FULLWINDOWDRAG | PERF_DISABLE_MENUANIMATIONS | PERF_DISABLE_THEMING | PERF_DISABLE_CURSOR_SHADOW, p);
  return {
    requestedProtocols: PROTOCOL_SSL | PROTOCOL_HYBRID,
    mcsHead,
    blocks: [{ type: CS_CORE, data: core }, { type: CS_SECURITY, data: Buffer.alloc(8) }],
    channels: o.channels.map((name) => ({ name, options: CLIPRDR_OPTIONS })),
    info: {
      codePage: 0, flags: INFO_MOUSE | INFO_DISABLECTRLALTDEL | INFO_UNICODE | INFO_MAXIMIZESHELL | INFO_ENABLEWINDOWSKEY,
      domain: '', userName: '', password: new Secret(''), alternateShell: '', workingDir: '', extra,
    },
    cookie: null,
  };
}

/** The client's capability sets, for a desktop of this size and colour depth. */
export function clientCapabilities(width: number, height: number, bpp: number, keyboardLayout: number): CapabilitySet[] {
  const set = (type: number, len: number, fill: (b: Buffer) => void): CapabilitySet => { const b = Buffer.alloc(len); fill(b); return { type, data: b }; };
  return [
    set(0x01, 20, (b) => { // general
      b.writeUInt16LE(6, 0); b.writeUInt16LE(7, 2); b.writeUInt16LE(0x0200, 4);
      b.writeUInt16LE(0x0001 | 0x0004 | 0x0400, 10); // fast-path output, long credentials, no bitmap compression header
      b[18] = 1; b[19] = 1; // refresh rect, suppress output
    }),
    set(0x02, 24, (b) => { // bitmap
      b.writeUInt16LE(bpp, 0); b.writeUInt16LE(1, 2); b.writeUInt16LE(1, 4); b.writeUInt16LE(1, 6);
      b.writeUInt16LE(width, 8); b.writeUInt16LE(height, 10); b.writeUInt16LE(1, 14); b.writeUInt16LE(1, 16);
      b[19] = 0x08; // DRAW_ALLOW_SKIP_ALPHA (no colour loss, no subsampling: the recorder draws every bitmap)
      b.writeUInt16LE(1, 20);
    }),
    set(0x03, 84, (b) => { // order: none supported, so the target sends bitmaps
      b.writeUInt16LE(1, 20); b.writeUInt16LE(20, 22); b.writeUInt16LE(1, 26); b.writeUInt16LE(0x2a, 30);
    }),
    set(0x08, 6, (b) => { b.writeUInt16LE(1, 0); b.writeUInt16LE(20, 2); b.writeUInt16LE(21, 4); }), // pointer
    set(0x0d, 84, (b) => { // input
      b.writeUInt16LE(0x0001 | 0x0004 | 0x0010, 0); // scancodes, extended mouse buttons, unicode
      b.writeUInt32LE(keyboardLayout >>> 0, 4); b.writeUInt32LE(4, 8); b.writeUInt32LE(12, 16);
    }),
    set(0x0f, 4, () => {}), // brush
    set(0x10, 48, () => {}), // glyph cache: none
    set(0x11, 8, () => {}), // offscreen cache: none
    set(0x14, 8, (b) => { b.writeUInt32LE(1600, 4); }), // virtual channels
    set(0x0c, 4, () => {}), // sound
    set(0x05, 8, (b) => { b.writeUInt16LE(2, 4); b.writeUInt16LE(2, 6); }), // control
    set(0x07, 8, () => {}), // activation
    set(0x09, 4, () => {}), // share
    set(0x0e, 4, (b) => { b.writeUInt16LE(1, 0); }), // font
    set(0x1a, 4, (b) => { b.writeUInt32LE(4 << 20, 0); }), // multifragment update
  ];
}

export interface GatewayClientEvents {
  /** The desktop's size and colour depth (from the target's Demand Active). */
  desktop(width: number, height: number, bpp: number): void;
  /** Text the desktop copied (only called where the role lets it reach the person). */
  clipboard(text: string): void;
  /** Something the person should read (a refusal in the connection sequence, a server error code). */
  problem(message: string): void;
  /** The relay ended this side (the session is over). */
  closed(): void;
}

export interface GatewayClientOptions {
  /** Client-side MCS numbering (the relay maps it to the target's). */
  userId: number;
  ioChannel: number;
  /** Client-side id of the cliprdr channel, if asked for. */
  clipChannel: number | null;
  keyboardLayout: number;
  toServer: boolean;
  toClient: boolean;
}

export class GatewayRdpClient {
  readonly socket: Duplex;
  private frames = new FrameSplitter();
  private shareId = 0;
  private active = false;
  private width = 0;
  private height = 0;
  private buttons = 0;
  private clipIn = new ChannelAssembler(MAX_CLIPBOARD);
  private serverClipFlags = 0;
  private clipReady = false;
  private localText: string | null = null;
  private out: Buffer[] = [];
  private flushing = false;
  private ended = false;
  private licenseAsked = false;

  constructor(private o: GatewayClientOptions, private ev: GatewayClientEvents) {
    this.socket = new Duplex({
      read: () => { /* input is pushed as the browser sends it */ },
      write: (chunk: Buffer, _enc, cb) => {
        try { this.fromServer(chunk); cb(); } catch (e) { cb(e as Error); }
      },
      final: (cb) => { this.end(); cb(); },
      destroy: (err, cb) => { this.end(); cb(err); },
    });
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.ev.closed();
  }

  /** Hang up (the browser left): the relay sees the client close. */
  close(): void {
    this.socket.destroy();
  }

  get ready(): boolean { return this.active; }

  // ---- server to client ----

  private fromServer(chunk: Buffer): void {
    for (const f of this.frames.push(chunk)) this.frame(f);
  }

  private frame(f: Frame): void {
    if (f.kind !== 'tpkt') return; // fast-path output: screen updates, which the recorder already has
    const mcs = parseData(f.payload);
    if (!mcs) return;
    const m = parseDomainPdu(mcs);
    if (m.type !== 'sendData') return;
    if (m.channelId === this.o.ioChannel) this.io(m.data);
    else if (m.channelId === this.o.clipChannel) this.clipChunk(m.data);
  }

  private io(data: Buffer): void {
    if (!this.active && isLicensing(data)) {
      const body = parseSecurityHeader(data).body;
      const lic = parseLicensePreamble(body);
      if (lic.msgType === LICENSE_REQUEST && !this.licenseAsked) {
        // xrdp asks first and answers "valid client" to the New License Request.
        this.licenseAsked = true;
        this.sendIo(newLicenseRequest(body.subarray(4), lic.flags, 'tollgate', 'tollgate-web'));
        return;
      }
      const code = lic.msgType === LICENSE_ERROR_ALERT && data.length >= 12 ? data.readUInt32LE(8) : -1;
      if (lic.msgType !== LICENSE_ERROR_ALERT || code !== STATUS_VALID_CLIENT) {
        this.ev.problem('the desktop asks for an RDP client license (Terminal Services licensing), which the browser client does not do; connect with a native client');
        this.close();
      }
      return;
    }
    const sc = parseShareControl(data);
    if (sc.pduType === PDUTYPE_DEMANDACTIVE) this.demandActive(sc.body);
    else if (sc.pduType === PDUTYPE_DEACTIVATEALL) this.active = false;
    else if (sc.pduType === PDUTYPE_DATA) {
      const sd = parseShareData(sc.body);
      if (sd.pduType2 === PDUTYPE2_SET_ERROR_INFO && sd.body.length >= 4) {
        const code = sd.body.readUInt32LE(0);
        if (code) this.ev.problem(`the desktop reports error 0x${code.toString(16).padStart(8, '0')} (MS-RDPBCGR Set Error Info)`);
      }
    }
  }

  private demandActive(body: Buffer): void {
    const da = parseDemandActive(body);
    this.shareId = da.shareId;
    const size = bitmapDesktop(da.sets);
    const bpp = bitmapBpp(da.sets) ?? 32;
    if (!size || size.width < 1 || size.height < 1) throw new RdpProtocolError('the Demand Active PDU has no desktop size');
    this.width = size.width;
    this.height = size.height;
    const ca = encodeConfirmActive({
      shareId: da.shareId, originatorId: SERVER_CHANNEL, sourceDescriptor: Buffer.from('MSTSC\0', 'latin1'),
      sets: clientCapabilities(size.width, size.height, bpp, this.o.keyboardLayout),
    });
    this.sendIo(encodeShareControl(PDUTYPE_CONFIRMACTIVE, this.o.userId, ca));
    const u16 = (...v: number[]) => { const b = Buffer.alloc(v.length * 2); v.forEach((x, i) => b.writeUInt16LE(x, i * 2)); return b; };
    this.sendData(PDUTYPE2_SYNCHRONIZE, u16(1, SERVER_CHANNEL));
    this.sendData(PDUTYPE2_CONTROL, Buffer.concat([u16(CTRLACTION_COOPERATE, 0), Buffer.alloc(4)]));
    this.sendData(PDUTYPE2_CONTROL, Buffer.concat([u16(CTRLACTION_REQUEST_CONTROL, 0), Buffer.alloc(4)]));
    this.sendData(PDUTYPE2_FONTLIST, u16(0, 0, 3, 0x32));
    this.active = true;
    this.ev.desktop(size.width, size.height, bpp);
  }

  // ---- client to server ----

  private queue(frame: Buffer): void {
    if (this.ended) return;
    this.out.push(frame);
    if (this.flushing) return;
    this.flushing = true;
    // Not from inside the relay's write to this client: its 'data' handler runs on its own turn.
    queueMicrotask(() => {
      this.flushing = false;
      const all = Buffer.concat(this.out);
      this.out = [];
      if (!this.ended && all.length) this.socket.push(all);
    });
  }

  private mcs(channelId: number, data: Buffer): Buffer {
    return encodeTpkt(encodeData(encodeDomainPdu({ type: 'sendData', indication: false, initiator: this.o.userId, channelId, flags: 0x70, data })));
  }

  private sendIo(shareControl: Buffer): void {
    this.queue(this.mcs(this.o.ioChannel, shareControl));
  }

  private sendData(pduType2: number, body: Buffer): void {
    this.sendIo(encodeShareControl(PDUTYPE_DATA, this.o.userId, encodeShareData(this.shareId, pduType2, body)));
  }

  private input(events: Buffer[]): void {
    if (!this.active || !events.length) return;
    const h = Buffer.alloc(4);
    h.writeUInt16LE(events.length, 0);
    this.sendData(PDUTYPE2_INPUT, Buffer.concat([h, ...events]));
  }

  private event(type: number, a: number, b: number, c: number): Buffer {
    const e = Buffer.alloc(12);
    e.writeUInt16LE(type, 4);
    e.writeUInt16LE(a & 0xffff, 6);
    e.writeUInt16LE(b & 0xffff, 8);
    e.writeUInt16LE(c & 0xffff, 10);
    return e;
  }

  /** A key by its KeyboardEvent.code; false when RDP has no scancode for it. */
  key(code: string, down: boolean): boolean {
    const k = scancodeOf(code);
    if (!k) return false;
    this.input([this.event(INPUT_EVENT_SCANCODE, (k.extended ? KBDFLAGS_EXTENDED : 0) | (down ? 0 : KBDFLAGS_RELEASE), k.code, 0)]);
    return true;
  }

  /** Lock keys as the browser has them (on focus). */
  sync(locks: { scroll: boolean; num: boolean; caps: boolean }): void {
    const e = Buffer.alloc(12);
    e.writeUInt16LE(INPUT_EVENT_SYNC, 4);
    e.writeUInt32LE((locks.scroll ? 1 : 0) | (locks.num ? 2 : 0) | (locks.caps ? 4 : 0), 8);
    this.input([e]);
  }

  private clamp(x: number, y: number): [number, number] {
    return [Math.max(0, Math.min(this.width - 1, Math.round(x))), Math.max(0, Math.min(this.height - 1, Math.round(y)))];
  }

  /** The pointer at x,y with these MouseEvent.buttons held: a move, then a press or release per changed button. */
  pointer(x: number, y: number, buttons: number): void {
    const [px, py] = this.clamp(x, y);
    const events = [this.event(INPUT_EVENT_MOUSE, PTR_FLAGS_MOVE, px, py)];
    const changed = (buttons ^ this.buttons) & 31;
    for (const [bit, flag, extended] of BUTTONS) {
      if (!(changed & bit)) continue;
      const down = (buttons & bit) !== 0;
      events.push(extended ? this.event(INPUT_EVENT_MOUSEX, flag | (down ? PTRXFLAGS_DOWN : 0), px, py) : this.event(INPUT_EVENT_MOUSE, flag | (down ? PTR_FLAGS_DOWN : 0), px, py));
    }
    this.buttons = buttons & 31;
    this.input(events);
  }

  /** A wheel turn at x,y; dy > 0 scrolls down (browser convention), dx > 0 right. One notch is 120. */
  wheel(x: number, y: number, dx: number, dy: number): void {
    const [px, py] = this.clamp(x, y);
    const events: Buffer[] = [];
    const rot = (v: number, flag: number) => {
      const units = Math.max(-255, Math.min(255, Math.round(v)));
      if (!units) return;
      events.push(this.event(INPUT_EVENT_MOUSE, flag | (units < 0 ? PTR_FLAGS_WHEEL_NEGATIVE | ((256 + units) & 0xff) : units), px, py));
    };
    rot(-dy, PTR_FLAGS_WHEEL);
    rot(dx, PTR_FLAGS_HWHEEL);
    this.input(events);
  }

  // ---- clipboard ----

  private sendClip(msg: Buffer): void {
    if (this.o.clipChannel === null) return;
    for (const c of channelChunks(msg, CHANNEL_FLAG_SHOW_PROTOCOL)) this.queue(this.mcs(this.o.clipChannel, c));
  }

  private get longNames(): boolean { return (this.serverClipFlags & CB_USE_LONG_FORMAT_NAMES) !== 0; }

  private announce(): void {
    const formats = this.localText !== null && this.o.toServer ? [{ id: CF_UNICODETEXT, name: '' }] : [];
    this.sendClip(encodeClipMessage(CB_FORMAT_LIST, 0, encodeFormatList(formats, this.longNames)));
  }

  /** Text from the person's clipboard for the desktop (offered there as CF_UNICODETEXT). */
  clipboardText(text: string): boolean {
    if (!this.o.toServer || this.o.clipChannel === null) return false;
    this.localText = text;
    if (this.clipReady) this.announce();
    return true;
  }

  private clipChunk(data: Buffer): void {
    const msg = this.clipIn.push(parseChannelChunk(data));
    if (!msg) return;
    if (msg.head.length < msg.length) return; // larger than the clipboard takes: ignored
    const m = parseClipMessage(msg.head);
    switch (m.type) {
      case CB_CLIP_CAPS:
        this.serverClipFlags = parseCapsFlags(m.data);
        return;
      case CB_MONITOR_READY:
        this.sendClip(encodeClipMessage(CB_CLIP_CAPS, 0, encodeCaps(CB_USE_LONG_FORMAT_NAMES)));
        this.clipReady = true;
        this.announce();
        return;
      case CB_FORMAT_LIST: {
        this.sendClip(encodeClipMessage(CB_FORMAT_LIST_RESPONSE, CB_RESPONSE_OK));
        let formats: { id: number }[] = [];
        try { formats = parseFormatList(m.data, m.flags, this.longNames); } catch { /* nothing we can paste */ }
        if (this.o.toClient && formats.some((f) => f.id === CF_UNICODETEXT)) {
          const req = Buffer.alloc(4);
          req.writeUInt32LE(CF_UNICODETEXT, 0);
          this.sendClip(encodeClipMessage(CB_FORMAT_DATA_REQUEST, 0, req));
        }
        return;
      }
      case CB_FORMAT_DATA_REQUEST: {
        const fmt = m.data.length >= 4 ? m.data.readUInt32LE(0) : -1;
        const ok = fmt === CF_UNICODETEXT && this.localText !== null && this.o.toServer;
        this.sendClip(ok ? encodeClipMessage(CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_OK, encodeUnicodeText(this.localText!)) : encodeClipMessage(CB_FORMAT_DATA_RESPONSE, CB_RESPONSE_FAIL));
        return;
      }
      case CB_FORMAT_DATA_RESPONSE:
        if (m.flags & CB_RESPONSE_OK && this.o.toClient) this.ev.clipboard(unicodeText(m.data).replace(/\r\n/g, '\n'));
        return;
      default:
    }
  }
}
