/**
 * MySQL / MariaDB: the gateway's server handshake (HandshakeResponse41, SSLRequest, auth switch,
 * caching_sha2 exchanges) over the real PacketConn, the upstream login decoders (greeting, OK,
 * ERR, EOF), the relay in both directions (commands and rules, response tracking for every
 * response shape, prepared statements, LOCAL INFILE) and the SQL splitter that feeds the rules.
 */
import { PacketConn, ConnClosedError } from '../../../protocols/mysql/conn.js';
import { Refusal, serverHandshake, NATIVE, SHA2, CLEAR } from '../../../protocols/mysql/handshake.js';
import { ResponseTracker, isLoadLocal, kindOf, responseShape, splitSql, type ResponseShape } from '../../../protocols/mysql/inspector.js';
import {
  CAP, COM, GATEWAY_CAPS, PacketReader, ProtocolError, buildErr, buildGreeting, buildHandshakeResponse, buildOk, buildSslRequest, frame,
  isEofLike, lenencInt, nativeVerifier, parseErr, parseEof, parseGreeting, parseHandshakeResponse, parseOk,
} from '../../../protocols/mysql/packets.js';
import { MysqlRelay } from '../../../protocols/mysql/relay.js';
import type { ProtocolContext } from '../../../protocols/types.js';
import { chunks, describe, encodeRecords, inputSeed, invariant, records, type FuzzTarget } from '../engine.js';
import { FakeDuplex, fakeSession, withTimers } from './fakes.js';

const expected = (e: unknown) => e instanceof ProtocolError || e instanceof Refusal || e instanceof ConnClosedError;

// A throw from the response tracker that is not a ProtocolError would be turned into a session end
// by the relay; record it so the target reports it instead of letting the relay hide it.
let trackerBug: string | null = null;
const feed = ResponseTracker.prototype.feed;
ResponseTracker.prototype.feed = function (this: ResponseTracker, p: Buffer) {
  try { return feed.call(this, p); } catch (e) {
    if (!(e instanceof ProtocolError)) trackerBug = describe(e);
    throw e;
  }
};

const verifier = nativeVerifier('fuzz-secret');
function ctxFor(clientAuth: string): ProtocolContext {
  return {
    config: {
      tls: undefined,
      target: () => ({ name: 'app-db', protocol: 'mysql', options: { allowPlain: true, clientAuth } }),
    },
    access: {
      pendingSecrets: async () => [{ id: 's1', verifiers: { [NATIVE]: verifier } }],
      authenticate: async () => ({ ok: false, code: 'bad_secret', reason: 'wrong connection secret' }),
    },
  } as unknown as ProtocolContext;
}

async function handshake(input: Buffer): Promise<void> {
  const sock = new FakeDuplex();
  const conn = new PacketConn(sock as never, 64 * 1024);
  const pick = [NATIVE, SHA2, CLEAR][inputSeed(input) % 3]!;
  const done = serverHandshake(ctxFor(pick), conn, '127.0.0.1');
  for (const c of chunks(input)) {
    sock.emit('data', c);
    await Promise.resolve();
    await Promise.resolve();
  }
  sock.emit('end');
  try { await done; } catch (e) { if (!expected(e)) throw e; }
  // The first packet on its own, as parseHandshakeResponse sees it.
  const r = new PacketReader(64 * 1024);
  r.push(input);
  try {
    const p = r.next();
    if (p) parseHandshakeResponse(p.payload);
  } catch (e) { if (!expected(e)) throw e; }
}

const SHAPES: ResponseShape[] = ['resultset', 'prepare', 'fetch', 'single', 'fieldlist'];

function serverPackets(input: Buffer): void {
  const r = new PacketReader(1 << 20);
  let n = 0;
  const seed = inputSeed(input);
  // Every option the tracker takes, from the input's seed.
  const dep = { deprecateEof: (seed & 1) === 1, cacheMetadata: (seed & 2) === 2, cursor: (seed & 4) === 4 };
  let tracker = new ResponseTracker(SHAPES[seed % SHAPES.length]!, dep);
  for (const c of chunks(input)) {
    r.push(c);
    for (let p = r.next(); p; p = r.next()) {
      const b = p.payload;
      if (n++ === 0) { parseGreeting(b); continue; }
      if (b[0] === 0xff) parseErr(b);
      else if (b[0] === 0x00 && b.length >= 7) parseOk(b);
      else if (isEofLike(b, false)) parseEof(b);
      if (tracker.done) tracker = new ResponseTracker(SHAPES[n % SHAPES.length]!, dep);
      try { tracker.feed(b); } catch (e) { if (!(e instanceof ProtocolError)) throw e; tracker = new ResponseTracker('single', dep); }
    }
  }
}

