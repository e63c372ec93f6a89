/**
 * Client requests after login (MS-TDS 2.2.6): SQLBatch text, RPC calls (procedure name or
 * well-known id, parameter count, the statement text of sp_executesql / sp_prepare / cursor
 * procedures, the handle of sp_execute), and Transaction Manager requests. Parsed from the
 * complete message, which the relay holds (within its size limit) until it is checked.
 * Parameter values are read only where the statement text or a handle sits; never recorded.
 */
import { ProtocolError } from './packets.js';
import { bVarchar, bytes, readAll, u16, u8, type Reader } from './reader.js';
import { intOf, readValue, skipValue, textOf, typeInfo } from './types.js';

/** ALL_HEADERS (2.2.5.3): returns where the request data starts. */
export function allHeadersLength(buf: Buffer): number {
  if (buf.length < 4) throw new ProtocolError('request without ALL_HEADERS');
  const total = buf.readUInt32LE(0);
  if (total < 4 || total > buf.length) throw new ProtocolError('ALL_HEADERS length does not match the message');
  let at = 4;
  while (at < total) {
    if (at + 6 > total) throw new ProtocolError('ALL_HEADERS entry truncated');
    const len = buf.readUInt32LE(at);
    if (len < 6 || at + len > total) throw new ProtocolError('ALL_HEADERS entry length is wrong');
    at += len;
  }
  return total;
}

export function parseSqlBatch(buf: Buffer): string {
  const start = allHeadersLength(buf);
  if ((buf.length - start) % 2) throw new ProtocolError('SQLBatch text is not UTF-16');
  return buf.toString('utf16le', start);
}

/** Well-known procedure ids (2.2.6.6 ProcID). */
export const PROC_ID: Record<number, string> = {
  1: 'sp_cursor', 2: 'sp_cursoropen', 3: 'sp_cursorprepare', 4: 'sp_cursorexecute', 5: 'sp_cursorprepexec',
  6: 'sp_cursorunprepare', 7: 'sp_cursorfetch', 8: 'sp_cursoroption', 9: 'sp_cursorclose', 10: 'sp_executesql',
  11: 'sp_prepare', 12: 'sp_execute', 13: 'sp_prepexec', 14: 'sp_prepexecrpc', 15: 'sp_unprepare',
};

/** Which parameter holds the statement text, and how many leading parameters are not the caller's own. */
const STATEMENT_PARAM: Record<string, { index: number; meta: number }> = {
  sp_executesql: { index: 0, meta: 2 },
  sp_prepare: { index: 2, meta: 3 },
  sp_prepexec: { index: 2, meta: 3 },
  sp_cursoropen: { index: 1, meta: 5 },
  sp_cursorprepare: { index: 2, meta: 6 },
  sp_cursorprepexec: { index: 3, meta: 7 },
};
/** Which parameter holds a prepared handle. */
const HANDLE_PARAM: Record<string, number> = { sp_execute: 0, sp_cursorexecute: 0, sp_unprepare: 0, sp_cursorunprepare: 0 };

export interface RpcCall {
  /** The procedure as the client named it, or the name of its well-known id. */
  name: string;
  procId: number | null;
  /** Parameters the caller passed (for sp_executesql and friends, without the statement and its declarations). */
  params: number;
  /** The statement text of sp_executesql, sp_prepare, sp_prepexec and the cursor procedures. */
  statement: string | null;
  /** The prepared handle of sp_execute / sp_cursorexecute / sp_unprepare. */
  handle: number | null;
}

/** sp_executesql, sys.sp_executesql, master..sp_executesql, [sys].[sp_executesql] -> sp_executesql. */
export function baseProcName(name: string): string {
  const last = name.split('.').pop() ?? name;
  return last.replace(/^\[|\]$/g, '').toLowerCase();
}

const MAX_CALLS = 1000;
const MAX_PARAMS = 2100; // SQL Server's own limit of parameters per procedure call

function* rpcCall(): Reader<RpcCall> {
  const nameLen = yield* u16();
  let name: string;
  let procId: number | null = null;
  if (nameLen === 0xffff) {
    procId = yield* u16();
    name = PROC_ID[procId] ?? `procedure id ${procId}`;
  } else {
    if (nameLen === 0 || nameLen > 1024) throw new ProtocolError('RPC procedure name of a bad length');
    name = (yield* bytes(nameLen * 2)).toString('utf16le');
  }
  yield* u16(); // option flags
  return { name, procId, params: 0, statement: null, handle: null };
}

function baseOf(call: RpcCall): string {
  return call.procId !== null ? (PROC_ID[call.procId] ?? '') : baseProcName(call.name);
}

