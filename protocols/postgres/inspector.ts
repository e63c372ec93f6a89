/**
 * The relay between an authenticated client and its upstream backend. Messages are framed and
 * forwarded untouched; only what policy and audit need is decoded:
 *  - Query / Parse text is checked against the session's rules (deny, kill, alert),
 *  - Execute and every simple-query statement is recorded with rows / error from the replies.
 *
 * A denied statement is replaced, on the wire, by a statement the server rejects at parse time
 * (a unique marker word). The server then behaves exactly as after any error (aborts the
 * transaction, skips to Sync in the extended protocol), and its error, recognised by the marker,
 * is rewritten into Tollgate's 42501 "blocked by Tollgate policy" error. Replies stay in order.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import type { EndReason, LiveSession } from '../types.js';
import type { StatementHandle } from '../../recorder/types.js';
import {
  FrameSplitter, ProtocolViolation, decodeBind, decodeCommandComplete, decodeErrorFields, decodeExecute,
  decodeParse, decodeQuery, decodeTarget, encodeError, encodeNotice, Gather, rowsFromTag, type ErrorSpec, type Frame,
} from './framing.js';
import { kindOf, splitStatements } from './sql.js';
import { refusedInDatabase } from './enforce.js';
import { redactStatement } from '../../recorder/index.js';

/** Largest client message relayed (PostgreSQL allows up to 1 GB; a gateway keeps its buffers bounded). */
export const MAX_CLIENT_MESSAGE = 64 * 1024 * 1024;
const MAX_BACKEND_MESSAGE = 1 << 30;
const STREAM_THRESHOLD = 256 * 1024;

interface Prepared { text: string; kind: string | null; params: number; alert: boolean }

/** A portal's recorded run, open while the portal is suspended (Execute with a row limit). */
interface Running { h: StatementHandle; rows: number }

/** A recorded statement waiting for the server's answer; portal runs know their row limit. */
interface Pending { h: StatementHandle; seq: number; text: string; portal?: string; maxRows?: number }

export interface RelayOptions {
  client: Socket;
  upstream: Socket;
  session: LiveSession;
  /** Bytes the client already sent after start-up. */
  clientRest?: Buffer;
  upstreamRest?: Buffer;
  status: string;
  onClose?: () => void;
}

export class PgRelay {
  private readonly client: Socket;
  private readonly upstream: Socket;
  private readonly session: LiveSession;
  /** CopyData from the client and DataRow/CopyData from the server stream through in pieces when large. */
  private readonly clientSplit = new FrameSplitter(MAX_CLIENT_MESSAGE, { types: 'd', threshold: STREAM_THRESHOLD, maxLength: MAX_BACKEND_MESSAGE });
  private readonly upSplit = new FrameSplitter(MAX_BACKEND_MESSAGE, { types: 'Dd', threshold: STREAM_THRESHOLD, maxLength: MAX_BACKEND_MESSAGE });
  private readonly statements = new Map<string, Prepared>();
  private readonly portals = new Map<string, Prepared>();
  /**
   * Portals suspended after an Execute with a row limit (cursors, fetch sizes): the next Execute
   * continues the same log entry, so a portal read in batches is one statement with all its rows.
   */
  private readonly running = new Map<string, Running>();
  /** Recorded statements waiting for their CommandComplete / ErrorResponse, in order. */
  private pending: Pending[] = [];
  /** Marker words of denied statements whose server error must be rewritten. */
  private denied: { marker: string; error: ErrorSpec; seq: number }[] = [];
  /** How many ReadyForQuery-producing messages (Query, Sync, FunctionCall) the client sent / the server answered. */
  private clientSeq = 0;
  private serverSeq = 0;
  private status: string;
  private closed = false;
  private clientExiting = false;
  /** After a denied Parse, the server skips to Sync; so do the records. */
  private discarding = false;
  /** Bytes of partial messages both splitters hold, as last reported to the session's buffer budget. */
  private held = 0;

  constructor(private readonly o: RelayOptions) {
    this.client = o.client;
    this.upstream = o.upstream;
    this.session = o.session;
    this.status = o.status;
  }

