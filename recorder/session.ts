/**
 * One session's recording: files under <root>/<yyyy>/<mm>/<sessionId>/, each opened on first use,
 * indexed in the store, published on the live bus and sealed by close().
 */
import { createHash } from 'node:crypto';
import { basename, join } from 'node:path';
import type { Logger } from 'pino';
import type { Clock } from '../policies/clock.js';
import type { QueryLogRecord, Store } from '../proxy/store/types.js';
import type {
  CastOptions, CastRecorder, EventRecorder, QueryRecorder, ScreenRecorder, SessionRecording,
  StatementHandle, StatementStart,
} from './types.js';
import { CastWriter, NullCast } from './cast.js';
import type { MemoryLiveBus } from './live.js';
import { redactStatement } from './redact.js';
import { callStore, FileSink, type RecordingKind, type SinkContext } from './sink.js';

export interface SessionMeta {
  identity: string;
  target: string;
  role: string;
  protocol: string;
  startedAt: number;
}

export interface RecorderContext extends SinkContext {
  live: MemoryLiveBus;
}

/** Longest statement kept in the query log; longer ones are cut with a note. */
export const MAX_STATEMENT_CHARS = 64 * 1024;
const DECISIONS = new Set(['allow', 'deny', 'kill', 'alert']);

/** A file/dir name component that cannot escape its directory or confuse a shell. */
export function safeComponent(s: string, fallback: string): string {
  const cleaned = String(s ?? '').replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_').slice(0, 100);
  if (cleaned && cleaned === s) return cleaned;
  if (!cleaned) return fallback;
  // Different raw names must not collide after cleaning.
  return `${cleaned.slice(0, 80)}-${createHash('sha256').update(String(s)).digest('hex').slice(0, 8)}`;
}

/** JSON with the odd values a caller may pass (bigint, Buffer, cycles) made safe; Secret prints <secret>. */
export function safeJson(obj: Record<string, unknown>): string {
  // Without a replacer first (several times faster, and the usual case): a BigInt or a cycle
  // makes it throw, and then the careful paths below write the same line the replacer would.
  try {
    return JSON.stringify(obj);
  } catch { /* below */ }
  try {
    return JSON.stringify(obj, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  } catch {
    const flat: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(obj)) {
      try {
        flat[k] = JSON.parse(JSON.stringify(v, (_k2, v2: unknown) => (typeof v2 === 'bigint' ? v2.toString() : v2)) ?? 'null');
      } catch {
        flat[k] = '[unserializable]';
      }
    }
    return JSON.stringify(flat);
  }
}

