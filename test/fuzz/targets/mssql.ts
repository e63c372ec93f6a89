/**
 * SQL Server (TDS): PRELOGIN, LOGIN7 (round trip of valid messages, mutated ones refused cleanly),
 * packet framing and message assembly in any chunking, the server token stream tracker on real
 * result sets, and the client's requests (RPC, TYPE_INFO values, transaction manager, batches).
 * (These were test/mssql/parsers.test.ts's fuzz test, folded in here.)
 */
import { FEATURE, TDS, buildLogin7, parseLogin7 } from '../../../protocols/mssql/login7.js';
import { MessageAssembler, PacketReader, ProtocolError, encodeMessage, PKT } from '../../../protocols/mssql/packets.js';
import { buildPrelogin, parsePrelogin } from '../../../protocols/mssql/prelogin.js';
import { readAll } from '../../../protocols/mssql/reader.js';
import { buildSqlBatch, defaultAllHeaders, parseRpc, parseSqlBatch, parseTmRequest } from '../../../protocols/mssql/requests.js';
import { DONE, ResponseTracker, encodeDone, encodeEnvChange, encodeError, encodeInfo, encodeLoginAck } from '../../../protocols/mssql/tokens.js';
import { splitBatch } from '../../../protocols/mssql/tsql.js';
import { skipValue, typeInfo } from '../../../protocols/mssql/types.js';
import { ORDERS, encodeResult } from '../../mssql/double.js';
import { chunks, invariant, type FuzzTarget } from '../engine.js';

const expected = (e: unknown) => e instanceof ProtocolError;
const only = (fn: () => unknown) => { try { fn(); } catch (e) { if (!expected(e)) throw e; } };
const head = defaultAllHeaders();

function framing(input: Buffer): void {
  const r = new PacketReader(32768);
  const asm = new MessageAssembler(1 << 20);
  let n = 0;
  for (const c of chunks(input)) {
    r.push(c);
    n += c.length;
    for (let p = r.next(); p; p = r.next()) {
      const m = asm.push(p);
      if (m?.type === PKT.SQL_BATCH) only(() => parseSqlBatch(m.payload));
      if (m?.type === PKT.RPC) only(() => parseRpc(m.payload));
    }
    invariant(r.buffered <= n, 'the reader holds more than arrived');
  }
}

function tokens(input: Buffer): void {
  const tr = new ResponseTracker({ onDone: () => {}, onError: () => {}, onReturnInt: () => {}, onEnvChange: () => {}, onLoginAck: () => {} });
  for (const c of chunks(input)) tr.feed(c);
  tr.end();
}

function requests(input: Buffer): void {
  only(() => parseRpc(Buffer.concat([head, input])));
  only(() => parseRpc(input));
  only(() => readAll((function* () { const ti = yield* typeInfo('param'); yield* skipValue(ti, false); })(), input, { partial: true }));
  only(() => parseTmRequest(Buffer.concat([head, input])));
  only(() => parseSqlBatch(input));
  splitBatch(input.toString('latin1'));
}

const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16LE(n); return b; };
const bv = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'utf16le')]);
const collation = Buffer.from([0x09, 0x04, 0xd0, 0x00, 0x34]);
const nvarcharParam = (name: string, v: string) => { const d = Buffer.from(v, 'utf16le'); return Buffer.concat([bv(name), Buffer.from([0, 0xe7]), u16(8000), collation, u16(d.length), d]); };
const executesql = (stmt: string) => Buffer.concat([u16(0xffff), u16(10), u16(0), nvarcharParam('', stmt), nvarcharParam('', '@p0 int')]);