  start(): void {
    const s = this.session;
    s.onTerminate((reason) => this.terminate(reason));
    s.onWarning((message) => {
      if (!this.closed) this.client.write(encodeNotice({ severity: 'WARNING', code: '01000', message }));
    });
    // Guarded: a throw while inspecting ends this session only (logged, audited), never the gateway.
    this.client.on('data', s.guard((chunk: Buffer) => this.fromClient(chunk)));
    this.upstream.on('data', s.guard((chunk: Buffer) => this.fromUpstream(chunk)));
    this.client.on('error', (e) => s.log.debug({ err: e.message }, 'postgres client socket error'));
    this.upstream.on('error', (e) => s.log.debug({ err: e.message }, 'postgres upstream socket error'));
    this.client.on('close', () => this.close({ code: 'client_exit', message: this.clientExiting ? 'the client ended the session' : 'the client disconnected' }));
    this.upstream.on('close', () => this.close({ code: 'target_closed', message: 'the database server closed the connection' }));
    if (this.client.destroyed || this.upstream.destroyed) {
      // One side went away while the session was being set up: end now (nobody will emit 'close' again).
      void this.close(this.client.destroyed
        ? { code: 'client_exit', message: 'the client disconnected' }
        : { code: 'target_closed', message: 'the database server closed the connection' });
      return;
    }
    if (this.o.upstreamRest?.length) this.fromUpstream(this.o.upstreamRest);
    if (this.o.clientRest?.length) this.fromClient(this.o.clientRest);
    this.client.resume();
    this.upstream.resume();
  }

  /** Gateway-initiated end (kill, lock, expiry, revoke, forbidden statement): FATAL to the client, close both sides. */
  terminate(reason: EndReason): void {
    if (this.closed) return;
    // 53400 configuration_limit_exceeded: the session went over limits.sessionBufferBytes.
    const code = reason.code === 'expired' ? '57P05' : reason.code === 'resource_limit' ? '53400' : '57P01';
    this.client.write(encodeError({ severity: 'FATAL', code, message: reason.message || 'terminating connection by Tollgate' }));
    void this.close(reason);
  }