/** The relay after login: records tagged even are client bytes, odd are server bytes, in arrival order. */
async function relay(input: Buffer): Promise<void> {
  trackerBug = null;
  const session = fakeSession();
  const cs = new FakeDuplex();
  const us = new FakeDuplex();
  const client = new PacketConn(cs as never);
  const upstream = new PacketConn(us as never, 1 << 30);
  let commandBug: string | null = null;
  const caps = (GATEWAY_CAPS & ~((inputSeed(input) & 1) ? CAP.DEPRECATE_EOF : 0)) >>> 0;
  const relayObj = new MysqlRelay({
    session, client, upstream, clientCaps: caps, allowLoadDataLocal: (inputSeed(input) & 2) === 2,
    killGatewayConnection: async (id) => id % 2 === 0,
  });
  const inner = relayObj as unknown as { command(cmd: number, p: unknown): void };
  const command = inner.command.bind(relayObj);
  inner.command = (cmd, p) => {
    try { command(cmd, p); } catch (e) {
      if (!(e instanceof ProtocolError)) commandBug = describe(e);
      throw e;
    }
  };
  withTimers(() => relayObj.start());
  for (const rec of records(input)) {
    const sock = rec.tag % 2 === 0 ? cs : us;
    withTimers(() => { for (const c of chunks(rec.data)) sock.emit('data', c); });
    await Promise.resolve();
    if (session.endedWith) break;
  }
  withTimers(() => { cs.emit('end'); us.emit('end'); });
  await new Promise<void>((r) => process.nextTick(r));
  invariant(!commandBug, `the relay's command handler threw a non-protocol error: ${commandBug}`);
  invariant(!trackerBug, `the response tracker threw a non-protocol error: ${trackerBug}`);
  invariant(session.held >= 0, 'held bytes went negative');
}

function sql(input: Buffer): void {
  const text = input.toString('utf8');
  const stmts = splitSql(text);
  let total = 0;
  for (const s of stmts) {
    total += s.text.length;
    kindOf(s.text);
    isLoadLocal(s);
  }
  invariant(total <= text.length, `statements longer than the text (${total} > ${text.length})`);
}

const pkt = (payload: Buffer, seq: number) => frame(payload, seq).bytes;
const cmd = (c: number, body: Buffer | string = Buffer.alloc(0)) => Buffer.concat([Buffer.from([c]), Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8')]);
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n >>> 0); return b; };
const colDef = (name: string) => Buffer.concat([lenencInt(3), Buffer.from('def'), lenencInt(0), lenencInt(0), lenencInt(0), lenencInt(name.length), Buffer.from(name), lenencInt(0), Buffer.from([0x0c, 0x21, 0, 0xff, 0xff, 0, 0, 0xfd, 0, 0, 0, 0, 0])]);
const eof = () => Buffer.from([0xfe, 0, 0, 2, 0]);
const resultSet = (rows: string[][]) => [
  lenencInt(rows[0]?.length ?? 1), ...Array.from({ length: rows[0]?.length ?? 1 }, (_, i) => colDef(`c${i}`)), eof(),
  ...rows.map((r) => Buffer.concat(r.map((v) => Buffer.concat([lenencInt(Buffer.byteLength(v)), Buffer.from(v)])))), eof(),
];

function conversation(steps: { c: Buffer; s: Buffer[] }[]): Buffer {
  const recs: { tag: number; data: Buffer }[] = [];
  for (const st of steps) {
    recs.push({ tag: 0, data: pkt(st.c, 0) });
    recs.push({ tag: 1, data: Buffer.concat(st.s.map((p, i) => pkt(p, i + 1))) });
  }
  return encodeRecords(recs);
}

