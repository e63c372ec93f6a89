/**
 * The PostgreSQL store: several gateways on one database (node-postgres, a pool). The statements
 * are the shared ones of sql.ts; here is what PostgreSQL does its own way:
 * - transactions are SERIALIZABLE and retried on a serialization failure (see Store.transaction);
 * - the audit append takes a transaction advisory lock, so one chain grows across every node;
 * - migrations (schema-postgres.ts) run under a session advisory lock, so nodes starting together
 *   apply each version once;
 * - the query log is written in multi-row INSERTs;
 * - text cannot hold U+0000: it is stored as U+FFFD (JSON columns keep it exactly, as `\u0000`).
 */
import pg from 'pg';
import type { Logger } from 'pino';
import type { Secret } from '../../auth/secret.js';
import type { Store, AuditEventRecord, AuditBatch, ControlEventRecord, StoreSubscription } from './types.js';
import type { ColumnKind } from './schema.js';
import { pgMigrations } from './schema-postgres.js';
import { QUERY_FLUSH_ROWS, QUERY_RETRY_MS, SqlStore, type Row } from './sql.js';

/** The NOTIFY channel of the control bus (kill, lock, revoke, grant end). */
export const CONTROL_CHANNEL = 'tollgate_control';
/** A NOTIFY payload stays under PostgreSQL's 8000-byte limit: larger events go as their seq only (listeners read the row). */
const NOTIFY_MAX_DATA = 6000;
/** The LISTEN connection reconnects after this long, doubling up to the maximum. */
const LISTEN_RETRY_MS = 100;
const LISTEN_RETRY_MAX_MS = 2_000;

