/**
 * PostgreSQL: the start-up phase as the gateway's listener reads it (start-up packet, SSLRequest,
 * CancelRequest, SASL / password messages and the SCRAM server), the client's frames after
 * start-up through the relay (PgRelay: rules, statement log, portals) and the server's frames
 * through the relay and the login decoders the upstream dial uses (SCRAM client, errors, keys).
 */
import { serialize } from 'pg-protocol';
import {
  FrameSplitter, ProtocolViolation, decodeBackendKey, decodeBind, decodeCommandComplete, decodeErrorFields, decodeExecute,
  decodeParse, decodePassword, decodeQuery, decodeSaslInitial, decodeTarget, encodeAuthOk, encodeBackendKey, encodeError,
  encodeParameterStatus, encodeReadyForQuery, readStartup,
} from '../../../protocols/postgres/framing.js';
import { PgRelay } from '../../../protocols/postgres/inspector.js';
import { ScramClient, ScramError, ScramServer, makeVerifier, parseVerifier, SCRAM, SCRAM_PLUS } from '../../../protocols/postgres/scram.js';
import { kindOf, splitStatements } from '../../../protocols/postgres/sql.js';
import { chunks, invariant, type FuzzTarget } from '../engine.js';
import { fakeSession, fakeSocket, withTimers } from './fakes.js';

const MAX_AUTH_MESSAGE = 64 * 1024;
const salt = Buffer.alloc(16, 7);
const verifier = parseVerifier(makeVerifier('fuzz-secret', salt, 16))!;
const cb = Buffer.alloc(32, 3);

const expected = (e: unknown) => e instanceof ProtocolViolation || e instanceof ScramError;

function msg(type: string, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h.write(type, 0, 'latin1');
  h.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([h, body]);
}
const cstr = (s: string) => Buffer.from(`${s}\0`, 'utf8');

/** The listener's view: start-up packets until a StartupMessage, then SASL/password messages. */
function startup(input: Buffer): void {
  let buf = Buffer.alloc(0);
  let authing = false;
  let server: ScramServer | null = null;
  let step = 0;
  const sp = new FrameSplitter(MAX_AUTH_MESSAGE);
  for (const c of chunks(input)) {
    if (!authing) {
      buf = Buffer.concat([buf, c]);
      for (;;) {
        const r = readStartup(buf);
        if (!r) break;
        invariant(r.used > 0 && r.used <= buf.length, `readStartup used ${r.used} of ${buf.length}`);
        buf = buf.subarray(r.used);
        if (r.packet.kind === 'cancel') return;
        if (r.packet.kind === 'startup') { authing = true; break; }
      }
      if (!authing) continue;
      const rest = buf;
      buf = Buffer.alloc(0);
      if (rest.length) authFrames(sp.push(rest));
    } else {
      authFrames(sp.push(c));
    }
    if (step >= 2) return;
  }
  function authFrames(frames: ReturnType<FrameSplitter['push']>) {
    for (const f of frames) {
      if (f.type !== 'p') throw new ProtocolViolation(`expected a password message, got '${f.type}'`);
      if (step === 0) {
        // Either a cleartext PasswordMessage or a SASLInitialResponse: both decoders see it.
        try { decodePassword(f.body); } catch (e) { if (!expected(e)) throw e; }
        const init = decodeSaslInitial(f.body);
        const plus = init.mechanism === SCRAM_PLUS;
        server = new ScramServer(salt, 16, plus || init.data[0] === 0x79 ? cb : null);
        server.clientFirst(init.data.toString('utf8'), init.mechanism);
      } else if (step === 1) {
        server!.clientFinal(f.body.toString('utf8'));
        server!.matches(verifier);
      }
      step++;
    }
  }
}

function relayOf() {
  const session = fakeSession();
  const client = fakeSocket();
  const upstream = fakeSocket();
  const relay = new PgRelay({ client: client as never, upstream: upstream as never, session, status: 'I' });
  relay.start();
  return { relay: relay as unknown as { fromClient(b: Buffer): void; fromUpstream(b: Buffer): void }, session, client, upstream };
}

/** The gateway's own error for a non-protocol exception: "gateway error: …" (a bug, never a client's doing). */
function checkEnd(s: ReturnType<typeof fakeSession>): void {
  const e = s.endedWith;
  invariant(!e || !/gateway error/.test(e.message), `the relay hit an internal error: ${e?.message}`);
  invariant(s.held >= 0, 'held bytes went negative');
}

