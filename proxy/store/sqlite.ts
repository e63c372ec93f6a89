import Database from 'better-sqlite3';
import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type {
  Store, IdentityRecord, RequestRecord, ApprovalRecord, GrantRecord, BreakGlassReviewRecord,
  ConnectionSecretRecord, ApiTokenRecord, WebSessionRecord, IdpLinkRecord, PublicKeyRecord, LeaseRecord, SessionRecord,
  RecordingRecord, QueryLogRecord, AuditEventRecord, LockRecord, Page,
} from './types.js';

/** Query-log batching (see insertQuery). */
const QUERY_FLUSH_MS = 25;
const QUERY_FLUSH_ROWS = 500;
import { migrations, type ColumnKind, type TableSpec, tables } from './schema.js';

type Row = Record<string, unknown>;

function toDb(kind: ColumnKind, v: unknown): unknown {
  if (v === undefined || v === null) return null;
  if (kind === 'json') return JSON.stringify(v);
  if (kind === 'bool') return v ? 1 : 0;
  return v;
}

function fromDb(kind: ColumnKind, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (kind === 'json') return JSON.parse(String(v));
  if (kind === 'bool') return v === 1 || v === true;
  return v;
}

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

class Table<T extends object> {
  private insertStmt: Database.Statement;
  private updateStmt: Database.Statement;
  private getStmt: Database.Statement;
  constructor(private db: Database.Database, readonly spec: TableSpec) {
    const cols = Object.keys(spec.columns);
    this.insertStmt = db.prepare(`INSERT INTO ${spec.name} (${cols.map(snake).join(',')}) VALUES (${cols.map((c) => `@${c}`).join(',')})`);
    const upd = cols.filter((c) => c !== spec.pk);
    this.updateStmt = db.prepare(`UPDATE ${spec.name} SET ${upd.map((c) => `${snake(c)}=@${c}`).join(',')} WHERE ${snake(spec.pk)}=@${spec.pk}`);
    this.getStmt = db.prepare(`SELECT * FROM ${spec.name} WHERE ${snake(spec.pk)}=?`);
  }
  private params(rec: T): Row {
    const out: Row = {};
    for (const [c, kind] of Object.entries(this.spec.columns)) out[c] = toDb(kind, (rec as Row)[c]);
    return out;
  }
  row(r: Row | undefined): T | null {
    if (!r) return null;
    const out: Row = {};
    for (const [c, kind] of Object.entries(this.spec.columns)) out[c] = fromDb(kind, r[snake(c)]);
    return out as T;
  }
  insert(rec: T): void { this.insertStmt.run(this.params(rec)); }
  update(rec: T): void { this.updateStmt.run(this.params(rec)); }
  get(id: unknown): T | null { return this.row(this.getStmt.get(id) as Row | undefined); }
  /** where: column -> value (arrays become IN). extra: raw SQL conditions with params. */
  list(where: Row, opts: { order?: string; page?: Page; extra?: [string, unknown[]][] } = {}): T[] {
    const conds: string[] = [];
    const args: unknown[] = [];
    for (const [k, v] of Object.entries(where)) {
      if (v === undefined) continue;
      if (Array.isArray(v)) {
        conds.push(`${snake(k)} IN (${v.map(() => '?').join(',') || 'NULL'})`);
        args.push(...v.map((x) => toDb(this.spec.columns[k]!, x)));
      } else {
        conds.push(`${snake(k)} = ?`);
        args.push(toDb(this.spec.columns[k]!, v));
      }
    }
    for (const [sql, a] of opts.extra ?? []) { conds.push(sql); args.push(...a); }
    let sql = `SELECT * FROM ${this.spec.name}`;
    if (conds.length) sql += ` WHERE ${conds.join(' AND ')}`;
    if (opts.order) sql += ` ORDER BY ${opts.order}`;
    const limit = opts.page?.limit;
    if (limit !== undefined) { sql += ' LIMIT ? OFFSET ?'; args.push(limit, opts.page?.offset ?? 0); }
    return (this.db.prepare(sql).all(...args) as Row[]).map((r) => this.row(r)!);
  }
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  private db: Database.Database;
  private t: { [K in keyof typeof tables]: Table<any> };

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.t = {} as never;
    this.gateMethods();
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
    for (const [k, spec] of Object.entries(tables)) (this.t as Record<string, Table<object>>)[k] = new Table(this.db, spec);
  }

  async close(): Promise<void> {
    if (!this.db.open) return;
    this.flushQueryLog();
    this.db.close();
  }

  /**
   * better-sqlite3 is synchronous on one connection while our interface is async: while fn runs,
   * other callers' statements would land inside the open transaction. So transactions take turns,
   * and every call that does not come from inside the open transaction (its async context, tracked
   * with AsyncLocalStorage, so wrappers around the store still work) waits until it has committed
   * or rolled back.
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

  private gateMethods(): void {
    const proto = SqliteStore.prototype as unknown as Record<string, unknown>;
    const self = this as unknown as Record<string, unknown>;
    for (const name of Object.getOwnPropertyNames(SqliteStore.prototype)) {
      const fn = proto[name];
      if (typeof fn !== 'function' || ['constructor', 'transaction', 'migrate', 'close', 'gateMethods', 'inOpenTx', 'flushQueryLog', 'rawForTests'].includes(name)) continue;
      self[name] = async (...args: unknown[]) => {
        while (this.txOpen && !this.inOpenTx()) await this.txOpen;
        return (fn as (...a: unknown[]) => unknown).apply(this, args);
      };
    }
  }

  async upsertIdentity(rec: IdentityRecord): Promise<void> {
    const existing = this.t.identities.get(rec.sub) as IdentityRecord | null;
    if (existing) this.t.identities.update({ ...rec, firstSeen: existing.firstSeen });
    else this.t.identities.insert(rec);
  }
  async getIdentity(sub: string) { return this.t.identities.get(sub) as IdentityRecord | null; }
  async listIdentities() { return this.t.identities.list({}, { order: 'sub' }) as IdentityRecord[]; }

  async insertRequest(rec: RequestRecord) { this.t.requests.insert(rec); }
  async updateRequest(rec: RequestRecord) { this.t.requests.update(rec); }
  async getRequest(id: string) { return this.t.requests.get(id) as RequestRecord | null; }
  async listRequests(f: { requester?: string; state?: RequestRecord['state']; target?: string } & Page = {}) {
    return this.t.requests.list({ requester: f.requester, state: f.state, target: f.target }, { order: 'created_at DESC', page: f }) as RequestRecord[];
  }

  async insertApproval(rec: ApprovalRecord) { this.t.approvals.insert(rec); }
  async listApprovals(requestId: string) { return this.t.approvals.list({ requestId }, { order: 'at, id' }) as ApprovalRecord[]; }

  async insertGrant(rec: GrantRecord) { this.t.grants.insert(rec); }
  async updateGrant(rec: GrantRecord) { this.t.grants.update(rec); }
  async getGrant(id: string) { return this.t.grants.get(id) as GrantRecord | null; }
  async listGrants(f: { identity?: string; state?: GrantRecord['state']; target?: string } & Page = {}) {
    return this.t.grants.list({ identity: f.identity, state: f.state, target: f.target }, { order: 'created_at DESC', page: f }) as GrantRecord[];
  }

  async insertReview(rec: BreakGlassReviewRecord) { this.t.reviews.insert(rec); }
  async updateReview(rec: BreakGlassReviewRecord) { this.t.reviews.update(rec); }
  async getReview(id: string) { return this.t.reviews.get(id) as BreakGlassReviewRecord | null; }
  async listReviews(f: { state?: 'open' | 'closed' } = {}) { return this.t.reviews.list({ state: f.state }, { order: 'opened_at DESC' }) as BreakGlassReviewRecord[]; }

  async insertConnectionSecret(rec: ConnectionSecretRecord) { this.t.secrets.insert(rec); }
  async getConnectionSecretByHash(hash: string) { return (this.t.secrets.list({ hash })[0] ?? null) as ConnectionSecretRecord | null; }
  async useConnectionSecret(id: string, at: number) {
    const r = this.db.prepare(
      'UPDATE connection_secrets SET used_at = COALESCE(used_at, ?), uses = uses + 1 WHERE id = ? AND expires_at > ? AND (reusable = 1 OR uses = 0)',
    ).run(at, id, at);
    if (r.changes !== 1) return null;
    return this.t.secrets.get(id) as ConnectionSecretRecord;
  }
  async listConnectionSecrets(f: { identity?: string; grantId?: string; protocol?: string; unusedAt?: number }) {
    const extra: [string, unknown[]][] = [];
    if (f.unusedAt !== undefined) extra.push(['expires_at > ? AND (reusable = 1 OR uses = 0)', [f.unusedAt]]);
    return this.t.secrets.list({ identity: f.identity, grantId: f.grantId, protocol: f.protocol }, { order: 'created_at DESC', extra }) as ConnectionSecretRecord[];
  }

  async insertApiToken(rec: ApiTokenRecord) { this.t.tokens.insert(rec); }
  async getApiTokenByHash(hash: string) { return (this.t.tokens.list({ hash })[0] ?? null) as ApiTokenRecord | null; }
  async listApiTokens(identity: string) { return this.t.tokens.list({ identity }, { order: 'created_at DESC' }) as ApiTokenRecord[]; }
  async getApiToken(id: string) { return this.t.tokens.get(id) as ApiTokenRecord | null; }
  async updateApiToken(rec: ApiTokenRecord) { this.t.tokens.update(rec); }

  async insertIdpLink(rec: IdpLinkRecord) { this.t.idpLinks.insert(rec); }
  async updateIdpLink(rec: IdpLinkRecord) { this.t.idpLinks.update(rec); }
  async getIdpLink(id: string) { return this.t.idpLinks.get(id) as IdpLinkRecord | null; }
  async listIdpLinks(f: { identity?: string; state?: IdpLinkRecord['state']; validatedBefore?: number; liveAt?: number }) {
    const extra: [string, unknown[]][] = [];
    if (f.validatedBefore !== undefined) extra.push(['validated_at < ?', [f.validatedBefore]]);
    if (f.liveAt !== undefined) extra.push(['expires_at > ?', [f.liveAt]]);
    return this.t.idpLinks.list({ identity: f.identity, state: f.state }, { order: 'validated_at', extra }) as IdpLinkRecord[];
  }

  async insertWebSession(rec: WebSessionRecord) { this.t.webSessions.insert(rec); }
  async getWebSessionByHash(hash: string) { return (this.t.webSessions.list({ hash })[0] ?? null) as WebSessionRecord | null; }
  async updateWebSession(rec: WebSessionRecord) { this.t.webSessions.update(rec); }

  async insertPublicKey(rec: PublicKeyRecord) { this.t.publicKeys.insert(rec); }
  async listPublicKeys(f: { identity?: string; fingerprint?: string }) { return this.t.publicKeys.list({ identity: f.identity, fingerprint: f.fingerprint }, { order: 'created_at' }) as PublicKeyRecord[]; }
  async deletePublicKey(id: string) { this.db.prepare('DELETE FROM public_keys WHERE id = ?').run(id); }

  async insertLease(rec: LeaseRecord) { this.t.leases.insert(rec); }
  async updateLease(rec: LeaseRecord) { this.t.leases.update(rec); }
  async getLease(id: string) { return this.t.leases.get(id) as LeaseRecord | null; }
  async listLeases(f: { state?: LeaseRecord['state'][]; sessionId?: string; grantId?: string; target?: string } = {}) {
    return this.t.leases.list({ state: f.state, sessionId: f.sessionId, grantId: f.grantId, target: f.target }, { order: 'created_at' }) as LeaseRecord[];
  }

  async insertSession(rec: SessionRecord) { this.t.sessions.insert(rec); }
  async updateSession(rec: SessionRecord) { this.t.sessions.update(rec); }
  async getSession(id: string) { return this.t.sessions.get(id) as SessionRecord | null; }
  async listSessions(f: { state?: SessionRecord['state']; identity?: string; target?: string; grantId?: string; since?: number; until?: number } & Page = {}) {
    const extra: [string, unknown[]][] = [];
    if (f.since !== undefined) extra.push(['started_at >= ?', [f.since]]);
    if (f.until !== undefined) extra.push(['started_at <= ?', [f.until]]);
    return this.t.sessions.list({ state: f.state, identity: f.identity, target: f.target, grantId: f.grantId }, { order: 'started_at DESC', page: f, extra }) as SessionRecord[];
  }

  async insertRecording(rec: RecordingRecord) { this.t.recordings.insert(rec); }
  async updateRecording(rec: RecordingRecord) { this.t.recordings.update(rec); }
  async getRecording(id: string) { return this.t.recordings.get(id) as RecordingRecord | null; }
  async listRecordings(f: { sessionId?: string } = {}) { return this.t.recordings.list({ sessionId: f.sessionId }, { order: 'created_at' }) as RecordingRecord[]; }

  /**
   * The query log is the one hot write (a row per statement): rows are queued and written in one
   * transaction at most every QUERY_FLUSH_MS (or at QUERY_FLUSH_ROWS rows) instead of one commit
   * each — a commit per statement cost a single-client pgbench about 15% of the gateway's CPU.
   * Reads of the log and close() flush first; the session's NDJSON recording has the same rows.
   */
  private insertQueryStmt: Database.Statement | null = null;
  private queryQueue: QueryLogRecord[] = [];
  private queryFlushTimer: NodeJS.Timeout | null = null;
  async insertQuery(rec: QueryLogRecord) {
    this.queryQueue.push(rec);
    if (this.queryQueue.length >= QUERY_FLUSH_ROWS) setImmediate(() => this.flushQueryLog());
    else this.queryFlushTimer ??= setTimeout(() => this.flushQueryLog(), QUERY_FLUSH_MS).unref();
  }
  private flushQueryLog(): void {
    if (this.queryFlushTimer) { clearTimeout(this.queryFlushTimer); this.queryFlushTimer = null; }
    if (!this.queryQueue.length || !this.db.open) return;
    if (this.db.inTransaction && !this.inOpenTx()) {
      // Someone else's transaction is open: never mix the log into it; try again next turn.
      this.queryFlushTimer = setTimeout(() => this.flushQueryLog(), 0).unref();
      return;
    }
    const rows = this.queryQueue.splice(0);
    this.insertQueryStmt ??= this.db.prepare('INSERT INTO query_log (session_id, at, statement, kind, params, duration_ms, rows, error, decision) VALUES (?,?,?,?,?,?,?,?,?)');
    const stmt = this.insertQueryStmt;
    const write = () => { for (const r of rows) stmt.run(r.sessionId, r.at, r.statement, r.kind, r.params, r.durationMs, r.rows, r.error, r.decision); };
    if (this.db.inTransaction) write(); else this.db.transaction(write)();
  }
  async listQueries(sessionId: string, page: Page = {}) {
    this.flushQueryLog();
    return this.t.queries.list({ sessionId }, { order: 'id', page }) as QueryLogRecord[];
  }

  async appendAudit(rec: AuditEventRecord) { this.t.audit.insert(rec); }
  async setAuditMac(seq: number, mac: string) { this.db.prepare('UPDATE audit_events SET mac = ? WHERE seq = ? AND mac IS NULL').run(mac, seq); }
  async lastAudit() {
    return this.t.audit.row(this.db.prepare('SELECT * FROM audit_events ORDER BY seq DESC LIMIT 1').get() as Row | undefined) as AuditEventRecord | null;
  }
  async listAudit(f: { actor?: string; action?: string; subject?: string; since?: number; until?: number; afterSeq?: number } & Page = {}) {
    const extra: [string, unknown[]][] = [];
    if (f.since !== undefined) extra.push(['at >= ?', [f.since]]);
    if (f.until !== undefined) extra.push(['at <= ?', [f.until]]);
    if (f.afterSeq !== undefined) extra.push(['seq > ?', [f.afterSeq]]);
    if (f.action?.endsWith('*')) extra.push(['action LIKE ?', [f.action.slice(0, -1).replace(/[%_]/g, '') + '%']]);
    const action = f.action?.endsWith('*') ? undefined : f.action;
    return this.t.audit.list({ actor: f.actor, action, subject: f.subject }, { order: 'seq', page: f, extra }) as AuditEventRecord[];
  }

  async insertLock(rec: LockRecord) { this.t.locks.insert(rec); }
  async updateLock(rec: LockRecord) { this.t.locks.update(rec); }
  async listLocks(f: { active?: boolean; at?: number } = {}) {
    const extra: [string, unknown[]][] = [];
    if (f.active) extra.push(['removed_at IS NULL AND (expires_at IS NULL OR expires_at > ?)', [f.at ?? Date.now()]]);
    return this.t.locks.list({}, { order: 'created_at', extra }) as LockRecord[];
  }

  async getKv(key: string) {
    const r = this.db.prepare('SELECT value FROM kv WHERE key = ?').get(key) as { value: string } | undefined;
    return r?.value ?? null;
  }
  async setKv(key: string, value: string) {
    this.db.prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }
  async deleteKv(key: string) { this.db.prepare('DELETE FROM kv WHERE key = ?').run(key); }

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