/** The first key of every Tollgate advisory lock ("Toll"); the second names the lock. */
const LOCK_NS = 0x546f6c6c;
const LOCK_MIGRATE = 1;
const LOCK_AUDIT = 2;
/** How often a transaction runs at most when the database keeps aborting it as not serializable. */
const TX_ATTEMPTS = 10;
const RETRYABLE = new Set(['40001', '40P01']);
/** A query-log batch the database refused is tried again after this long; at most this many rows wait. */
/** The database ends a session idle inside a transaction this long. */
const IDLE_IN_TX_MS = 60_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** BIGINT columns hold epoch milliseconds and counters, well inside a double's exact range. */
const types = {
  getTypeParser: ((oid: number, format?: string) => (oid === pg.types.builtins.INT8
    ? (v: string) => Number(v)
    : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
};

const pgTexts = new Map<string, string>();
/** `?` placeholders → `$1, $2, …` (the shared statements never hold a `?` inside a literal). */
function pgText(sql: string): string {
  let t = pgTexts.get(sql);
  if (t === undefined) {
    let n = 0;
    t = sql.replace(/\?/g, () => `$${++n}`);
    if (pgTexts.size < 5_000) pgTexts.set(sql, t);
  }
  return t;
}

const param = (v: unknown) => (typeof v === 'string' && v.includes('\u0000') ? v.replaceAll('\u0000', '\uFFFD') : v);

/** Why the store could not be opened: a bad URL (says what is expected) or a failed connect/migrate (names the URL without its password). */
export class PgStoreError extends Error {
  constructor(readonly reason: 'url' | 'open', message: string) { super(message); this.name = 'PgStoreError'; }
}

/**
 * The store URL as it may be shown in logs and errors: no password, no query string. Throws a
 * PgStoreError saying what is expected (never echoing the value) when it is not a PostgreSQL URL.
 */
export function describePgUrl(url: string): string {
  let u: URL;
  try { u = new URL(url); } catch { throw new PgStoreError('url', 'a PostgreSQL URL such as postgres://tollgate:PASSWORD@db.example.com:5432/tollgate (the value is not a URL)'); }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new PgStoreError('url', 'a URL that starts with postgres:// or postgresql://');
  const who = u.username ? `${u.username}${u.password ? ':<secret>' : ''}@` : u.password ? ':<secret>@' : '';
  return `${u.protocol}//${who}${u.host}${u.pathname}${u.search ? '?…' : ''}`;
}

export interface PgStoreOptions {
  url: Secret;
  /** Connections in the pool (default 10). */
  poolSize?: number;
  /** Shown in pg_stat_activity (e.g. tollgate/gw1). */
  applicationName?: string;
  log?: Logger;
}

export class PgStore extends SqlStore {
  readonly kind = 'postgres';
  private readonly root: PgStore;
  /** A transaction handle whose transaction has ended refuses further calls. */
  private finished = false;
  private closed = false;
  private flushing: Promise<void> = Promise.resolve();
  private queryRetry: NodeJS.Timeout | null = null;

  constructor(private readonly pool: pg.Pool, private readonly log?: Logger, private readonly conn: pg.PoolClient | null = null, root?: PgStore,
    private readonly clientConfig?: pg.ClientConfig) {
    super();
    this.root = root ?? this;
  }

  encode(kind: ColumnKind, v: unknown): unknown {
    if (v === undefined || v === null) return null;
    if (kind === 'json') return JSON.stringify(v);
    if (kind === 'bool') return !!v;
    // A BIGINT column refuses a fraction; SQLite would keep it. Nothing writes one today.
    if (kind === 'int' && typeof v === 'number' && !Number.isInteger(v)) return Math.round(v);
    return v;
  }

  async query(sql: string, args: unknown[]): Promise<{ rows: Row[]; changes: number }> {
    if (this.finished) throw new Error('this transaction has ended: after transaction() returns, use the store, not its tx handle');
    const r = await (this.conn ?? this.pool).query({ text: pgText(sql), values: args.map(param) });
    return { rows: r.rows as Row[], changes: r.rowCount ?? 0 };
  }

  /** Run fn on one pooled connection, then give it back (destroyed when it failed mid-way). */
  private async withClient<T>(fn: (c: pg.PoolClient, broken: (e: unknown) => void) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    let bad: Error | undefined;
    // A connection that drops between two queries of fn (the store went away) emits 'error' on the
    // checked-out client, which the pool does not listen to: noted here (the query fails on its own), never an uncaught exception.
    const dropped = (e: Error) => { bad ??= e; };
    c.on('error', dropped);
    try {
      return await fn(c, (e) => { bad = e instanceof Error ? e : new Error(String(e)); });
    } finally {
      c.off('error', dropped);
      c.release(bad);
    }
  }

  /** ROLLBACK after a failure; a connection that cannot even do that is marked broken. */
  private static async rollback(c: pg.PoolClient, broken: (e: unknown) => void): Promise<void> {
    try { await c.query('ROLLBACK'); } catch (e) { broken(e); }
  }

  async migrate(): Promise<void> {
    await this.withClient(async (c, broken) => {
      await c.query(`SELECT pg_advisory_lock(${LOCK_NS}, ${LOCK_MIGRATE})`);
      try {
        await c.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
        const done = new Set((await c.query('SELECT version FROM schema_migrations')).rows.map((r: { version: number }) => Number(r.version)));
        for (const m of [...pgMigrations].sort((a, b) => a.version - b.version)) {
          if (done.has(m.version)) continue;
          await c.query('BEGIN');
          try {
            await c.query(m.sql);
            await c.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [m.version, Date.now()]);
            await c.query('COMMIT');
          } catch (e) {
            await PgStore.rollback(c, broken);
            throw new Error(`migration ${m.version} failed: ${(e as Error).message}`);
          }
        }
      } finally {
        await c.query(`SELECT pg_advisory_unlock(${LOCK_NS}, ${LOCK_MIGRATE})`).catch(broken);
      }
    });
  }

  async transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.conn) return fn(this);
    for (let attempt = 1; ; attempt++) {
      const retry = await this.withClient(async (c, broken) => {
        const tx = new PgStore(this.pool, this.log, c, this);
        try {
          await c.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
          const out = await fn(tx);
          await c.query('COMMIT');
          return { out };
        } catch (e) {
          await PgStore.rollback(c, broken);
          if (attempt < TX_ATTEMPTS && RETRYABLE.has((e as { code?: string }).code ?? '')) return null;
          throw e;
        } finally {
          tx.finished = true;
        }
      });
      if (retry) return retry.out;
      await sleep(Math.min(200, 2 ** attempt) + Math.random() * 10);
    }
  }

  /**
   * One READ COMMITTED transaction under an advisory lock: the last event is read after the lock is
   * held (a SERIALIZABLE snapshot would predate it), and the rows and the head are written in one
   * statement — three round trips for a whole batch.
   */
  async appendAudit(build: (last: AuditEventRecord | null) => AuditBatch): Promise<AuditEventRecord[]> {
    if (this.root !== this) return this.root.appendAudit(build);
    return this.withClient(async (c, broken) => {
      try {
        const res = await c.query(`BEGIN; SELECT pg_advisory_xact_lock(${LOCK_NS}, ${LOCK_AUDIT}); ${PgStore.LAST_AUDIT_SQL}`) as unknown as pg.QueryResult[];
        const batch = build(this.t.audit.row(res[2]!.rows[0] as Row | undefined) as AuditEventRecord | null);
        const audit = this.t.audit;
        const kv = this.t.kv;
        const rows = batch.events.map(() => `(${audit.cols.map(() => '?').join(',')})`).join(',');
        const insert = rows ? `${audit.insertSql.slice(0, audit.insertSql.indexOf(' VALUES '))} VALUES ${rows}` : '';
        const args = batch.events.flatMap((e) => audit.params(e));
        let sql = insert;
        if (batch.head) {
          sql = insert ? `WITH ins AS (${insert}) ${kv.upsertSql()}` : kv.upsertSql();
          args.push(...kv.params(batch.head));
        }
        if (sql) await c.query(pgText(sql), args.map(param));
        await c.query('COMMIT');
        return batch.events;
      } catch (e) {
        await PgStore.rollback(c, broken);
        throw e;
      }
    });
  }

  /** The row and its NOTIFY in one statement: the wake-up is sent when the row commits, never before. */
  override async appendControlEvent(e: Omit<ControlEventRecord, 'seq'>): Promise<ControlEventRecord> {
    const sql = `WITH ins AS (${SqlStore.CONTROL_INSERT_SQL}) SELECT ins.*, pg_notify('${CONTROL_CHANNEL}', CASE WHEN length(ins.data) <= ${NOTIFY_MAX_DATA}
      THEN json_build_object('seq', ins.seq, 'at', ins.at, 'origin', ins.origin, 'kind', ins.kind, 'data', ins.data)::text
      ELSE json_build_object('seq', ins.seq)::text END) AS notified FROM ins`;
    return this.t.controlEvents.row((await this.query(sql, this.controlParams(e))).rows[0]) as ControlEventRecord;
  }

  listenControl(h: { onPayload(payload: string): void; onConnect(): void; onError?(e: Error): void }): StoreSubscription {
    const root = this.root;
    let closed = false;
    let client: pg.Client | null = null;
    let timer: NodeJS.Timeout | null = null;
    let delay = LISTEN_RETRY_MS;
    const retry = (e: Error) => {
      h.onError?.(e);
      const c = client;
      client = null;
      c?.removeAllListeners();
      c?.on('error', () => undefined);
      void c?.end().catch(() => undefined);
      if (closed || timer) return;
      timer = setTimeout(() => { timer = null; void connect(); }, delay);
      timer.unref();
      delay = Math.min(delay * 2, LISTEN_RETRY_MAX_MS);
    };
    const connect = async () => {
      if (closed) return;
      const c = new pg.Client({ ...root.clientConfig, application_name: `${root.clientConfig?.application_name ?? 'tollgate'}/listen` });
      client = c;
      c.on('error', retry);
      c.on('end', () => { if (!closed && client === c) retry(new Error('the LISTEN connection ended')); });
      c.on('notification', (n) => { if (n.channel === CONTROL_CHANNEL && n.payload) h.onPayload(n.payload); });
      try {
        await c.connect();
        await c.query(`LISTEN ${CONTROL_CHANNEL}`);
        if (closed) { await c.end().catch(() => undefined); return; }
        delay = LISTEN_RETRY_MS;
        h.onConnect();
      } catch (e) {
        if (client === c) retry(e instanceof Error ? e : new Error(String(e)));
      }
    };
    void connect();
    return {
      close: async () => {
        closed = true;
        if (timer) clearTimeout(timer);
        const c = client;
        client = null;
        c?.removeAllListeners();
        c?.on('error', () => undefined);
        await c?.end().catch(() => undefined);
      },
    };
  }

  override async insertQuery(rec: Parameters<SqlStore['insertQuery']>[0]): Promise<void> {
    return this.root === this ? super.insertQuery(rec) : this.root.insertQuery(rec);
  }

  override async listQueries(sessionId: string, page?: Parameters<SqlStore['listQueries']>[1]) {
    if (this.root !== this) await this.root.flushQueryLog();
    return super.listQueries(sessionId, page);
  }

  /** Never rejects: a failed batch waits (bounded) and is tried again; the NDJSON recording has the rows too. */
  protected flushQueryLog(): Promise<void> {
    if (this.root !== this) return Promise.resolve();
    this.clearQueryFlushTimer();
    const p = this.flushing.then(() => this.writeQueued()).catch((e: unknown) => this.log?.error({ err: (e as Error).message }, 'PostgreSQL store: query-log flush failed'));
    this.flushing = p;
    return p;
  }

  private async writeQueued(): Promise<void> {
    while (this.queryQueue.length) {
      const rows = this.queryQueue.splice(0, QUERY_FLUSH_ROWS);
      try {
        await this.query(this.queryInsertSql(rows.length), rows.flatMap((r) => this.queryParams(r)));
      } catch (e) {
        const dropped = this.requeueQueries(rows);
        this.log?.error({ err: (e as Error).message, waiting: this.queryQueue.length, dropped }, 'PostgreSQL store: writing the query log failed; will retry');
        if (!this.closed) {
          this.queryRetry ??= setTimeout(() => { this.queryRetry = null; void this.flushQueryLog(); }, QUERY_RETRY_MS).unref();
        }
        return;
      }
    }
  }

  async close(): Promise<void> {
    if (this.root !== this || this.closed) return;
    await this.flushQueryLog();
    this.closed = true;
    if (this.queryRetry) clearTimeout(this.queryRetry);
    if (this.queryQueue.length) this.log?.error({ rows: this.queryQueue.length }, 'PostgreSQL store: closed with query-log rows not written');
    await this.pool.end();
  }

  /** For tests: run raw SQL (`?` placeholders) on the store's database. */
  async rawForTests(sql: string, ...args: unknown[]): Promise<Row[]> {
    return (await this.query(sql, args)).rows;
  }
}