function clientFrames(input: Buffer): void {
  const r = relayOf();
  for (const c of chunks(input)) {
    r.relay.fromClient(c);
    if (r.session.endedWith) break;
  }
  checkEnd(r.session);
  // The decoders on their own: each message type's decoder refuses only with ProtocolViolation.
  const sp = new FrameSplitter(1 << 20);
  let frames: ReturnType<FrameSplitter['push']>;
  try { frames = sp.push(input); } catch (e) { if (expected(e)) return; throw e; }
  for (const f of frames.slice(0, 64)) {
    const dec: Record<string, (b: Buffer) => unknown> = { Q: decodeQuery, P: decodeParse, B: decodeBind, E: decodeExecute, C: decodeTarget, D: decodeTarget };
    const d = dec[f.type];
    if (!d) continue;
    let v: unknown;
    try { v = d(f.body); } catch (e) { if (!expected(e)) throw e; continue; }
    if (f.type === 'Q') for (const st of splitStatements(v as string)) kindOf(st);
  }
}

function serverFrames(input: Buffer): void {
  // Login: what the upstream dial decodes before the first ReadyForQuery.
  const sp = new FrameSplitter(1 << 20);
  const scram = new ScramClient('fuzz-secret', 64);
  scram.clientFirst();
  let relayFrom = 0;
  let offset = 0;
  try {
    outer: for (const c of chunks(input)) {
      for (const f of sp.push(c)) {
        offset += f.raw.length;
        if (f.type === 'R' && f.body.length >= 4) {
          const code = f.body.readInt32BE(0);
          try {
            if (code === 11) scram.serverFirst(f.body.subarray(4).toString('utf8'));
            if (code === 12) scram.serverFinal(f.body.subarray(4).toString('utf8'));
          } catch (e) { if (!expected(e)) throw e; }
        }
        if (f.type === 'E' || f.type === 'N') decodeErrorFields(f.body);
        if (f.type === 'K') decodeBackendKey(f.body);
        if (f.type === 'C') decodeCommandComplete(f.body);
        if (f.type === 'Z') { relayFrom = offset; break outer; }
      }
    }
  } catch (e) {
    if (!expected(e)) throw e;
  }
  // The relay after login: every server message through the inspector.
  const r = relayOf();
  r.relay.fromClient(Buffer.concat([serialize.query('select 1; drop table x'), serialize.parse({ name: 's', text: 'select $1' }), serialize.bind({ statement: 's' }), serialize.execute({ rows: 2 }), serialize.sync()]));
  for (const c of chunks(input.subarray(relayFrom))) {
    r.relay.fromUpstream(c);
    if (r.session.endedWith) break;
  }
  checkEnd(r.session);
}

/** Client messages after start-up, as pg's serializer writes them. */
function clientMessage(fcl: typeof import('fast-check').default) {
  const text = fcl.string({ maxLength: 80 });
  return fcl.oneof(
    text.map((q) => serialize.query(q)),
    fcl.tuple(fcl.string({ maxLength: 8 }), text, fcl.array(fcl.nat(5000), { maxLength: 4 })).map(([name, t, types]) => serialize.parse({ name, text: t, types })),
    fcl.tuple(fcl.string({ maxLength: 8 }), fcl.array(fcl.oneof(fcl.string({ maxLength: 20 }), fcl.constant(null)), { maxLength: 4 })).map(([statement, values]) => serialize.bind({ statement, values })),
    fcl.tuple(fcl.string({ maxLength: 8 }), fcl.nat(100)).map(([portal, rows]) => serialize.execute({ portal, rows })),
    fcl.constant(serialize.sync()), fcl.constant(serialize.flush()),
    fcl.string({ maxLength: 8 }).map((name) => serialize.close({ type: 'S', name })),
    fcl.string({ maxLength: 8 }).map((name) => serialize.describe({ type: 'P', name })),
    fcl.uint8Array({ maxLength: 40 }).map((b) => serialize.copyData(Buffer.from(b))),
    fcl.constant(serialize.copyDone()), fcl.constant(serialize.end()),
    fcl.tuple(fcl.constantFrom(...'QPBEHSCDFdcfpXx'.split('')), fcl.uint8Array({ maxLength: 30 })).map(([t, b]) => msg(t, Buffer.from(b))),
  );
}