function* rpcParam(call: RpcCall, index: number): Reader<void> {
  yield* bVarchar(); // parameter name
  const status = yield* u8();
  if (status & 0x08) throw new ProtocolError('encrypted RPC parameters (Always Encrypted) are not supported through Tollgate');
  const t = yield* typeInfo('param');
  const base = baseOf(call);
  const stmt = STATEMENT_PARAM[base];
  if (stmt && stmt.index === index) {
    call.statement = textOf(t, yield* readValue(t)) ?? '';
  } else if (HANDLE_PARAM[base] === index) {
    call.handle = intOf(t, yield* readValue(t));
  } else {
    yield* skipValue(t, false);
  }
}

/** Parse an RPC request message into its calls (several may be batched with 0xFF / 0xFE separators). */
export function parseRpc(buf: Buffer): RpcCall[] {
  const start = allHeadersLength(buf);
  const data = buf.subarray(start);
  const calls: RpcCall[] = [];
  let at = 0;
  while (at < data.length) {
    if (calls.length >= MAX_CALLS) throw new ProtocolError('too many RPC calls in one request');
    const head = readAll(rpcCall(), data.subarray(at), { partial: true });
    const call = head.value;
    at += head.used;
    let n = 0;
    while (at < data.length && data[at] !== 0xff && data[at] !== 0xfe) {
      if (n >= MAX_PARAMS) throw new ProtocolError('too many RPC parameters');
      at += readAll(rpcParam(call, n), data.subarray(at), { partial: true }).used;
      n++;
    }
    const base = baseOf(call);
    const meta = STATEMENT_PARAM[base]?.meta ?? 0;
    call.params = Math.max(0, n - meta);
    if (STATEMENT_PARAM[base] && call.statement === null) call.statement = '';
    calls.push(call);
    if (at < data.length) at++; // batch separator
  }
  if (!calls.length) throw new ProtocolError('RPC request without a call');
  return calls;
}

/** Transaction Manager request types (2.2.6.9). */
export const TM = { GET_DTC_ADDRESS: 0, PROPAGATE_XACT: 1, BEGIN_XACT: 5, PROMOTE_XACT: 6, COMMIT_XACT: 7, ROLLBACK_XACT: 8, SAVE_XACT: 9 } as const;

/** What a TM request does, as a statement for the log and the rules; distributed transactions are flagged. */
export function parseTmRequest(buf: Buffer): { type: number; statement: string; distributed: boolean } {
  const start = allHeadersLength(buf);
  if (buf.length < start + 2) throw new ProtocolError('transaction manager request truncated');
  const type = buf.readUInt16LE(start);
  const rest = buf.subarray(start + 2);
  const nameAt = (off: number) => {
    try { return rest.length > off ? readAll(bVarchar(), rest.subarray(off), { partial: true }).value : ''; } catch { return ''; }
  };
  switch (type) {
    case TM.BEGIN_XACT: { const n = nameAt(1); return { type, statement: `BEGIN TRANSACTION${n ? ` ${n}` : ''}`, distributed: false }; }
    case TM.COMMIT_XACT: { const n = nameAt(0); return { type, statement: `COMMIT TRANSACTION${n ? ` ${n}` : ''}`, distributed: false }; }
    case TM.ROLLBACK_XACT: { const n = nameAt(0); return { type, statement: `ROLLBACK TRANSACTION${n ? ` ${n}` : ''}`, distributed: false }; }
    case TM.SAVE_XACT: { const n = nameAt(0); return { type, statement: `SAVE TRANSACTION${n ? ` ${n}` : ''}`, distributed: false }; }
    case TM.GET_DTC_ADDRESS: return { type, statement: 'transaction manager: get DTC address', distributed: true };
    case TM.PROPAGATE_XACT: return { type, statement: 'transaction manager: propagate a distributed transaction', distributed: true };
    case TM.PROMOTE_XACT: return { type, statement: 'transaction manager: promote to a distributed transaction', distributed: true };
    default: throw new ProtocolError(`unknown transaction manager request ${type}`);
  }
}

/** An empty ALL_HEADERS with a transaction descriptor (auto-commit), for requests the gateway or tests build. */
export function defaultAllHeaders(): Buffer {
  const b = Buffer.alloc(22);
  b.writeUInt32LE(22, 0);
  b.writeUInt32LE(18, 4);
  b.writeUInt16LE(2, 8); // transaction descriptor
  b.writeUInt32LE(1, 18); // outstanding requests
  return b;
}

export function buildSqlBatch(text: string): Buffer {
  return Buffer.concat([defaultAllHeaders(), Buffer.from(text, 'utf16le')]);
}