  private close(reason: EndReason): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.session.holdBytes(-this.held);
    this.held = 0;
    for (const p of this.pending) p.h.finish({ error: `session ended: ${reason.message}` });
    this.pending = [];
    for (const r of this.running.values()) r.h.finish({ rows: r.rows });
    this.running.clear();
    if (!this.upstream.destroyed) {
      this.upstream.end(serialize.end());
      this.upstream.destroySoon?.();
    }
    this.client.end();
    setTimeout(() => { this.client.destroy(); this.upstream.destroy(); }, 2000).unref();
    this.o.onClose?.();
    return this.session.end(reason);
  }

  private readonly paused = new Set<Socket>();

  /** Write with backpressure: a full destination pauses the source until it drains. */
  private pipe(dest: Socket, src: Socket, data: Buffer): void {
    if (!data.length || dest.destroyed) return;
    if (!dest.write(data) && !this.paused.has(src)) {
      this.paused.add(src);
      src.pause();
      dest.once('drain', () => {
        this.paused.delete(src);
        if (!this.closed) src.resume();
      });
    }
  }

  // ---- client -> upstream ----

  private fromClient(chunk: Buffer): void {
    if (this.closed) return;
    let frames: Frame[];
    try {
      frames = this.clientSplit.push(chunk);
    } catch (e) {
      return this.violation(e as Error);
    }
    if (!this.account()) return;
    const out = new Gather();
    for (const f of frames) {
      let r: Buffer | null;
      try {
        r = this.clientFrame(f);
      } catch (e) {
        this.pipe(this.upstream, this.client, out.join());
        return this.violation(e as Error);
      }
      if (this.closed) return;
      if (r) out.add(r);
    }
    this.session.addBytes(chunk.length, 0);
    this.pipe(this.upstream, this.client, out.join());
  }

  /** Report what the splitters hold to the session's buffer budget; false once the session is over it (it is being ended). */
  private account(): boolean {
    const now = this.clientSplit.pending + this.upSplit.pending;
    const ok = this.session.holdBytes(now - this.held);
    this.held = now;
    return ok;
  }

  private violation(e: Error): void {
    if (this.closed) return;
    const message = e instanceof ProtocolViolation ? `protocol violation: ${e.message}` : `gateway error: ${e.message}`;
    this.session.log.warn({ err: e.message }, 'postgres client protocol violation');
    this.client.write(encodeError({ severity: 'FATAL', code: '08P01', message }));
    void this.close({ code: 'error', message });
  }

  /** Returns the bytes to forward upstream for one client message (null: drop it). */
  private clientFrame(f: Frame): Buffer | null {
    if (f.partial) return f.raw;
    switch (f.type) {
      case 'Q': {
        const text = decodeQuery(f.body);
        const stmts = splitStatements(text);
        const checked = stmts.map((stmt) => {
          const kind = kindOf(stmt);
          return { stmt, kind, decision: this.session.check(stmt, { kind: kind ?? undefined }) };
        });
        const kill = checked.find((c) => c.decision.action === 'kill');
        if (kill) {
          this.recordRefused(kill.stmt, kill.kind, 0, 'kill', kill.decision.message);
          this.terminate({ code: 'forbidden', message: kill.decision.message });
          return null;
        }
        const deny = checked.filter((c) => c.decision.action === 'deny');
        if (deny.length) {
          for (const d of deny) this.recordRefused(d.stmt, d.kind, 0, 'deny', d.decision.message);
          const q = serialize.query(this.deny(deny[0]!.decision.message));
          this.clientSeq++;
          return q;
        }
        for (const c of checked) {
          this.pending.push({
            seq: this.clientSeq,
            text: c.stmt,
            h: this.session.recording.queries().statement({
              statement: c.stmt, kind: c.kind, params: 0, decision: c.decision.action === 'alert' ? 'alert' : 'allow',
            }),
          });
        }
        this.clientSeq++;
        return f.raw;
      }
      case 'P': {
        const p = decodeParse(f.body);
        const kind = kindOf(p.text);
        const decision = this.session.check(p.text, { kind: kind ?? undefined });
        if (decision.action === 'kill') {
          this.recordRefused(p.text, kind, p.paramTypes, 'kill', decision.message);
          this.terminate({ code: 'forbidden', message: decision.message });
          return null;
        }
        if (decision.action === 'deny') {
          this.recordRefused(p.text, kind, p.paramTypes, 'deny', decision.message);
          this.statements.delete(p.name);
          this.discarding = true;
          return serialize.parse({ name: p.name, text: this.deny(decision.message) });
        }
        this.statements.set(p.name, { text: p.text, kind, params: p.paramTypes, alert: decision.action === 'alert' });
        if (this.statements.size > 10_000) this.statements.delete(this.statements.keys().next().value!);
        return f.raw;
      }
      case 'B': {
        const b = decodeBind(f.body);
        if (this.discarding) return f.raw;
        const st = this.statements.get(b.statement);
        this.portalGone(b.portal);
        this.portals.set(b.portal, { text: st?.text ?? '(unknown prepared statement)', kind: st?.kind ?? null, params: b.params, alert: st?.alert ?? false });
        if (this.portals.size > 10_000) this.portals.delete(this.portals.keys().next().value!);
        return f.raw;
      }
      case 'E': {
        const e = decodeExecute(f.body);
        if (this.discarding) return f.raw;
        const p = this.portals.get(e.portal);
        const h = this.running.get(e.portal)?.h ?? this.session.recording.queries().statement({
          statement: p?.text ?? '(unknown portal)', kind: p?.kind ?? null, params: p?.params ?? 0, decision: p?.alert ? 'alert' : 'allow',
        });
        this.pending.push({ seq: this.clientSeq, h, text: p?.text ?? '(unknown portal)', portal: e.portal, maxRows: e.maxRows });
        return f.raw;
      }
      case 'C': {
        const c = decodeTarget(f.body);
        if (c.which === 'S') this.statements.delete(c.name);
        else { this.portals.delete(c.name); this.portalGone(c.name); }
        return f.raw;
      }
      case 'D': decodeTarget(f.body); return f.raw;
      case 'X': this.clientExiting = true; return f.raw;
      case 'S': this.clientSeq++; this.discarding = false; return f.raw;
      case 'H': case 'd': case 'c': case 'f': return f.raw;
      case 'F': {
        // Fast-path function call (libpq large objects): no SQL text, so it is audited and checked
        // as kind FUNCTION (a rule with kinds: [FUNCTION] can deny or kill it).
        if (f.body.length < 4) throw new ProtocolViolation('message truncated (FunctionCall)');
        const oid = f.body.readUInt32BE(0);
        this.session.audit('postgres.function_call', { oid });
        const text = `fast-path call of function ${oid}`;
        const decision = this.session.check(text, { kind: 'FUNCTION' });
        if (decision.action === 'kill') {
          this.recordRefused(text, 'FUNCTION', 0, 'kill', decision.message);
          this.terminate({ code: 'forbidden', message: decision.message });
          return null;
        }
        if (decision.action === 'deny') {
          this.recordRefused(text, 'FUNCTION', 0, 'deny', decision.message);
          const q = serialize.query(this.deny(decision.message));
          this.clientSeq++;
          return q;
        }
        this.clientSeq++;
        return f.raw;
      }
      default:
        throw new ProtocolViolation(`unexpected message type '${printable(f.type)}' after start-up`);
    }
  }

  /** A statement the server rejects at parse time, carrying a marker so the error can be rewritten. */
  private deny(message: string): string {
    const marker = `tollgate_blocked_${randomBytes(6).toString('hex')}`;
    this.denied.push({
      marker,
      seq: this.clientSeq,
      error: { severity: 'ERROR', code: '42501', message: /^blocked by tollgate/i.test(message) ? message : `blocked by Tollgate policy: ${message}` },
    });
    return `${marker} ${marker}`;
  }

  private recordRefused(text: string, kind: string | null, params: number, decision: 'deny' | 'kill', message: string): void {
    this.session.recording.queries().statement({ statement: text, kind, params, decision }).finish({ error: message });
  }

  // ---- upstream -> client ----

  private fromUpstream(chunk: Buffer): void {
    if (this.closed) return;
    let frames: Frame[];
    try {
      frames = this.upSplit.push(chunk);
    } catch (e) {
      const message = `the database server sent an invalid message (${(e as Error).message})`;
      this.client.write(encodeError({ severity: 'FATAL', code: '08P01', message }));
      void this.close({ code: 'target_error', message });
      return;
    }
    if (!this.account()) return;
    const out = new Gather();
    for (const f of frames) out.add(this.upstreamFrame(f));
    this.session.addBytes(0, chunk.length);
    this.pipe(this.client, this.upstream, out.join());
  }

  /** The oldest recorded statement of the request the server is answering now. */
  private current(): Pending | undefined {
    if (this.pending[0] && this.pending[0].seq <= this.serverSeq) return this.pending.shift()!;
    return undefined;
  }

  /**
   * The server answered a statement: CommandComplete's count is the last batch's only, so a
   * portal that was suspended adds the rows of its earlier batches (each exactly its row limit).
   */
  private answered(p: Pending | undefined, result: { rows?: number | null; error?: string }): void {
    if (!p) return;
    const r = p.portal !== undefined ? this.running.get(p.portal) : undefined;
    if (r && r.h === p.h) {
      this.running.delete(p.portal!);
      p.h.finish(result.error !== undefined ? { error: result.error } : { rows: r.rows + (result.rows ?? 0) });
      return;
    }
    p.h.finish(result);
  }

  /** PortalSuspended: exactly maxRows rows were sent; the entry stays open for the next Execute. */
  private suspended(p: Pending | undefined): void {
    if (!p) return;
    if (p.portal === undefined || !p.maxRows) { p.h.finish({ rows: null }); return; }
    const r = this.running.get(p.portal);
    if (r && r.h === p.h) r.rows += p.maxRows;
    else this.running.set(p.portal, { h: p.h, rows: p.maxRows });
  }

  /** A portal closed, re-bound or dropped at the end of its transaction: a suspended run ends with the rows read. */
  private portalGone(name: string): void {
    const r = this.running.get(name);
    if (!r) return;
    this.running.delete(name);
    r.h.finish({ rows: r.rows });
  }

  private upstreamFrame(f: Frame): Buffer {
    if (f.partial) return f.raw;
    switch (f.type) {
      case 'C': {
        const tag = safe(() => decodeCommandComplete(f.body), '');
        this.answered(this.current(), { rows: rowsFromTag(tag) });
        return f.raw;
      }
      case 'I':
        this.answered(this.current(), { rows: null });
        return f.raw;
      case 's':
        this.suspended(this.current());
        return f.raw;
      case 'E': {
        const fields = safe(() => decodeErrorFields(f.body), null);
        const msg = fields?.message ?? '';
        const i = this.denied.findIndex((d) => msg.includes(d.marker));
        if (i >= 0) {
          const d = this.denied[i]!;
          this.denied.splice(i, 1);
          return encodeError(d.error);
        }
        const inDb = fields ? refusedInDatabase(fields) : null;
        const text = this.pending[0] && this.pending[0].seq <= this.serverSeq ? this.pending[0].text : null;
        if (inDb) {
          // The server's event trigger refused DDL the statement ran (a DO block, EXECUTE, a function).
          this.answered(this.current(), { error: `${fields!.code}: refused in the database server: ${inDb.tag}: ${inDb.message}` });
          this.session.audit('postgres.refused_in_database', { tag: inDb.tag, message: inDb.message, statement: text === null ? null : redactStatement(text).slice(0, 500) });
          return f.raw;
        }
        this.answered(this.current(), { error: fields ? `${fields.code}: ${fields.message}` : 'error' });
        return f.raw;
      }
      case 'Z': {
        this.status = String.fromCharCode(f.body[0] ?? 73);
        const seq = this.serverSeq++;
        while (this.pending.length && this.pending[0]!.seq <= seq) {
          this.answered(this.pending.shift(), { error: 'not executed: an earlier statement in the same request failed' });
        }
        this.denied = this.denied.filter((d) => d.seq > seq);
        if (this.status === 'I') {
          // Outside a transaction block no portal survives (named ones end with their transaction).
          this.portals.clear();
          for (const name of [...this.running.keys()]) this.portalGone(name);
        }
        return f.raw;
      }
      default:
        return f.raw;
    }
  }
}

function safe<T, D>(fn: () => T, fallback: D): T | D {
  try { return fn(); } catch { return fallback; }
}

function printable(t: string): string {
  return /^[\x20-\x7e]$/.test(t) ? t : `\\x${t.charCodeAt(0).toString(16).padStart(2, '0')}`;
}