/** Connect, migrate, and hand back the store; errors name the URL without its password. */
export async function openPostgresStore(o: PgStoreOptions): Promise<PgStore> {
  const url = o.url.reveal();
  const shown = describePgUrl(url);
  const password = (() => { try { return decodeURIComponent(new URL(url).password); } catch { return ''; } })();
  let pool: pg.Pool | null = null;
  try {
    const clientConfig: pg.ClientConfig = {
      connectionString: url, application_name: o.applicationName ?? 'tollgate', connectionTimeoutMillis: 10_000, types,
      // A transaction left open by a stuck process must not hold its locks (the audit lock) for ever.
      idle_in_transaction_session_timeout: IDLE_IN_TX_MS,
    };
    pool = new pg.Pool({ ...clientConfig, max: o.poolSize ?? 10, idleTimeoutMillis: 30_000 });
    pool.on('error', (e) => o.log?.error({ err: e.message }, 'PostgreSQL store: an idle connection failed'));
    const store = new PgStore(pool, o.log, null, undefined, clientConfig);
    await store.migrate();
    return store;
  } catch (e) {
    await pool?.end().catch(() => undefined);
    let msg = e instanceof Error ? e.message : String(e);
    if (password) msg = msg.replaceAll(password, '<secret>');
    throw new PgStoreError('open', `${shown}: ${msg}`);
  }
}
