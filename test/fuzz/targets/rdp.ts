/**
 * RDP: the client's connection sequence as the gateway's frontend parses it (TPKT, X.224
 * Connection Request, MCS Connect-Initial, GCC blocks, client core/network data, domain PDUs,
 * security header, Client Info), the target's answers as the upstream dial parses them (X.224
 * Connection Confirm, Connect-Response, server blocks, domain PDUs), the relay in both directions
 * with the real recorder (share control and data PDUs, Confirm/Demand Active and capabilities,
 * fast-path and slow-path input and output, bitmaps, virtual channels), NTLM (the gateway as
 * server and as client) and CredSSP's DER (TSRequest, TSCredentials).
 */
import { ManualClock } from '../../../policies/clock.js';
import { ResourceLimitError } from '../../../protocols/bounded.js';
import { decodeInterleaved, decodePlanar, decodeRaw } from '../../../protocols/rdp/bitmap.js';
import { CAPSTYPE_BITMAP, CAPSTYPE_ORDER, encodeCapabilitySets } from '../../../protocols/rdp/capabilities.js';
import { parseTsCredentials, parseTsRequest, readDer, tsRequestLength, encodeTsRequest, encodeTsCredentials } from '../../../protocols/rdp/credssp.js';
import { RdpProtocolError } from '../../../protocols/rdp/errors.js';
import {
  CS_CORE, CS_NET, CS_SECURITY, SC_CORE, SC_NET, encodeClientNetwork, encodeConferenceCreateRequest, encodeConferenceCreateResponse,
  encodeServerCore, encodeServerNetwork, parseConferenceCreateRequest, parseConferenceCreateResponse, patchClientCore, readClientCore,
  readClientNetwork, readServerNetwork,
} from '../../../protocols/rdp/gcc.js';
import { encodeClientInfo, INFO_UNICODE, parseClientInfo, rewriteClientInfo } from '../../../protocols/rdp/info.js';
import { encodeConnectInitial, encodeConnectResponse, encodeDomainPdu, parseConnectInitial, parseConnectResponse, parseDomainPdu } from '../../../protocols/rdp/mcs.js';
import { NtlmSecurityError, ntHash } from '../../../protocols/rdp/nlmp.js';
import { NtlmClient, NtlmServer, parseAuthenticate, parseAvPairs, parseChallenge, parseNegotiate } from '../../../protocols/rdp/ntlm.js';
import { encodeConfirmActive, encodeShareControl, PDUTYPE_CONFIRMACTIVE, PDUTYPE_DATA, PDUTYPE_DEMANDACTIVE } from '../../../protocols/rdp/pdu.js';
import { RdpRecorder } from '../../../protocols/rdp/record.js';
import { RdpRelay } from '../../../protocols/rdp/relay.js';
import { encodeSecurityHeader, parseLicensePreamble, parseSecurityHeader, SEC_INFO_PKT } from '../../../protocols/rdp/security.js';
import { encodeFastPath, encodeTpkt, FrameSplitter } from '../../../protocols/rdp/tpkt.js';
import { encodeConnectionConfirm, encodeConnectionRequest, encodeData, parseConnectionConfirm, parseConnectionRequest, parseData, PROTOCOL_SSL } from '../../../protocols/rdp/x224.js';
import { Secret } from '../../../auth/secret.js';
import { chunks, encodeRecords, inputSeed, invariant, records, type FuzzTarget } from '../engine.js';
import { FakeDuplex, fakeSession } from './fakes.js';

const expected = (e: unknown) => e instanceof RdpProtocolError || e instanceof ResourceLimitError || e instanceof NtlmSecurityError;

/** Run a parser; its own protocol errors are fine (and end that branch). */
function tryParse<T>(fn: () => T): T | undefined {
  try { return fn(); } catch (e) { if (expected(e)) return undefined; throw e; }
}

function frames(input: Buffer) {
  const s = new FrameSplitter();
  const out: ReturnType<FrameSplitter['push']> = [];
  for (const c of chunks(input)) {
    const got = tryParse(() => s.push(c));
    if (!got) break;
    out.push(...got);
    invariant(s.buffered <= input.length, 'the splitter holds more than arrived');
  }
  return out;
}

