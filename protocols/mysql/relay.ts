/**
 * The data path after authentication: packets are forwarded untouched in both directions; the
 * client's commands are decoded for policy (session.check) and recording, the server's responses
 * are followed to their end to count rows and errors. One command at a time (the protocol is
 * half-duplex); the client socket is paused while a response is outstanding, and each direction
 * waits for 'drain' when the other side is slow (backpressure, no unbounded buffers).
 */
import type { LiveSession, EndReason, RuleDecision } from '../types.js';
import type { StatementHandle, QueryRecorder } from '../../recorder/types.js';
import type { PacketConn } from './conn.js';
import { COM, CAP, MARIADB_CAP, Cursor, ER, ProtocolError, buildErr, buildOk, commandName, tg, type Packet, type ErrSpec } from './packets.js';
import { ResponseTracker, isLoadLocal, responseShape, splitSql, kindOf, type TrackerOptions } from './inspector.js';

/** COM_STMT_EXECUTE / COM_STMT_BULK_EXECUTE with this statement id mean the statement prepared last (MariaDB). */
const LAST_PREPARED = 0xffffffff;
/** COM_STMT_EXECUTE flags asking for a cursor (read-only, for update, scrollable). */
const CURSOR_FLAGS = 0x07;

interface Pending {
  tracker: ResponseTracker;
  /** The command being answered (for logs). */
  command: number;
  record: StatementHandle | null;
  /** For COM_STMT_PREPARE: the statement to remember under the id the server assigns. */
  prepare?: { text: string; kind: string };
  /** Last sequence id seen in this exchange (to number a synthesized packet). */
  seq: number;
}

const RANK = { allow: 0, alert: 1, deny: 2, kill: 3 } as const;

/**
 * A client's KILL [QUERY|CONNECTION] n names the id the gateway gave it, not the server's thread id.
 * killGatewayConnection runs the kill on the mapped thread when n is a connection of the same
 * identity on the same target (true), or says it is not one (false: the statement goes upstream).
 */
export type KillHook = (gatewayId: number, queryOnly: boolean) => Promise<boolean>;

export interface RelayOptions {
  killGatewayConnection?: KillHook;
  /** Called once when the relay ends (before the session end is reported). */
  onEnd?: () => void;
  session: LiveSession;
  client: PacketConn;
  upstream: PacketConn;
  clientCaps: number;
  /** MariaDB extended capabilities negotiated on both legs (the same on each). */
  extCaps?: number;
  allowLoadDataLocal: boolean;
}

export class MysqlRelay {
  private pending: Pending | null = null;
  private infile = false;
  private prepared = new Map<number, { text: string; kind: string; params: number }>();
  /** The id of the statement prepared last (what statement id -1 names). */
  private lastPrepared: number | null = null;
  private queries: QueryRecorder;
  private ending = false;
  private readonly tracking: TrackerOptions;
  private lastClientSeq = 0;

  constructor(private o: RelayOptions) {
    this.queries = o.session.recording.queries();
    this.tracking = {
      deprecateEof: !!(o.clientCaps & CAP.DEPRECATE_EOF),
      cacheMetadata: !!((o.extCaps ?? 0) & MARIADB_CAP.CACHE_METADATA),
    };
  }

  start() {
    const { client, upstream, session } = this.o;
    session.onWarning((message, msLeft) => {
      // MySQL cannot push a notice to an idle client: log and audit only.
      session.log.info({ msLeft }, 'mysql session warning (not deliverable in-protocol)');
      session.audit('mysql.warning', { message, msLeft });
    });
    client.onClose((err) => {
      if (err) session.log.debug({ err: err.message }, 'client connection error');
      if (err instanceof ProtocolError && !this.ending) this.sendErr(ER.NET_READ, tg(`malformed packet: ${err.message}`));
      if (err instanceof ProtocolError) this.finish({ code: 'error', message: `protocol violation: ${err.message}` });
      else this.finish({ code: 'client_exit', message: err ? `client connection lost: ${err.message}` : 'client disconnected' });
    });
    upstream.onClose((err) => {
      if (this.ending) return;
      this.sendErr(ER.CONNECTION_KILLED, 'Tollgate: the database closed the connection');
      this.finish({ code: err ? 'target_error' : 'target_closed', message: err ? `database connection failed: ${err.message}` : 'the database closed the connection' });
    });
    client.onChunkEnd = this.flush;
    upstream.onChunkEnd = this.flush;
    // Guarded: a throw while inspecting ends this session only (logged, audited), never the gateway.
    client.setHandler(session.guard((p) => this.fromClient(p)));
    upstream.setHandler(session.guard((p) => this.fromServer(p)));
  }

