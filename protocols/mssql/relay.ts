/**
 * The data path after login. TDS is one request at a time (without MARS):
 *  - client requests (SQLBatch, RPC, Transaction Manager) are held until their last packet,
 *    parsed, recorded and checked against the command rules; allowed ones are forwarded as
 *    they came, denied ones answered by the gateway (ERROR + DONE; the session goes on), a kill
 *    ends the session. Bulk-load data streams through. ATTENTION (cancel) goes upstream at once,
 *    or is acknowledged by the gateway when nothing of the client's is upstream;
 *  - server responses stream to the client packet by packet while a tracker follows their
 *    tokens for row counts (DONE), errors, the attention acknowledgement and prepared handles.
 * Each direction waits for 'drain' when the other side is slow; what is held is bounded by the
 * request size limit.
 */
import type { Duplex } from 'node:stream';
import type { EndReason, LiveSession, RuleDecision } from '../types.js';
import type { QueryRecorder, StatementHandle } from '../../recorder/types.js';
import { ERR, FATAL, errorTokens, infoTokens } from './errors.js';
import { MessageAssembler, PKT, PacketReader, ProtocolError, STATUS, encodeMessage, isEom, MAX_PACKET, type Packet } from './packets.js';
import { parseRpc, parseSqlBatch, parseTmRequest, PROC_ID, baseProcName, type RpcCall } from './requests.js';
import { DONE, TOKEN, ResponseTracker, encodeDone, type ServerMessage } from './tokens.js';
import { batchKind, ruleKind, splitBatch, type Statement } from './tsql.js';

/** Largest request held for inspection (SQL Server itself takes up to 65,536 × packet size). */
export const MAX_REQUEST = 64 * 1024 * 1024;

const RANK = { allow: 0, alert: 1, deny: 2, kill: 3 } as const;

interface Call {
  record: StatementHandle | null;
  rows: number;
  counted: boolean;
  error: string | null;
  /** sp_prepare / sp_prepexec: remember the handle the server returns for this text. */
  prepare?: { text: string; kind: string };
}

interface Request { type: number; status: number; payload: Buffer; packets: Packet[] }

interface Described {
  text: string;
  kind: string;
  params: number;
  /** The statements the rules check. */
  statements: Statement[];
  prepare?: boolean;
  /** Refused whatever the rules say (distributed transactions). */
  refuse?: string;
}

interface InFlight {
  calls: Call[];
  /** Index of the call the server is answering (RPC batches answer one DONEPROC per call). */
  current: number;
  attention: boolean;
}

export interface RelayOptions {
  session: LiveSession;
  client: Duplex;
  upstream: Duplex;
  clientRest: Buffer;
  upstreamRest: Buffer;
  /** Negotiated packet size (for the messages the gateway writes). */
  packetSize: number;
}

export class TdsRelay {
  private readonly session: LiveSession;
  private readonly client: Duplex;
  private readonly upstream: Duplex;
  private readonly queries: QueryRecorder;
  private readonly clientReader = new PacketReader(MAX_PACKET);
  private readonly upReader = new PacketReader(MAX_PACKET);
  private readonly request = new MessageAssembler(MAX_REQUEST);
  /** A bulk-load message streams through packet by packet. */
  private bulk = false;
  private inflight: InFlight | null = null;
  /** A request completed while another was upstream: held (and the client paused) until the answer ends. */
  private queued: Request | null = null;
  /** The server message being forwarded (from its first packet to EOM). */
  private serverMsg: ResponseTracker | null = null;
  /** The last request was answered by the gateway (so a late ATTENTION is acknowledged here too). */
  private lastLocal = false;
  private warnings: string[] = [];
  private prepared = new Map<number, { text: string; kind: string }>();
  private closed = false;
  private readonly holds = new Set<string>();

  constructor(private readonly o: RelayOptions) {
    this.session = o.session;
    this.client = o.client;
    this.upstream = o.upstream;
    this.queries = o.session.recording.queries();
  }