/** The frontend's order: Connection Request, Connect-Initial, then domain PDUs (erect, attach, joins, Client Info). */
function clientConnect(input: Buffer): void {
  let n = 0;
  for (const f of frames(input)) {
    if (f.kind !== 'tpkt') continue;
    if (n++ === 0) { tryParse(() => parseConnectionRequest(f.payload)); continue; }
    const data = tryParse(() => parseData(f.payload));
    if (!data) continue;
    if (n === 2) {
      const ci = tryParse(() => parseConnectInitial(data));
      const blocks = ci && tryParse(() => parseConferenceCreateRequest(ci.userData));
      for (const b of blocks ?? []) {
        if (b.type === CS_CORE && tryParse(() => readClientCore(b.data))) tryParse(() => readClientCore(patchClientCore(b.data, PROTOCOL_SSL)));
        if (b.type === CS_NET) tryParse(() => readClientNetwork(b.data));
      }
      continue;
    }
    const m = tryParse(() => parseDomainPdu(data));
    if (m?.type !== 'sendData') continue;
    const sec = tryParse(() => parseSecurityHeader(m.data));
    if (sec && sec.flags & SEC_INFO_PKT) {
      const info = tryParse(() => parseClientInfo(sec.body));
      if (info) parseClientInfo(encodeClientInfo(rewriteClientInfo(info, { username: 'tg-fuzz', password: new Secret('minted') })));
    }
  }
}

/** The upstream dial's order: Connection Confirm, Connect-Response, domain PDUs, licensing. */
function serverConnect(input: Buffer): void {
  let n = 0;
  for (const f of frames(input)) {
    if (f.kind !== 'tpkt') continue;
    if (n++ === 0) { tryParse(() => parseConnectionConfirm(f.payload)); continue; }
    const data = tryParse(() => parseData(f.payload));
    if (!data) continue;
    if (n === 2) {
      const r = tryParse(() => parseConnectResponse(data));
      for (const b of (r && tryParse(() => parseConferenceCreateResponse(r.userData))) ?? []) {
        if (b.type === SC_NET) tryParse(() => readServerNetwork(b.data));
      }
      continue;
    }
    const m = tryParse(() => parseDomainPdu(data));
    if (m?.type === 'sendData') {
      const sec = tryParse(() => parseSecurityHeader(m.data));
      if (sec) tryParse(() => parseLicensePreamble(sec.body));
    }
  }
}

const IO = 1003;
const USER = 1007;

/** The relay with the real recorder: records tagged even come from the client, odd from the target. */
async function relay(input: Buffer): Promise<void> {
  const session = fakeSession();
  const client = new FakeDuplex();
  const upstream = new FakeDuplex();
  let ended: { code: string; message: string } | null = null;
  // A clock per input: a manual clock keeps its timers (the key-flush timer) until advanced.
  const recorder = new RdpRecorder(session.recording, new ManualClock(0), { warn() {} });
  const r = new RdpRelay({
    client: client as never, upstream: upstream as never, recorder, upstreamFrames: [], upstreamRest: Buffer.alloc(0), clientRest: Buffer.alloc(0),
    clipboard: { toServer: true, toClient: true, files: true },
    map: {
      up: new Map<number, number | null>([[IO, IO], [1004, 1004], [1005, 1005], [1006, null], [USER, USER]]),
      down: new Map([[IO, IO], [1004, 1004], [1005, 1005]]),
      names: new Map([[IO, 'io'], [1004, 'cliprdr'], [1005, 'rdpdr'], [1006, 'rdpsnd']]),
      clientIo: IO, clientUser: USER, upstreamUser: (inputSeed(input) & 1) ? USER : 1008,
    },
    onBytes() {}, onEnd(code, message) { ended ??= { code, message }; }, onConfirmActive() {},
  });
  r.start();
  const idle = async () => {
    for (let i = 0; i < 200; i++) {
      const inner = r as unknown as { fromC: { length: number }; fromU: { length: number } };
      if (ended || (!inner.fromC.length && !inner.fromU.length && !recorder.hasWork)) return;
      await new Promise<void>((res) => setImmediate(res));
    }
  };
  for (const rec of records(input)) {
    for (const c of chunks(rec.data)) (rec.tag % 2 === 0 ? client : upstream).emit('data', c);
    await idle();
    if (ended) break;
  }
  const e = ended as { code: string; message: string } | null;
  invariant(!e || !/gateway error/.test(e.message), `the relay hit an internal error: ${e?.message}`);
  r.close();
  recorder.close();
}