  /** Send an ERR to the client numbered as the answer to its current or next command. */
  private sendErr(spec: ErrSpec, message: string) {
    const seq = this.pending ? this.pending.seq + 1 : this.lastClientSeq + 1;
    this.o.client.send(buildErr(spec, message), seq);
  }

  /** The gateway ends the session (kill, lock, expiry, revoke): tell the client why, close both sides. */
  terminate(reason: EndReason) {
    if (this.ending) return;
    this.sendErr(ER.CONNECTION_KILLED, tg(reason.message));
    this.finish(reason);
  }

  private finish(reason: EndReason) {
    if (this.ending) return;
    this.ending = true;
    this.o.onEnd?.();
    this.flush();
    this.pending?.record?.finish({ error: `session ended: ${reason.message}` });
    this.pending = null;
    this.o.client.end();
    if (reason.code === 'client_exit') this.o.upstream.end();
    else this.o.upstream.destroy();
    void this.o.session.end(reason).catch((e) => this.o.session.log.error({ err: e }, 'session end failed'));
  }

  private upstreamFull = false;
  private clientFull = false;
  private pendingUp = 0;
  private pendingDown = 0;
  private flushScheduled = false;
  private corked: PacketConn[] = [];
  /** Query-log bookkeeping for answers already forwarded; run once those bytes are written. */
  private afterWrite: (() => void)[] = [];