export const targets: FuzzTarget[] = [
  {
    name: 'mssql.prelogin',
    covers: 'PRELOGIN option tables (version, encryption, instance, thread id, MARS, FedAuth)',
    expected, run: (b) => { parsePrelogin(b); },
    arbitrary: (fcl) => fcl.tuple(fcl.nat(255), fcl.string({ maxLength: 20 }), fcl.nat(1)).map(([enc, inst, mars]) => new Uint8Array(buildPrelogin({ version: { major: 16, minor: 0, build: 1, subbuild: 0 }, encryption: enc, instance: inst, threadId: 1, mars }))),
    seeds: () => [buildPrelogin({ version: { major: 16, minor: 0, build: 1, subbuild: 0 }, encryption: 1, instance: 'MSSQLServer', threadId: 1, mars: 0 })],
  },
  {
    name: 'mssql.login7',
    covers: 'LOGIN7: fixed header, offset/length field table, UTF-16 fields, obfuscated password, feature extensions; valid messages round-trip',
    expected,
    run: (b) => { parseLogin7(b); },
    arbitrary: (fcl) => fcl.tuple(fcl.string({ maxLength: 40 }), fcl.string({ maxLength: 60 }), fcl.string({ maxLength: 30 })).map(([user, pw, db]) => {
      const msg = buildLogin7({ tdsVersion: TDS.V7_4, packetSize: 4096, userName: user, password: pw, database: db, features: [{ id: FEATURE.UTF8_SUPPORT, data: Buffer.from([1]) }] });
      const l = parseLogin7(msg);
      invariant(l.userName === user && l.password.reveal() === pw && l.database === db, 'LOGIN7 round trip changed a field');
      return new Uint8Array(msg);
    }),
    seeds: () => [buildLogin7({ tdsVersion: TDS.V7_4, packetSize: 4096, userName: 'sales-db:read', password: 'secret', database: 'sales', features: [{ id: FEATURE.UTF8_SUPPORT, data: Buffer.from([1]) }] })],
  },
  {
    name: 'mssql.packets',
    covers: 'TDS packet framing and message assembly in any chunking, with SQL batch and RPC payloads',
    expected, run: framing,
    arbitrary: (fcl) => fcl.array(fcl.tuple(fcl.constantFrom(PKT.SQL_BATCH, PKT.RPC, PKT.ATTENTION, PKT.TRANSACTION_MANAGER, 0x77), fcl.string({ maxLength: 200 }), fcl.constantFrom(512, 4096)), { maxLength: 4 })
      .map((ms) => new Uint8Array(Buffer.concat(ms.map(([t, s, size]) => encodeMessage(t, t === PKT.RPC ? Buffer.concat([head, executesql(s)]) : buildSqlBatch(s), size))))),
    seeds: () => [Buffer.concat([encodeMessage(PKT.SQL_BATCH, buildSqlBatch('select 1')), encodeMessage(PKT.RPC, Buffer.concat([head, executesql('select * from orders where id = @p0')]), 512), encodeMessage(PKT.ATTENTION, Buffer.alloc(0))])],
  },
  {
    name: 'mssql.tokens',
    covers: 'the server token stream tracker: COLMETADATA, ROW, NBCROW, DONE*, ERROR, INFO, ENVCHANGE, LOGINACK, RETURNVALUE',
    expected: () => false, run: tokens,
    arbitrary: (fcl) => fcl.tuple(fcl.string({ maxLength: 40 }), fcl.nat(1000)).map(([m, n]) => new Uint8Array(Buffer.concat([
      encodeLoginAck(TDS.V7_4, 'double', [16, 0, 1]), encodeEnvChange(1, 'sales', 'master'), encodeInfo({ number: 5701, state: 2, class: 0, message: m, server: 's', proc: '', line: 1 }),
      encodeResult(ORDERS.cols, ORDERS.rows), encodeDone(DONE.COUNT, n), encodeError({ number: 208, state: 1, class: 16, message: m, server: 's', proc: '', line: 1 }), encodeDone(DONE.ERROR, 0),
    ]))),
    seeds: () => [Buffer.concat([encodeResult(ORDERS.cols, ORDERS.rows), encodeDone(DONE.COUNT, 3)])],
  },
  {
    name: 'mssql.requests',
    covers: 'client requests: ALL_HEADERS, RPC calls and parameters (TYPE_INFO and values), transaction manager requests, SQL batches, GO splitting',
    expected, run: requests,
    arbitrary: (fcl) => fcl.oneof(fcl.string({ maxLength: 80 }).map((s) => new Uint8Array(executesql(s))), fcl.uint8Array({ maxLength: 400 })),
    seeds: () => [executesql('select 1'), Buffer.concat([u16(9), Buffer.from('dbo.proc1', 'utf16le'), u16(0), nvarcharParam('@a', 'x')])],
  },
];