const ntlmNow = () => 1_700_000_000_000;
const identity = { computer: 'TOLLGATE', domain: 'TOLLGATE', dnsComputer: 'tollgate.local', dnsDomain: 'tollgate.local' };

/** Input: NEGOTIATE and AUTHENTICATE from a client (records 0, 1) and a CHALLENGE from a server (record 2). */
function ntlm(input: Buffer): void {
  const rs = records(input);
  const neg = rs[0]?.data ?? Buffer.alloc(0);
  const auth = rs[1]?.data ?? Buffer.alloc(0);
  const chal = rs[2]?.data ?? Buffer.alloc(0);
  tryParse(() => parseNegotiate(neg));
  tryParse(() => parseChallenge(chal));
  tryParse(() => parseAuthenticate(auth));
  const server = new NtlmServer(identity, { now: ntlmNow, random: (n) => Buffer.alloc(n, 1) });
  if (tryParse(() => server.challenge(neg))) {
    tryParse(() => NtlmServer.claimed(auth));
    tryParse(() => server.verify(auth, [{ id: 'a', ntHash: ntHash('fuzz-secret') }]));
  }
  const client = new NtlmClient({ user: 'desk', domain: '', ntHash: ntHash('x') }, { now: ntlmNow, random: (n) => Buffer.alloc(n, 2) });
  tryParse(() => client.authenticate(chal));
  const ti = tryParse(() => parseChallenge(chal));
  if (ti) tryParse(() => parseAvPairs(ti.targetInfo));
}

/** CredSSP as the reader sees a stream: whole TSRequests by their DER length, each parsed; TSCredentials; raw DER. */
function credssp(input: Buffer): void {
  let buf = Buffer.alloc(0);
  for (const c of chunks(input)) {
    buf = Buffer.concat([buf, c]);
    for (;;) {
      const n = tryParse(() => tsRequestLength(buf));
      if (n === undefined) return;
      if (!n || buf.length < n) break;
      const msg = buf.subarray(0, n);
      buf = buf.subarray(n);
      const r = tryParse(() => parseTsRequest(Buffer.from(msg)));
      if (r?.authInfo) tryParse(() => parseTsCredentials(r.authInfo!));
    }
  }
  tryParse(() => parseTsCredentials(input));
  let off = 0;
  for (let i = 0; i < 64 && off < input.length; i++) {
    const d = tryParse(() => readDer(input, off));
    if (!d) break;
    invariant(d.end > off && d.end <= input.length, `readDer end ${d.end} outside (${off}, ${input.length}]`);
    off = d.end;
  }
}

/** Header: width (1..64), height (1..64), bpp, codec; the rest is the bitmap data. */
function bitmap(input: Buffer): void {
  if (input.length < 4) return;
  const w = 1 + (input[0]! & 63);
  const h = 1 + (input[1]! & 63);
  const bpp = [8, 15, 16, 24, 32][input[2]! % 5]!;
  const data = input.subarray(4);
  const codec = input[3]! % 3;
  const out = tryParse(() => codec === 0 ? decodeInterleaved(data, w, h, bpp) : codec === 1 ? decodePlanar(data, w, h) : decodeRaw(data, w, h, bpp));
  if (out) invariant(out.length === w * h * 4, `decoded ${out.length} bytes for ${w}x${h}`);
}

// ---- seeds built with the module's own encoders ----

function clientCore(width = 64, height = 48): Buffer {
  const core = Buffer.alloc(212);
  core.writeUInt32LE(0x00080004, 0);
  core.writeUInt16LE(width, 4);
  core.writeUInt16LE(height, 6);
  core.writeUInt16LE(0xca01, 8);
  core.writeUInt16LE(16, 136);
  return core;
}
const HEAD = Buffer.from('0401010401010101ff30190201220201020201000201010201000201010202ffff020102301902010102010102010102010102010002010102020420020102301c0202ffff0202fc170202ffff0201010201000201010202ffff020102', 'hex');
const mcs = (m: Parameters<typeof encodeDomainPdu>[0]) => encodeTpkt(encodeData(encodeDomainPdu(m)));
const send = (channelId: number, data: Buffer, indication = false) => mcs({ type: 'sendData', indication, initiator: USER, channelId, flags: 0x70, data });