  /**
   * Writes made while handling one chunk of packets leave in one batch (cork). The batch is flushed
   * when the chunk has been handled (PacketConn.onChunkEnd), with a next-tick fallback for writes
   * made outside a chunk; bytes are counted once per batch.
   */
  private batch(conn: PacketConn) {
    if (!this.corked.includes(conn)) {
      conn.sock.cork();
      this.corked.push(conn);
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flush);
    }
  }

  /**
   * Send what the batch holds, then do the recording work of the answers just sent: the client gets
   * its answer before the query log row is written, not after (the row is the same either way).
   */
  private flush = () => {
    this.flushScheduled = false;
    for (const c of this.corked.splice(0)) c.sock.uncork();
    this.flushBytes();
    if (this.afterWrite.length) for (const f of this.afterWrite.splice(0)) f();
    this.account();
  };

  /** Bytes both connections hold, as last reported to the session's buffer budget. */
  private held = 0;

  /** Report what the packet readers hold to the session's buffer budget (over it, the session ends: resource_limit). */
  private account() {
    if (this.ending) return;
    const now = this.o.client.buffered + this.o.upstream.buffered;
    const delta = now - this.held;
    this.held = now;
    if (delta) this.o.session.holdBytes(delta);
  }

  private flushBytes() {
    if (this.pendingUp || this.pendingDown) this.o.session.addBytes(this.pendingUp, this.pendingDown);
    this.pendingUp = 0;
    this.pendingDown = 0;
  }

  private forwardUp(p: Packet) {
    this.batch(this.o.upstream);
    this.pendingUp += p.raw.length;
    if (!this.o.upstream.writeRaw(p.raw) && !this.upstreamFull) {
      this.upstreamFull = true;
      this.o.client.pause();
      this.o.upstream.onDrain(() => {
        this.upstreamFull = false;
        if (!this.pending || this.infile) this.o.client.resume();
      });
    }
  }

  private forwardDown(p: Packet) {
    this.batch(this.o.client);
    this.pendingDown += p.raw.length;
    if (!this.o.client.writeRaw(p.raw) && !this.clientFull) {
      this.clientFull = true;
      this.o.upstream.pause();
      this.o.client.onDrain(() => {
        this.clientFull = false;
        this.o.upstream.resume();
      });
    }
  }

  private decide(stmts: { text: string; kind: string }[]): RuleDecision {
    let worst: RuleDecision = { action: 'allow', message: '' };
    for (const s of stmts) {
      const d = this.o.session.check(s.text, { kind: s.kind });
      if (RANK[d.action] > RANK[worst.action]) worst = d;
      if (worst.action === 'kill') break;
    }
    return worst;
  }

  /** Refuse a command without forwarding it: deny keeps the session, kill ends it. */
  private refuse(p: Packet, d: RuleDecision, record: StatementHandle | null, spec: ErrSpec = ER.SPECIFIC_ACCESS_DENIED) {
    const message = d.message || (d.action === 'kill' ? 'statement forbidden; session ended' : 'statement denied by policy');
    record?.finish({ error: message });
    if (d.action === 'kill') {
      this.o.client.send(buildErr(ER.CONNECTION_KILLED, tg(message)), p.lastSeq + 1);
      this.finish({ code: 'forbidden', message });
      return;
    }
    this.o.client.send(buildErr(spec, tg(message)), p.lastSeq + 1);
  }

  private fromClient(p: Packet) {
    if (this.ending) return;
    this.lastClientSeq = p.lastSeq;
    if (this.infile) {
      // LOCAL INFILE contents; an empty packet ends the file.
      this.forwardUp(p);
      if (this.pending) this.pending.seq = p.lastSeq;
      if (p.payload.length === 0) {
        this.infile = false;
        this.pending?.tracker.infileSent();
        this.o.client.pause();
      }
      return;
    }
    if (this.pending) {
      // Should not happen (client paused while busy); a pipelining client is refused.
      this.protocolViolation('client sent a command before the previous answer ended');
      return;
    }
    if (p.payload.length === 0) {
      this.protocolViolation('empty command packet');
      return;
    }
    const cmd = p.payload[0]!;
    try {
      this.command(cmd, p);
    } catch (e) {
      this.protocolViolation(`malformed command: ${(e as Error).message}`);
    }
  }

  private protocolViolation(message: string) {
    this.o.session.log.warn({ message }, 'mysql protocol violation from client');
    this.sendErr(ER.NET_READ, tg(message));
    this.finish({ code: 'error', message: `protocol violation: ${message}` });
  }

  private command(cmd: number, p: Packet) {
    const { session } = this.o;
    if (cmd === COM.QUIT) {
      this.o.upstream.writeRaw(p.raw); // a clean goodbye upstream too (no "aborted connection")
      this.finish({ code: 'client_exit', message: 'client quit' });
      return;
    }
    if (cmd === COM.CHANGE_USER) {
      // Never another account on this connection: the session user is the grant's, minted for it.
      // The connection stays as it was (the same user, database and session state).
      const asked = new Cursor(p.payload.subarray(1)).cstr('user name', true).toString('utf8').slice(0, 100);
      session.audit('mysql.change_user_refused', { user: asked });
      this.o.client.send(buildErr(ER.UNKNOWN_COM, 'Tollgate: COM_CHANGE_USER is not supported through the gateway; connect again with a new connection secret'), p.lastSeq + 1);
      return;
    }
    const shape = responseShape(cmd);
    if (!shape) {
      this.o.client.send(buildErr(ER.UNKNOWN_COM, `Tollgate: command 0x${cmd.toString(16)} is not supported through the gateway`), p.lastSeq + 1);
      return;
    }
    let record: StatementHandle | null = null;
    let prepare: Pending['prepare'];
    let cursor = false;
    if (cmd === COM.QUERY || cmd === COM.STMT_PREPARE) {
      const text = p.payload.subarray(1).toString('utf8');
      const stmts = splitSql(text);
      const kind = stmts[0]?.kind ?? '';
      let d = this.decide(stmts);
      let spec: ErrSpec = ER.SPECIFIC_ACCESS_DENIED;
      if (d.action !== 'kill' && !this.o.allowLoadDataLocal && stmts.some(isLoadLocal)) {
        d = { action: 'deny', message: 'LOAD DATA LOCAL is not allowed for this role' };
        spec = ER.NOT_ALLOWED_COMMAND;
      }
      if (cmd === COM.QUERY || d.action === 'deny' || d.action === 'kill') {
        record = this.queries.statement({ statement: text, kind, params: 0, decision: d.action });
      }
      if (d.action === 'deny' || d.action === 'kill') return this.refuse(p, d, record, spec);
      if (cmd === COM.STMT_PREPARE) prepare = { text, kind };
      const kill = cmd === COM.QUERY && stmts.length === 1 ? /^KILL\s+(?:(QUERY|CONNECTION)\s+)?(\d{1,10})$/i.exec(stmts[0]!.text) : null;
      if (kill && this.o.killGatewayConnection) return this.gatewayKill(p, Number(kill[2]), kill[1]?.toUpperCase() === 'QUERY', record);
    } else if (cmd === COM.STMT_EXECUTE || cmd === COM.STMT_BULK_EXECUTE) {
      const c = new Cursor(p.payload.subarray(1));
      let id = c.u32('statement id');
      if (cmd === COM.STMT_EXECUTE && c.left > 0) cursor = (c.u8('flags') & CURSOR_FLAGS) !== 0;
      if (id === LAST_PREPARED && this.lastPrepared !== null) id = this.lastPrepared;
      const st = this.prepared.get(id);
      record = this.queries.statement({ statement: st?.text ?? `(unknown prepared statement ${id})`, kind: st?.kind ?? null, params: st?.params ?? 0, decision: 'allow' });
    } else if (cmd === COM.STMT_FETCH) {
      // rows of a cursor a COM_STMT_EXECUTE opened: logged as a FETCH of that statement, with its rows
      const id = new Cursor(p.payload.subarray(1)).u32('statement id');
      const st = this.prepared.get(id);
      record = this.queries.statement({ statement: st?.text ?? `(unknown prepared statement ${id})`, kind: 'FETCH', params: 0, decision: 'allow' });
    } else if (cmd === COM.STMT_CLOSE) {
      const id = new Cursor(p.payload.subarray(1)).u32('statement id');
      this.prepared.delete(id);
      if (id === this.lastPrepared) this.lastPrepared = null;
    } else if (cmd === COM.INIT_DB) {
      const db = p.payload.subarray(1).toString('utf8');
      const text = `USE \`${db.replace(/`/g, '``')}\``;
      const d = this.decide([{ text, kind: 'USE' }]);
      record = this.queries.statement({ statement: text, kind: 'USE', params: 0, decision: d.action });
      if (d.action === 'deny' || d.action === 'kill') return this.refuse(p, d, record);
    } else if (cmd === COM.PROCESS_KILL) {
      const id = new Cursor(p.payload.subarray(1)).u32('connection id');
      const text = `KILL ${id}`;
      const d = this.decide([{ text, kind: kindOf(text) }]);
      record = this.queries.statement({ statement: text, kind: 'KILL', params: 0, decision: d.action });
      if (d.action === 'deny' || d.action === 'kill') return this.refuse(p, d, record);
      if (this.o.killGatewayConnection) return this.gatewayKill(p, id, false, record);
    } else if (cmd === COM.FIELD_LIST) {
      // old clients list columns this way; harmless metadata
    } else if (cmd === COM.RESET_CONNECTION) {
      this.prepared.clear();
      this.lastPrepared = null;
    }
    const tracker = new ResponseTracker(shape, { ...this.tracking, cursor });
    this.forwardUp(p);
    if (tracker.done) return; // no response expected (STMT_CLOSE, SEND_LONG_DATA)
    this.pending = { tracker, command: cmd, record, prepare, seq: p.lastSeq };
    this.o.client.pause();
    void session;
  }

  /** KILL of a gateway connection id: done by the gateway on the mapped server thread, or forwarded. */
  private gatewayKill(p: Packet, id: number, queryOnly: boolean, record: StatementHandle | null) {
    this.pending = { tracker: new ResponseTracker('single', this.tracking), command: COM.QUERY, record, seq: p.lastSeq };
    this.o.client.pause();
    this.o.killGatewayConnection!(id, queryOnly).then((handled) => {
      if (this.ending) return;
      if (!handled) {
        // not one of ours: the server answers (and decides whether the session user may)
        this.forwardUp(p);
        return;
      }
      this.pending = null;
      record?.finish({ rows: 0 });
      this.o.client.send(buildOk({ sessionTrack: !!(this.o.clientCaps & CAP.SESSION_TRACK) }), p.lastSeq + 1);
      this.o.client.resume();
    }, (e: Error) => {
      if (this.ending) return;
      this.pending = null;
      record?.finish({ error: e.message });
      this.o.client.send(buildErr(ER.UNKNOWN, tg(`KILL failed: ${e.message}`)), p.lastSeq + 1);
      this.o.client.resume();
    });
  }

  /**
   * The server sent something the inspector cannot follow: the client is told in its own protocol
   * (an ERR naming the gateway), the session ends as an error, and the log says where - command,
   * tracker state, packet number, header byte, length and offset - never the bytes themselves.
   */
  private cannotFollow(cur: Pending, p: Packet, e: Error) {
    const where = {
      command: commandName(cur.command),
      state: cur.tracker.state,
      packet: cur.tracker.packets,
      header: p.payload.length ? `0x${p.payload[0]!.toString(16).padStart(2, '0')}` : 'none',
      length: p.payload.length,
      offset: e instanceof ProtocolError ? e.offset ?? null : null,
    };
    this.o.session.log.warn({ ...where, err: e.message }, 'could not follow the server response');
    this.o.session.audit('mysql.unfollowable_response', where);
    const at = `packet ${where.packet} (header ${where.header}, ${where.length} bytes${where.offset !== null ? `, offset ${where.offset}` : ''})`;
    this.sendErr(ER.UNKNOWN, tg(`the gateway could not follow the database's answer to ${where.command} at ${at}: ${e.message}; the session ends`));
    this.finish({ code: 'error', message: `could not follow the database's answer to ${where.command}: ${e.message}` });
  }

  private fromServer(p: Packet) {
    if (this.ending) return;
    const cur = this.pending;
    if (!cur) {
      // The server speaks unprompted only to say goodbye (e.g. it killed the connection).
      this.forwardDown(p);
      this.finish({ code: 'target_closed', message: 'the database ended the connection' });
      return;
    }
    cur.seq = p.lastSeq;
    let r;
    try {
      r = cur.tracker.feed(p.payload);
    } catch (e) {
      this.cannotFollow(cur, p, e as Error);
      return;
    }
    if (r.localInfile && !this.o.allowLoadDataLocal) {
      // Defence in depth: upstream was told we cannot send files; never ask the client for one.
      this.sendErr(ER.NOT_ALLOWED_COMMAND, 'Tollgate: LOAD DATA LOCAL is not allowed for this role');
      this.finish({ code: 'error', message: 'the database asked for a LOCAL INFILE that is not allowed' });
      return;
    }
    this.forwardDown(p);
    if (r.localInfile) {
      this.infile = true;
      this.o.client.resume();
      return;
    }
    if (!r.done) return;
    const t = cur.tracker;
    this.pending = null;
    if (cur.prepare && t.stmtId !== null && !t.error) {
      this.prepared.set(t.stmtId, { text: cur.prepare.text, kind: cur.prepare.kind, params: t.params });
      this.lastPrepared = t.stmtId;
    }
    const { prepare, record } = cur;
    const result = { rows: t.sawResultSet ? t.rows : t.affected, error: t.error };
    this.afterWrite.push(() => {
      if (prepare && result.error) {
        this.queries.statement({ statement: prepare.text, kind: prepare.kind, params: 0, decision: 'allow' }).finish({ error: result.error });
      }
      record?.finish(result);
    });
    this.o.client.resume();
  }
}
