import Database from 'better-sqlite3';
import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { GroupSync } from '../../auth/durable.js';
import type { Store, AuditEventRecord, AuditBatch } from './types.js';
import { migrations, type ColumnKind } from './schema.js';
import { QUERY_RETRY_MS, SqlStore, type Row } from './sql.js';

/** The embedded store: one SQLite file (WAL), better-sqlite3. The statements are in sql.ts. */
export class SqliteStore extends SqlStore {
  readonly kind = 'sqlite';
  private db: Database.Database;
  private stmts = new Map<string, Database.Statement>();
  /** The WAL's fsync after lease rows: off the event loop, one for a burst of leases. */
  private walSync: GroupSync | null;

  constructor(private readonly path: string) {
    super();
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.walSync = path === ':memory:' ? null : new GroupSync(`${path}-wal`);
  }

  /**
   * A lease row is what lets the reaper revoke a credential after a crash, and it is stored before
   * the credential exists: it must survive a power loss or a file system turned read-only, which
   * `synchronous = NORMAL` does not promise. So the WAL is fsynced once the row is committed
   * (fsync writes back every commit before it too); other rows keep NORMAL's speed. The fsync runs
   * in the thread pool, shared by the lease rows committed meanwhile (group commit).
   */
  override async insertLease(rec: Parameters<SqlStore['insertLease']>[0]): Promise<void> {
    await super.insertLease(rec);
    await this.walSync?.sync();
  }

  async migrate(): Promise<void> {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    const done = new Set((this.db.prepare('SELECT version FROM schema_migrations').all() as { version: number }[]).map((r) => r.version));
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      this.db.transaction(() => {
        this.db.exec(m.sql);
        this.db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(m.version, Date.now());
      })();
    }
  }

  async close(): Promise<void> {
    if (!this.db.open) return;
    this.flushQueryLog();
    this.clearQueryFlushTimer();
    this.db.close();
  }

  encode(kind: ColumnKind, v: unknown): unknown {
    if (v === undefined || v === null) return null;
    if (kind === 'json') return JSON.stringify(v);
    if (kind === 'bool') return v ? 1 : 0;
    if (typeof v === 'boolean') return v ? 1 : 0;
    return v;
  }

  private stmt(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (!s) { s = this.db.prepare(sql); this.stmts.set(sql, s); }
    return s;
  }

  private run(sql: string, args: unknown[]): { rows: Row[]; changes: number } {
    const s = this.stmt(sql);
    const bound = args.map((a) => (typeof a === 'boolean' ? (a ? 1 : 0) : a));
    if (s.reader) return { rows: s.all(...bound) as Row[], changes: 0 };
    return { rows: [], changes: s.run(...bound).changes };
  }

  /** Every statement runs synchronously when called, after any transaction of someone else has ended. */
  async query(sql: string, args: unknown[]): Promise<{ rows: Row[]; changes: number }> {
    while (this.txOpen && !this.inOpenTx()) await this.txOpen;
    return this.run(sql, args);
  }

  /**
   * better-sqlite3 is synchronous on one connection while our interface is async: while fn runs,
   * other callers' statements would land inside the open transaction. So transactions take turns,
   * and every statement that does not come from inside the open transaction (its async context,
   * tracked with AsyncLocalStorage, so wrappers around the store still work) waits until it has
   * committed or rolled back.
   */
  private txOpen: Promise<void> | null = null;
  private txToken: symbol | null = null;
  private txContext = new AsyncLocalStorage<symbol>();
  private txQueue: Promise<unknown> = Promise.resolve();

  private inOpenTx(): boolean {
    return this.txToken !== null && this.txContext.getStore() === this.txToken;
  }

  async transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    if (this.inOpenTx()) return fn(this);
    const run = async (): Promise<T> => {
      let release!: () => void;
      this.txOpen = new Promise<void>((r) => { release = r; });
      const token = Symbol('tx');
      this.txToken = token;
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const out = await this.txContext.run(token, () => fn(this));
        this.db.exec('COMMIT');
        return out;
      } catch (e) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw e;
      } finally {
        this.txToken = null;
        this.txOpen = null;
        release();
      }
    };
    const p = this.txQueue.then(run, run);
    this.txQueue = p.catch(() => undefined);
    return p;
  }

  /** One synchronous IMMEDIATE transaction: the write lock of the file serialises every appender, in any process. */
  async appendAudit(build: (last: AuditEventRecord | null) => AuditBatch): Promise<AuditEventRecord[]> {
    while (this.txOpen && !this.inOpenTx()) await this.txOpen;
    const audit = this.t.audit;
    const write = this.db.transaction(() => {
      const last = audit.row(this.run(SqliteStore.LAST_AUDIT_SQL, []).rows[0]) as AuditEventRecord | null;
      const batch = build(last);
      for (const e of batch.events) this.run(audit.insertSql, audit.params(e));
      if (batch.head) this.run(this.t.kv.upsertSql(), this.t.kv.params(batch.head));
      return batch.events;
    });
    return this.db.inTransaction ? write() : write.immediate();
  }

  /** Write the queued query-log rows (see SqlStore.insertQuery); never throws. */
  protected flushQueryLog(): void {
    this.clearQueryFlushTimer();
    if (!this.queryQueue.length || !this.db.open) return;
    if (this.db.inTransaction && !this.inOpenTx()) {
      // Someone else's transaction is open: never mix the log into it; try again next turn.
      this.queryFlushTimer = setTimeout(() => this.flushQueryLog(), 0).unref();
      return;
    }
    const rows = this.queryQueue.splice(0);
    // Multi-row INSERTs in power-of-two sizes up to 64 (a few cached statements, at most 7
    // statements per shape): per-statement overhead is most of a one-row insert's cost.
    const write = () => {
      let i = 0;
      for (let n = 64; n >= 1; n >>= 1) {
        for (; rows.length - i >= n; i += n) this.run(this.queryInsertSql(n), rows.slice(i, i + n).flatMap((r) => this.queryParams(r)));
      }
    };
    try {
      if (this.db.inTransaction) write(); else this.db.transaction(write)();
    } catch {
      // Never throws (it runs from timers, where a throw would end the process): a store that cannot
      // take the rows now (a full disk, a file system turned read-only) gets them again later,
      // bounded; the gateway's store guard learns of the failure from its own writes and probes.
      // The session's NDJSON recording has the rows too.
      this.requeueQueries(rows);
      if (this.db.open) this.queryFlushTimer ??= setTimeout(() => this.flushQueryLog(), QUERY_RETRY_MS).unref();
    }
  }

  /** For tests of tamper detection: run raw SQL against the file (never used by the gateway). */
  rawForTests(sql: string, ...args: unknown[]): unknown {
    return this.db.prepare(sql).run(...args);
  }
}

export async function openSqliteStore(path: string): Promise<Store> {
  const s = new SqliteStore(path);
  await s.migrate();
  return s;
}