function serverMessage(fcl: typeof import('fast-check').default) {
  const str = fcl.string({ maxLength: 40 });
  return fcl.oneof(
    fcl.constant(encodeAuthOk()),
    fcl.tuple(str, str).map(([k, v]) => encodeParameterStatus(k, v)),
    fcl.tuple(fcl.nat(), fcl.nat()).map(([p, k]) => encodeBackendKey(p, k)),
    fcl.constantFrom('I', 'T', 'E').map((s) => encodeReadyForQuery(s)),
    fcl.tuple(str, fcl.string({ maxLength: 5 })).map(([m, c]) => encodeError({ severity: 'ERROR', code: c, message: m })),
    fcl.tuple(fcl.constantFrom('SELECT', 'INSERT 0', 'UPDATE', 'DELETE', 'FETCH'), fcl.nat(1000)).map(([t, n]) => msg('C', cstr(`${t} ${n}`))),
    fcl.array(fcl.uint8Array({ maxLength: 12 }), { maxLength: 4 }).map((cols) => {
      const parts = [Buffer.alloc(2)];
      parts[0]!.writeInt16BE(cols.length);
      for (const c of cols) { const l = Buffer.alloc(4); l.writeInt32BE(c.length); parts.push(l, Buffer.from(c)); }
      return msg('D', Buffer.concat(parts));
    }),
    fcl.constant(msg('1', Buffer.alloc(0))), fcl.constant(msg('2', Buffer.alloc(0))), fcl.constant(msg('s', Buffer.alloc(0))), fcl.constant(msg('I', Buffer.alloc(0))),
    str.map((s) => msg('R', Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from(`r=${s},s=QUJD,i=4096`)]))),
    fcl.tuple(fcl.constantFrom(...'RSKZECDTtn12sIGHWdcNA'.split('')), fcl.uint8Array({ maxLength: 30 })).map(([t, b]) => msg(t, Buffer.from(b))),
  );
}

function startupPacket(params: Record<string, string>): Buffer {
  return serialize.startup(params);
}

export const targets: FuzzTarget[] = [
  {
    name: 'postgres.startup',
    covers: 'start-up packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest), PasswordMessage, SASLInitialResponse/SASLResponse, the SCRAM-SHA-256(-PLUS) server',
    expected,
    run: startup,
    arbitrary: (fcl) => fcl.tuple(
      fcl.dictionary(fcl.string({ maxLength: 12 }), fcl.string({ maxLength: 24 }), { maxKeys: 5 }),
      fcl.constantFrom(SCRAM, SCRAM_PLUS, 'PLAIN'),
      fcl.string({ maxLength: 60 }),
      fcl.string({ maxLength: 90 }),
      fcl.boolean(),
    ).map(([params, mech, first, final, ssl]) => {
      const sasl = msg('p', Buffer.concat([cstr(mech), (() => { const b = Buffer.alloc(4); b.writeInt32BE(Buffer.byteLength(first)); return b; })(), Buffer.from(first)]));
      const ssl8 = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
      return new Uint8Array(Buffer.concat([ssl ? ssl8 : Buffer.alloc(0), startupPacket({ user: 'prod-db', database: 'app', ...params }), sasl, msg('p', Buffer.from(final))]));
    }),
    seeds: () => [
      Buffer.concat([startupPacket({ user: 'prod-db:read', database: 'app', application_name: 'psql' }), msg('p', Buffer.concat([cstr(SCRAM), Buffer.from([0, 0, 0, 32]), Buffer.from('n,,n=,r=rOprNGfwEbeRWgbNEkqO%hvY')])),
        msg('p', Buffer.from('c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ='))]),
      Buffer.concat([startupPacket({ user: 'prod-db', database: 'app' }), msg('p', cstr('secret-typed-in-clear'))]),
      Buffer.from([0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2]),
      Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]),
    ],
  },
  {
    name: 'postgres.client-frames',
    covers: 'frontend messages after start-up through PgRelay (Query, Parse, Bind, Execute, Close, Describe, Sync, FunctionCall, COPY) and their decoders',
    expected,
    run: (b) => withTimers(() => clientFrames(b)),
    arbitrary: (fcl) => fcl.array(clientMessage(fcl), { maxLength: 12 }).map((ms) => new Uint8Array(Buffer.concat(ms))),
  },
  {
    name: 'postgres.server-frames',
    covers: 'backend messages: the login decoders of the upstream dial (authentication requests, SCRAM client, ErrorResponse, BackendKeyData) and every message through PgRelay',
    expected,
    run: (b) => withTimers(() => serverFrames(b)),
    arbitrary: (fcl) => fcl.array(serverMessage(fcl), { maxLength: 14 }).map((ms) => new Uint8Array(Buffer.concat(ms))),
  },
];