function clientSequence(user = 'desk:admin', password = 's3cret'): Buffer {
  const info = encodeClientInfo({ codePage: 0, flags: INFO_UNICODE, domain: '', userName: user, password: new Secret(password), alternateShell: '', workingDir: '', extra: Buffer.from([2, 0, 20, 0]) });
  return Buffer.concat([
    encodeTpkt(encodeConnectionRequest({ cookie: user, requestedProtocols: PROTOCOL_SSL })),
    encodeTpkt(encodeData(encodeConnectInitial({ head: HEAD, userData: encodeConferenceCreateRequest([
      { type: CS_CORE, data: clientCore() }, { type: CS_SECURITY, data: Buffer.alloc(8) },
      { type: CS_NET, data: encodeClientNetwork([{ name: 'cliprdr', options: 0xc0a00000 }, { name: 'rdpdr', options: 0x80800000 }]) },
    ]) }))),
    mcs({ type: 'erectDomainRequest' }), mcs({ type: 'attachUserRequest' }),
    mcs({ type: 'channelJoinRequest', initiator: USER, channelId: USER }), mcs({ type: 'channelJoinRequest', initiator: USER, channelId: IO }),
    send(IO, encodeSecurityHeader(SEC_INFO_PKT, info)),
  ]);
}

function serverSequence(): Buffer {
  return Buffer.concat([
    encodeTpkt(encodeConnectionConfirm({ selectedProtocol: PROTOCOL_SSL })),
    encodeTpkt(encodeData(encodeConnectResponse(encodeConferenceCreateResponse([
      { type: SC_CORE, data: encodeServerCore(PROTOCOL_SSL) }, { type: SC_NET, data: encodeServerNetwork({ ioChannel: IO, channelIds: [1004, 1005] }) },
    ])))),
    mcs({ type: 'attachUserConfirm', result: 0, initiator: USER }),
    mcs({ type: 'channelJoinConfirm', result: 0, initiator: USER, requested: IO, channelId: IO }),
    send(IO, Buffer.from('80001000ff02100007000000020000002814000000', 'hex'), true),
  ]);
}

function bitmapCaps(w: number, h: number): Buffer {
  const bitmap = Buffer.alloc(24); bitmap.writeUInt16LE(16, 0); bitmap.writeUInt16LE(w, 8); bitmap.writeUInt16LE(h, 10);
  const order = Buffer.alloc(84); order.fill(1, 32, 64);
  return encodeCapabilitySets([{ type: CAPSTYPE_BITMAP, data: bitmap }, { type: CAPSTYPE_ORDER, data: order }]);
}
function demandActive(w: number, h: number): Buffer {
  const caps = bitmapCaps(w, h);
  const body = Buffer.concat([Buffer.from([0, 0x10, 0, 0, 4, 0]), (() => { const b = Buffer.alloc(2); b.writeUInt16LE(caps.length + 4); return b; })(), Buffer.from('RDP\0'), caps.subarray(0, 0), (() => { const b = Buffer.alloc(4); b.writeUInt16LE(2); return b; })(), caps.subarray(4), Buffer.alloc(4)]);
  return encodeShareControl(PDUTYPE_DEMANDACTIVE, 1002, body);
}
function bitmapUpdate(w: number, h: number, fill: number): Buffer {
  const data = Buffer.alloc(w * h * 2 + ((w * 2) % 4 ? h * 2 : 0), fill);
  const head = Buffer.alloc(4 + 18);
  head.writeUInt16LE(1, 0); head.writeUInt16LE(1, 2);
  head.writeUInt16LE(0, 4); head.writeUInt16LE(0, 6); head.writeUInt16LE(w - 1, 8); head.writeUInt16LE(h - 1, 10);
  head.writeUInt16LE(w, 12); head.writeUInt16LE(h, 14); head.writeUInt16LE(16, 16); head.writeUInt16LE(0, 18); head.writeUInt16LE(data.length, 20);
  return Buffer.concat([head, data]);
}
function shareData(pduType2: number, body: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32LE(0x10000, 0); h[5] = 1; h.writeUInt16LE(body.length + 18, 6); h[8] = pduType2;
  return encodeShareControl(PDUTYPE_DATA, 1002, Buffer.concat([h, body]));
}
function channelChunk(data: Buffer): Buffer {
  const h = Buffer.alloc(8); h.writeUInt32LE(data.length, 0); h.writeUInt32LE(3, 4);
  return Buffer.concat([h, data]);
}