export const targets: FuzzTarget[] = [
  {
    name: 'mysql.handshake',
    covers: "the gateway's server handshake over PacketConn: HandshakeResponse41, SSLRequest, auth switch, caching_sha2_password and cleartext exchanges",
    expected,
    run: handshake,
    arbitrary: (fcl) => fcl.tuple(fcl.string({ maxLength: 20 }), fcl.uint8Array({ maxLength: 32 }), fcl.option(fcl.string({ maxLength: 12 })), fcl.constantFrom(NATIVE, SHA2, CLEAR, 'dialog'), fcl.nat(), fcl.boolean())
      .map(([user, auth, db, plugin, capsBits, ssl]) => {
        const caps = (GATEWAY_CAPS & (capsBits | CAP.PROTOCOL_41)) >>> 0;
        const resp = buildHandshakeResponse({ caps, maxPacket: 1 << 24, charset: 45, user, authResponse: Buffer.from(auth), database: db, authPlugin: plugin });
        return new Uint8Array(Buffer.concat([ssl ? pkt(buildSslRequest(caps | CAP.SSL, 1 << 24, 45), 1) : Buffer.alloc(0), pkt(resp, ssl ? 2 : 1), pkt(Buffer.from(auth), 3), pkt(Buffer.from([2]), 5)]));
      }),
    seeds: () => [
      pkt(buildHandshakeResponse({ caps: GATEWAY_CAPS & ~CAP.SSL, maxPacket: 1 << 24, charset: 45, user: 'app-db:read', authResponse: Buffer.alloc(20, 1), database: 'app', authPlugin: NATIVE }), 1),
      Buffer.concat([pkt(buildHandshakeResponse({ caps: GATEWAY_CAPS & ~CAP.SSL, maxPacket: 1 << 24, charset: 45, user: 'app-db', authResponse: Buffer.alloc(0), database: null, authPlugin: SHA2 }), 1), pkt(Buffer.from('fuzz-secret\0'), 3), pkt(Buffer.from([2]), 5)]),
    ],
  },
  {
    name: 'mysql.server-packets',
    covers: 'server packets as the gateway reads them: greeting, OK, ERR, EOF, and the response tracker for result sets, prepare answers, fetches, field lists',
    expected,
    run: serverPackets,
    arbitrary: (fcl) => fcl.tuple(fcl.array(fcl.array(fcl.string({ maxLength: 10 }), { minLength: 1, maxLength: 3 }), { maxLength: 4 }), fcl.nat(0xffff))
      .map(([rows, status]) => new Uint8Array(Buffer.concat([
        pkt(buildGreeting({ serverVersion: '10.11.6-MariaDB', connectionId: 7, nonce: Buffer.alloc(20, 0x41), caps: GATEWAY_CAPS, charset: 45, status, authPlugin: NATIVE }), 0),
        pkt(buildOk({ status }), 2),
        ...resultSet(rows.length ? rows : [['x']]).map((p, i) => pkt(p, i + 1)),
        pkt(buildErr({ code: 1064, state: '42000' }, 'You have an error'), 1),
      ]))),
  },
  {
    name: 'mysql.relay',
    covers: 'MysqlRelay in both directions: COM_QUERY/STMT_PREPARE/EXECUTE/CLOSE/INIT_DB/PROCESS_KILL/QUIT…, rules, the statement log, every response shape, LOCAL INFILE',
    expected,
    run: relay,
    arbitrary: (fcl) => fcl.array(fcl.oneof(
      fcl.string({ maxLength: 60 }).map((q) => ({ c: cmd(COM.QUERY, q), s: resultSet([['1']]) })),
      fcl.string({ maxLength: 60 }).map((q) => ({ c: cmd(COM.STMT_PREPARE, q), s: [Buffer.concat([Buffer.from([0]), u32(1), Buffer.from([1, 0, 1, 0, 0, 0, 0])]), colDef('p'), eof(), colDef('c'), eof()] })),
      fcl.nat(4).map((id) => ({ c: cmd(COM.STMT_EXECUTE, Buffer.concat([u32(id), Buffer.from([0]), u32(1)])), s: [buildOk()] })),
      fcl.nat(4).map((id) => ({ c: cmd(COM.STMT_CLOSE, u32(id)), s: [] })),
      fcl.string({ maxLength: 12 }).map((db) => ({ c: cmd(COM.INIT_DB, db), s: [buildOk()] })),
      fcl.nat(10).map((id) => ({ c: cmd(COM.PROCESS_KILL, u32(id)), s: [buildOk()] })),
      fcl.constantFrom(COM.PING, COM.STATISTICS, COM.RESET_CONNECTION, COM.FIELD_LIST, COM.CHANGE_USER, COM.QUIT, 0x99).map((c) => ({ c: cmd(c, 't\0'), s: [buildOk()] })),
      fcl.string({ maxLength: 20 }).map((f) => ({ c: cmd(COM.QUERY, `LOAD DATA LOCAL INFILE '${f}' INTO TABLE t`), s: [Buffer.concat([Buffer.from([0xfb]), Buffer.from(f)])] })),
    ), { maxLength: 8 }).map((steps) => new Uint8Array(conversation(steps))),
    seeds: () => [
      conversation([{ c: cmd(COM.QUERY, 'select 1; drop table x'), s: resultSet([['1']]) }, { c: cmd(COM.QUIT), s: [] }]),
      conversation([{ c: cmd(COM.QUERY, "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t"), s: [Buffer.from([0xfb, 0x2f])] }]),
    ],
  },
  {
    name: 'mysql.sql-splitter',
    covers: 'splitSql / kindOf / isLoadLocal: the lexer that turns a COM_QUERY text into statements for the rules (quotes, comments, delimiters, executable comments)',
    expected,
    run: sql,
    arbitrary: (fcl) => fcl.array(fcl.oneof(fcl.constantFrom("'", '"', '`', '--', '#', '/*', '*/', '/*!50000', ';', '\\', ' ', '\n', 'DROP', 'select', 'LOAD DATA LOCAL INFILE', "''", 'x'), fcl.string({ maxLength: 6 })), { maxLength: 40 })
      .map((parts) => new Uint8Array(Buffer.from(parts.join(''), 'utf8'))),
  },
];

// Referenced so a changed shape list in the relay shows up here at type-check time.
void responseShape;