/** {t, type, ...data} with t and type winning over same-named data keys. */
function line(t: number, type: string, data: Record<string, unknown> | null | undefined): Record<string, unknown> {
  const o: Record<string, unknown> = { t, type };
  if (data && typeof data === 'object') {
    for (const [k, v] of Object.entries(data)) if (k !== 't' && k !== 'type') o[k] = v;
  }
  return o;
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

interface OpenStatement {
  start: StatementStart;
  statement: string;
  at: number;
  finish(result: { rows?: number | null; error?: string | null }): void;
}

export class Session implements SessionRecording {
  readonly sessionId: string;
  readonly dirAbs: string;
  private names = new Set<string>();
  private sinks: FileSink[] = [];
  private casts: CastWriter[] = [];
  private pending = new Set<Promise<unknown>>();
  private openStatements = new Set<OpenStatement>();
  private querySink: FileSink | null | undefined;
  private eventSink: FileSink | null | undefined;
  private queryRec: QueryRecorder | null = null;
  private eventRec: EventRecorder | null = null;
  private closing: Promise<void> | null = null;

  constructor(private ctx: RecorderContext, sessionId: string, readonly meta: SessionMeta, private onClosed: () => void) {
    this.sessionId = sessionId;
    const d = new Date(Number.isFinite(meta.startedAt) ? meta.startedAt : ctx.clock.now());
    const yyyy = String(d.getUTCFullYear()).padStart(4, '0');
    const mm = String(d.getUTCMonth() + 1).padStart(2, '0');
    this.dirAbs = join(ctx.root, yyyy, mm, safeComponent(sessionId, 'session'));
  }

  get closed(): boolean {
    return this.closing !== null;
  }

  /** Seconds since the session started, for live frames and NDJSON lines. */
  private t(): number {
    return round6(Math.max(0, (this.ctx.clock.now() - this.meta.startedAt) / 1000));
  }

  private track(p: Promise<unknown>): void {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  private sink(kind: RecordingKind, base: string, ext: string): FileSink | null {
    const s = FileSink.create(this.ctx, this.sessionId, kind, this.dirAbs, base, ext, this.names);
    if (s) this.sinks.push(s);
    return s;
  }

  cast(opts: CastOptions): CastRecorder {
    if (this.closing) return new NullCast();
    const name = safeComponent(opts?.name ?? 'shell', 'shell');
    const sink = this.sink('cast', name, '.cast');
    if (!sink) return new NullCast();
    const title = `${this.meta.identity} → ${this.meta.target} (${this.meta.role})`;
    const castName = basename(sink.path, '.cast');
    const w = new CastWriter(sink, this.ctx.clock, opts ?? { width: 80, height: 24 }, title,
      (code, data) => this.ctx.live.publish(this.sessionId, { t: this.t(), type: code, data, cast: castName }),
      () => this.ctx.live.castClosed(this.sessionId, castName));
    this.casts.push(w);
    return w;
  }

  queries(): QueryRecorder {
    if (this.queryRec) return this.queryRec;
    this.queryRec = { statement: (s) => this.statement(s) };
    return this.queryRec;
  }

  private statement(s: StatementStart): StatementHandle {
    const noop: StatementHandle = { finish: () => {} };
    if (this.closing) return noop;
    s = s && typeof s === 'object' ? s : { statement: String(s ?? '') };
    let text = redactStatement(String(s.statement ?? ''));
    if (text.length > MAX_STATEMENT_CHARS) {
      text = `${text.slice(0, MAX_STATEMENT_CHARS)}… [${text.length - MAX_STATEMENT_CHARS} more characters not recorded]`;
    }
    const at = this.ctx.clock.now();
    let done = false;
    const open: OpenStatement = {
      start: s,
      statement: text,
      at,
      finish: (result) => {
        if (done) return;
        done = true;
        this.openStatements.delete(open);
        this.finishStatement(open, result ?? {});
      },
    };
    this.openStatements.add(open);
    return { finish: open.finish };
  }

  private finishStatement(open: OpenStatement, result: { rows?: number | null; error?: string | null }): void {
    const s = open.start;
    const rows = typeof result.rows === 'number' && Number.isFinite(result.rows) ? Math.trunc(result.rows) : null;
    const rec: QueryLogRecord = {
      sessionId: this.sessionId,
      at: open.at,
      statement: open.statement,
      kind: typeof s.kind === 'string' ? s.kind.slice(0, 64) : null,
      params: typeof s.params === 'number' && Number.isInteger(s.params) && s.params >= 0 ? s.params : 0,
      durationMs: Math.max(0, this.ctx.clock.now() - open.at),
      rows,
      error: result.error == null ? null : String(result.error).slice(0, 4096),
      decision: s.decision && DECISIONS.has(s.decision) ? s.decision : 'allow',
    };
    if (this.querySink === undefined) this.querySink = this.sink('queries', 'queries', '.ndjson');
    const t = this.t();
    const { sessionId: _sid, ...data } = rec;
    this.querySink?.appendLine(safeJson({ t, ...data }));
    this.ctx.live.publish(this.sessionId, { t, type: 'query', data });
    this.track(callStore(() => this.ctx.store.insertQuery(rec), (err) => {
      this.ctx.log.error({ sessionId: this.sessionId, err }, 'query log row cannot be stored');
    }));
  }

  events(): EventRecorder {
    if (this.eventRec) return this.eventRec;
    this.eventRec = {
      event: (type, data) => {
        if (this.closing) return;
        if (this.eventSink === undefined) this.eventSink = this.sink('events', 'events', '.ndjson');
        const t = this.t();
        const o = line(t, String(type), data);
        const text = safeJson(o);
        this.eventSink?.appendLine(text);
        const { t: _t, ...frame } = JSON.parse(text) as Record<string, unknown>;
        this.ctx.live.publish(this.sessionId, { t, type: 'event', data: frame });
      },
    };
    return this.eventRec;
  }

  screen(opts: { width: number; height: number }): ScreenRecorder {
    const nullScreen: ScreenRecorder = { write: () => {}, close: () => {} };
    if (this.closing) return nullScreen;
    const sink = this.sink('screen', 'screen', '.ndjson');
    if (!sink) return nullScreen;
    const write = (type: string, data: Record<string, unknown>) => {
      if (sink.sealed) return;
      const t = this.t();
      const text = safeJson(line(t, String(type), data));
      sink.appendLine(text);
      const { t: _t, ...frame } = JSON.parse(text) as Record<string, unknown>;
      this.ctx.live.publish(this.sessionId, { t, type: 'screen', data: frame });
    };
    const width = Number.isInteger(opts?.width) && opts.width > 0 ? opts.width : 0;
    const height = Number.isInteger(opts?.height) && opts.height > 0 ? opts.height : 0;
    write('header', { version: 1, width, height, timestamp: Math.floor(this.ctx.clock.now() / 1000) });
    sink.flush(); // on disk at once, as a cast's header
    return {
      write,
      close: () => { this.track(sink.seal()); },
    };
  }

  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    // Statements still running when the session ends are logged as such.
    for (const open of Array.from(this.openStatements)) open.finish({ error: 'unfinished: session ended' });
    for (const c of this.casts) this.track(c.closeAndSeal());
    for (const s of this.sinks) this.track(s.seal());
    while (this.pending.size) await Promise.allSettled(Array.from(this.pending));
    this.ctx.live.end(this.sessionId);
    this.onClosed();
  }
}