function relaySeed(): Buffer {
  const confirm = encodeShareControl(PDUTYPE_CONFIRMACTIVE, USER, encodeConfirmActive({ shareId: 0x10000, originatorId: 1002, sourceDescriptor: Buffer.from('MSTSC\0'), sets: [{ type: CAPSTYPE_BITMAP, data: bitmapCaps(64, 48).subarray(8, 8 + 20) }] }));
  const clip = Buffer.alloc(8 + 10); clip.writeUInt16LE(5, 0); clip.writeUInt32LE(10, 4);
  return encodeRecords([
    { tag: 1, data: send(IO, demandActive(64, 48), true) },
    { tag: 0, data: send(IO, confirm) },
    { tag: 1, data: send(IO, shareData(0x02, bitmapUpdate(8, 8, 0x1f)), true) },
    { tag: 0, data: encodeFastPath(2 << 2, Buffer.from([0x00, 0x1e, 0x01, 0x1e])) },
    { tag: 0, data: send(IO, shareData(0x1c, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0x80, 0x1c, 0, 0, 0]))) },
    { tag: 1, data: encodeFastPath(0, Buffer.concat([Buffer.from([0x01]), (() => { const u = bitmapUpdate(4, 4, 7); const l = Buffer.alloc(2); l.writeUInt16LE(u.length); return Buffer.concat([l, u]); })()])) },
    { tag: 0, data: send(1004, channelChunk(clip)) },
    { tag: 1, data: send(1005, channelChunk(Buffer.from([0x72, 0x44, 0x41, 0x44, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 72, 79, 77, 69, 0, 0, 0, 0, 0, 0, 0, 0]))) },
  ]);
}

function ntlmSeed(): Buffer {
  const server = new NtlmServer(identity, { now: ntlmNow });
  const client = new NtlmClient({ user: 'desk:admin', domain: '', ntHash: ntHash('fuzz-secret') }, { now: ntlmNow });
  const challenge = server.challenge(client.negotiate);
  return encodeRecords([{ tag: 0, data: client.negotiate }, { tag: 1, data: client.authenticate(challenge).message }, { tag: 2, data: challenge }]);
}