  start(): void {
    const s = this.session;
    s.onTerminate((reason) => this.terminate(reason));
    s.onWarning((message, msLeft) => {
      // TDS has no unsolicited notices: the INFO goes out with the next answer.
      this.warnings.push(message);
      s.audit('mssql.warning', { message, msLeft });
    });
    this.client.on('data', (c: Buffer) => this.fromClient(c));
    this.upstream.on('data', (c: Buffer) => this.fromUpstream(c));
    this.client.on('error', (e) => s.log.debug({ err: e.message }, 'mssql client socket error'));
    this.upstream.on('error', (e) => s.log.debug({ err: e.message }, 'mssql upstream socket error'));
    this.client.on('close', () => this.finish({ code: 'client_exit', message: 'the client disconnected' }));
    this.client.on('end', () => this.finish({ code: 'client_exit', message: 'the client disconnected' }));
    this.upstream.on('close', () => this.upstreamGone());
    this.upstream.on('end', () => this.upstreamGone());
    if (this.client.destroyed || this.upstream.destroyed) {
      if (this.client.destroyed) this.finish({ code: 'client_exit', message: 'the client disconnected' });
      else this.upstreamGone();
      return;
    }
    if (this.o.upstreamRest.length) this.fromUpstream(this.o.upstreamRest);
    if (this.o.clientRest.length) this.fromClient(this.o.clientRest);
    this.client.resume();
    this.upstream.resume();
  }

  // ---- flow control ----

  private hold(why: string): void {
    this.holds.add(why);
    this.client.pause();
  }

  private release(why: string): void {
    this.holds.delete(why);
    if (!this.holds.size && !this.closed) this.client.resume();
  }

  private toUpstream(data: Buffer): void {
    if (this.upstream.destroyed) return;
    this.session.addBytes(data.length, 0);
    if (!this.upstream.write(data) && !this.holds.has('upstream-full')) {
      this.hold('upstream-full');
      this.upstream.once('drain', () => this.release('upstream-full'));
    }
  }

  private upstreamPaused = false;
  private toClient(data: Buffer): void {
    if (this.client.destroyed) return;
    this.session.addBytes(0, data.length);
    if (!this.client.write(data) && !this.upstreamPaused) {
      this.upstreamPaused = true;
      this.upstream.pause();
      this.client.once('drain', () => {
        this.upstreamPaused = false;
        if (!this.closed) this.upstream.resume();
      });
    }
  }

  /** A whole message of the gateway's own to the client, with any pending warnings first. */
  private answer(tokens: Buffer): void {
    this.toClient(encodeMessage(PKT.TABULAR_RESULT, Buffer.concat([this.takeWarnings(), tokens]), this.o.packetSize));
  }

  private takeWarnings(): Buffer {
    if (!this.warnings.length) return Buffer.alloc(0);
    const b = infoTokens(this.warnings);
    this.warnings = [];
    return b;
  }

  // ---- client -> server ----

  private fromClient(chunk: Buffer): void {
    if (this.closed) return;
    this.clientReader.push(chunk);
    this.guarded(() => this.drainClient());
  }