export const targets: FuzzTarget[] = [
  {
    name: 'rdp.client-connect',
    covers: 'TPKT framing, X.224 Connection Request, MCS Connect-Initial, GCC client blocks (core, security, network), domain PDUs, security header, Client Info',
    expected, run: clientConnect,
    arbitrary: (fcl) => fcl.tuple(fcl.string({ maxLength: 30 }), fcl.string({ maxLength: 30 })).map(([u, p]) => new Uint8Array(clientSequence(u.replace(/[\r\n]/g, ''), p))),
    seeds: () => [clientSequence()],
  },
  {
    name: 'rdp.server-connect',
    covers: 'X.224 Connection Confirm, MCS Connect-Response, GCC server blocks, Attach User / Channel Join Confirms, licensing preamble',
    expected, run: serverConnect,
    arbitrary: (fcl) => fcl.tuple(fcl.nat(0xffff), fcl.array(fcl.integer({ min: 1001, max: 1050 }), { maxLength: 31 })).map(([sel, ids]) => new Uint8Array(Buffer.concat([
      encodeTpkt(encodeConnectionConfirm({ selectedProtocol: sel })),
      encodeTpkt(encodeData(encodeConnectResponse(encodeConferenceCreateResponse([{ type: SC_NET, data: encodeServerNetwork({ ioChannel: IO, channelIds: ids }) }])))),
    ]))),
    seeds: () => [serverSequence()],
  },
  {
    name: 'rdp.relay',
    covers: 'RdpRelay both ways with the recorder: share control/data, Confirm/Demand Active and capability stripping, fast-path and slow-path input and updates, bitmaps, cliprdr and rdpdr channels',
    expected, run: relay,
    arbitrary: (fcl) => fcl.array(fcl.tuple(fcl.nat(1), fcl.oneof(
      fcl.tuple(fcl.integer({ min: 1, max: 64 }), fcl.integer({ min: 1, max: 64 })).map(([w, h]) => send(IO, demandActive(w, h), true)),
      fcl.tuple(fcl.integer({ min: 1, max: 16 }), fcl.integer({ min: 1, max: 16 }), fcl.nat(255)).map(([w, h, f]) => send(IO, shareData(0x02, bitmapUpdate(w, h, f)), true)),
      fcl.uint8Array({ maxLength: 40 }).map((b) => encodeFastPath(1 << 2, Buffer.from(b))),
      fcl.uint8Array({ maxLength: 40 }).map((b) => send(1004, channelChunk(Buffer.from(b)))),
      fcl.uint8Array({ maxLength: 40 }).map((b) => send(IO, shareData(0x1c, Buffer.from(b)))),
    ))).map((rs) => new Uint8Array(encodeRecords(rs.map(([tag, data]) => ({ tag, data }))))),
    seeds: () => [relaySeed()],
  },
  {
    name: 'rdp.ntlm',
    covers: 'NTLM NEGOTIATE / CHALLENGE / AUTHENTICATE and AV pairs; the gateway as NTLM server (challenge, claimed names, NTLMv2 and MIC verification) and as client',
    expected, run: ntlm,
    arbitrary: (fcl) => fcl.tuple(fcl.string({ maxLength: 20 }), fcl.string({ maxLength: 20 })).map(([user, pw]) => {
      const server = new NtlmServer(identity, { now: ntlmNow });
      const client = new NtlmClient({ user, domain: '', ntHash: ntHash(pw) }, { now: ntlmNow });
      const ch = server.challenge(client.negotiate);
      return new Uint8Array(encodeRecords([{ tag: 0, data: client.negotiate }, { tag: 1, data: client.authenticate(ch).message }, { tag: 2, data: ch }]));
    }),
    seeds: () => [ntlmSeed()],
  },
  {
    name: 'rdp.credssp',
    covers: 'CredSSP DER: TSRequest framing by length and parsing (negoTokens, authInfo, pubKeyAuth, errorCode, clientNonce), TSCredentials, raw DER elements',
    expected, run: credssp,
    arbitrary: (fcl) => fcl.tuple(fcl.integer({ min: 1, max: 6 }), fcl.array(fcl.uint8Array({ maxLength: 60 }), { maxLength: 3 }), fcl.option(fcl.uint8Array({ maxLength: 60 })), fcl.option(fcl.nat()))
      .map(([version, toks, pub, err]) => new Uint8Array(encodeTsRequest({ version, negoTokens: toks.map((x) => Buffer.from(x)), pubKeyAuth: pub ? Buffer.from(pub) : null, errorCode: err ?? null, authInfo: null, clientNonce: null }))),
    seeds: () => [
      encodeTsRequest({ version: 6, negoTokens: [Buffer.alloc(40, 1)], authInfo: encodeTsCredentials({ domain: '', user: 'desk', password: 'pw' }), pubKeyAuth: Buffer.alloc(32, 2), errorCode: null, clientNonce: Buffer.alloc(32, 3) }),
      encodeTsCredentials({ domain: 'D', user: 'u', password: 'p' }),
    ],
  },
  {
    name: 'rdp.bitmap',
    covers: 'bitmap decoders: interleaved RLE (8/15/16/24 bpp), planar, raw',
    expected, run: bitmap,
    arbitrary: (fcl) => fcl.tuple(fcl.nat(63), fcl.nat(63), fcl.nat(4), fcl.nat(2), fcl.uint8Array({ maxLength: 300 })).map(([w, h, b, c, d]) => new Uint8Array(Buffer.concat([Buffer.from([w, h, b, c]), Buffer.from(d)]))),
    seeds: () => [
      Buffer.from([3, 1, 2, 0, 0x60 | 4, 0x00, 0xf8, 0x20 | 4]),
      Buffer.from([5, 0, 2, 0, 0x00 | 3, 0x00 | 3]),
      Buffer.from([1, 0, 3, 0, 0xf4, 2, 0, 1, 2, 3, 4, 5, 6]),
      Buffer.concat([Buffer.from([1, 1, 2, 2]), Buffer.alloc(8, 0x1f)]),
    ],
  },
];