  /** A fault of the gateway's own ends this session, never the process. */
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.session.log.error({ err: (e as Error).message }, 'mssql relay failed');
      this.tellClient({ number: ERR.UNSUPPORTED, class: FATAL, message: 'Tollgate: internal error; the session is closed' });
      this.finish({ code: 'error', message: `relay error: ${(e as Error).message}` });
    }
  }

  private drainClient(): void {
    while (!this.closed && !this.queued) {
      let p: Packet | null;
      try {
        p = this.clientReader.next();
      } catch (e) {
        return this.violation((e as Error).message);
      }
      if (!p) return;
      try {
        this.clientPacket(p);
      } catch (e) {
        if (e instanceof ProtocolError) return this.violation(e.message);
        throw e;
      }
    }
  }

  private clientPacket(p: Packet): void {
    if (p.type === PKT.ATTENTION) return this.attention(p);
    if (this.bulk || (p.type === PKT.BULK_LOAD && this.request.empty)) {
      if (p.type !== PKT.BULK_LOAD) throw new ProtocolError('a request inside bulk-load data');
      this.bulk = !isEom(p);
      this.lastLocal = false;
      this.toUpstream(p.raw);
      if (!this.bulk) this.inflight = { calls: [], current: 0, attention: false };
      return;
    }
    if (p.type !== PKT.SQL_BATCH && p.type !== PKT.RPC && p.type !== PKT.TRANSACTION_MANAGER) {
      throw new ProtocolError(`unexpected TDS packet type 0x${p.type.toString(16)} after login`);
    }
    const m = this.request.push(p);
    if (!m) return;
    if (m.status & STATUS.IGNORE) return; // the client abandoned this request: nothing of it went upstream
    if (this.inflight) {
      this.queued = m;
      this.hold('queued');
      return;
    }
    this.handleRequest(m);
  }

  private attention(p: Packet): void {
    // A request still being held: the server never saw it.
    if (!this.request.empty) this.request.reset();
    if (this.inflight || (!this.lastLocal && !this.queued)) {
      if (this.inflight && !this.inflight.attention) {
        this.inflight.attention = true;
        this.session.audit('mssql.cancel', {}); // once per cancelled request: a client cannot flood the audit log with ATTENTIONs
      }
      this.toUpstream(p.raw);
      return;
    }
    this.answer(encodeDone(DONE.ATTN));
  }

  /** What one request does, as the statement log and the rules see it. */
  private describe(m: Request): Described[] {
    if (m.type === PKT.SQL_BATCH) {
      const text = parseSqlBatch(m.payload);
      const stmts = splitBatch(text);
      return [{ text, kind: batchKind(stmts), params: 0, statements: stmts }];
    }
    if (m.type === PKT.RPC) return parseRpc(m.payload).map((c) => this.describeCall(c));
    const tm = parseTmRequest(m.payload);
    return [{ text: tm.statement, kind: tm.statement.split(' ')[0]!, params: 0, statements: splitBatch(tm.statement), refuse: tm.distributed ? 'distributed transactions are not supported through Tollgate' : undefined }];
  }

  private handleRequest(m: Request): void {
    let calls: Described[];
    try {
      calls = this.describe(m);
    } catch (e) {
      // The framing is intact (the request arrived whole): refuse the request, keep the session.
      const message = `Tollgate cannot read this request: ${(e as Error).message}`;
      this.queries.statement({ statement: `(unreadable ${m.type === PKT.RPC ? 'RPC' : m.type === PKT.SQL_BATCH ? 'batch' : 'request'})`, kind: null, params: 0, decision: 'deny' }).finish({ error: message });
      this.lastLocal = true;
      this.answer(errorTokens({ number: ERR.UNSUPPORTED, class: 16, message }));
      return;
    }
    let worst: RuleDecision = { action: 'allow', message: '' };
    const decisions = calls.map((c) => {
      let d: RuleDecision = c.refuse ? { action: 'deny', message: c.refuse } : { action: 'allow', message: '' };
      for (const s of c.statements) {
        if (d.action === 'kill') break;
        const x = this.session.check(s.text, { kind: ruleKind(s) });
        if (RANK[x.action] > RANK[d.action]) d = x;
      }
      if (RANK[d.action] > RANK[worst.action]) worst = d;
      return d;
    });
    const refused = worst.action === 'deny' || worst.action === 'kill';
    const handles: Call[] = calls.map((c, i) => ({
      record: this.queries.statement({ statement: c.text, kind: c.kind || null, params: c.params, decision: refused ? worst.action : decisions[i]!.action }),
      rows: 0, counted: false, error: null,
      ...(c.prepare ? { prepare: { text: c.text, kind: c.kind } } : {}),
    }));
    if (worst.action === 'kill') {
      const message = worst.message || 'statement forbidden; session ended';
      for (const h of handles) h.record?.finish({ error: message });
      this.terminate({ code: 'forbidden', message });
      return;
    }
    if (worst.action === 'deny') {
      const message = worst.message || 'statement denied by policy';
      for (const h of handles) h.record?.finish({ error: message });
      this.lastLocal = true;
      this.answer(errorTokens({ number: ERR.DENIED, class: 16, message: /tollgate/i.test(message) ? message : `Tollgate: ${message}` }));
      return;
    }
    this.lastLocal = false;
    this.inflight = { calls: handles, current: 0, attention: false };
    for (const p of m.packets) this.toUpstream(p.raw);
  }

  private describeCall(c: RpcCall): Described {
    const base = c.procId !== null ? (PROC_ID[c.procId] ?? '') : baseProcName(c.name);
    if (c.statement !== null) {
      const stmts = splitBatch(c.statement);
      return { text: c.statement, kind: batchKind(stmts), params: c.params, prepare: base === 'sp_prepare' || base === 'sp_prepexec', statements: stmts };
    }
    if (c.handle !== null && (base === 'sp_execute' || base === 'sp_cursorexecute')) {
      const p = this.prepared.get(c.handle);
      if (p) return { text: p.text, kind: p.kind, params: Math.max(0, c.params - 1), statements: splitBatch(p.text) };
    }
    const text = `EXEC ${c.name}`;
    return { text, kind: 'EXECUTE', params: c.params, statements: splitBatch(text) };
  }

  // ---- server -> client ----

  private fromUpstream(chunk: Buffer): void {
    if (this.closed) return;
    this.upReader.push(chunk);
    this.guarded(() => this.drainUpstream());
  }

  private drainUpstream(): void {
    for (;;) {
      let p: Packet | null;
      try {
        p = this.upReader.next();
      } catch (e) {
        const message = `the database server sent something that is not TDS (${(e as Error).message})`;
        this.tellClient({ number: ERR.TARGET, class: FATAL, message: `Tollgate: ${message}` });
        this.finish({ code: 'target_error', message });
        return;
      }
      if (!p) return;
      this.serverPacket(p);
      if (this.closed) return;
    }
  }

  private serverPacket(p: Packet): void {
    if (!this.serverMsg) {
      this.serverMsg = this.newTracker();
      if (this.warnings.length) {
        this.toClient(encodeMessage(PKT.TABULAR_RESULT, this.takeWarnings(), this.o.packetSize, { eom: false }));
      }
    }
    this.serverMsg.feed(p.payload);
    this.toClient(p.raw);
    if (!isEom(p)) return;
    this.serverMsg.end();
    this.serverMsg = null;
    const f = this.inflight;
    if (!f) return;
    this.inflight = null;
    for (const c of f.calls) this.finishCall(c, f.attention ? 'cancelled by the client' : null);
    if (this.queued) {
      const q = this.queued;
      this.queued = null;
      this.release('queued');
      this.handleRequest(q);
      this.drainClient();
    }
  }

  private finishCall(c: Call, cancelled: string | null): void {
    if (!c.record) return;
    const error = c.error ?? cancelled;
    c.record.finish(error ? { rows: c.rows, error } : { rows: c.rows });
    c.record = null;
  }

  private newTracker(): ResponseTracker {
    const f = this.inflight;
    const cur = () => (f ? f.calls[Math.min(f.current, f.calls.length - 1)] : undefined);
    return new ResponseTracker({
      onDone: (token, status, rows) => {
        const c = cur();
        if (status & DONE.ATTN && f) f.attention = true;
        if (!c) return;
        if (status & DONE.COUNT && (token !== TOKEN.DONEPROC || !c.counted)) {
          c.rows += rows;
          c.counted = true;
        }
        if (token === TOKEN.DONEPROC && f && f.current < f.calls.length - 1) {
          this.finishCall(c, null);
          f.current++;
        }
      },
      onError: (m) => {
        const c = cur();
        if (c && m.class > 10) c.error ??= `Msg ${m.number}, Level ${m.class}, State ${m.state ?? 1}: ${m.message}`;
      },
      onReturnInt: (_ordinal, value) => {
        const c = cur();
        if (c?.prepare && !this.prepared.has(value)) {
          this.prepared.set(value, c.prepare);
          if (this.prepared.size > 10_000) this.prepared.delete(this.prepared.keys().next().value!);
          c.prepare = undefined;
        }
      },
    });
  }

  // ---- ending ----

  /** An ERROR to the client, if the bytes sent so far leave room for one (between tokens or messages). */
  private tellClient(m: ServerMessage): void {
    if (this.client.destroyed || this.closed) return;
    const tokens = Buffer.concat([this.takeWarnings(), errorTokens(m)]);
    if (!this.serverMsg) this.toClient(encodeMessage(PKT.TABULAR_RESULT, tokens, this.o.packetSize));
    else if (this.serverMsg.atBoundary) this.toClient(encodeMessage(PKT.TABULAR_RESULT, tokens, this.o.packetSize, { firstId: 0 }));
  }

  /** The gateway ends the session (kill, lock, expiry, revoke, forbidden): a fatal ERROR saying why, then close. */
  terminate(reason: EndReason): void {
    if (this.closed) return;
    this.tellClient({ number: ERR.SESSION_ENDED, class: FATAL, message: reason.message || 'Tollgate ended the session' });
    this.finish(reason);
  }

  private violation(message: string): void {
    if (this.closed) return;
    this.session.log.warn({ message }, 'mssql protocol violation from the client');
    this.tellClient({ number: ERR.UNSUPPORTED, class: FATAL, message: `Tollgate: protocol violation: ${message}` });
    this.finish({ code: 'error', message: `protocol violation: ${message}` });
  }

  private upstreamGone(): void {
    if (this.closed) return;
    this.tellClient({ number: ERR.TARGET, class: FATAL, message: 'Tollgate: the database server closed the connection' });
    this.finish({ code: 'target_closed', message: 'the database server closed the connection' });
  }

  private finish(reason: EndReason): void {
    if (this.closed) return;
    this.closed = true;
    const f = this.inflight;
    this.inflight = null;
    for (const c of f?.calls ?? []) this.finishCall(c, `session ended: ${reason.message}`);
    this.client.end();
    if (reason.code === 'client_exit') this.upstream.end();
    else this.upstream.destroy();
    setTimeout(() => { this.client.destroy(); this.upstream.destroy(); }, 2000).unref();
    void this.session.end(reason).catch((e) => this.session.log.error({ err: e }, 'session end failed'));
  }
}
