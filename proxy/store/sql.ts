/**
 * The Store interface implemented once for every SQL dialect. Each method here is ONE statement
 * (written with `?` placeholders, portable between SQLite and PostgreSQL), so it is atomic on both
 * without a transaction. A dialect (sqlite.ts, postgres.ts) supplies how a statement runs, how a
 * boolean is bound, transactions, the audit append, the query-log flush and its migrations.
 *
 * Adding a store method: write it here over `this.t.<table>` (insert/update/upsert/get/list/delete)
 * or `this.query(sql, args)` with portable SQL (no `?` inside literals; booleans compared as
 * `(flag OR …)` or bound as parameters, never `= 1`), and add its migration to both dialects.
 */
import type {
  Store, IdentityRecord, RequestRecord, ApprovalRecord, GrantRecord, BreakGlassReviewRecord, ConnectionSecretRecord,
  ApiTokenRecord, WebSessionRecord, IdpLinkRecord, PublicKeyRecord, LeaseRecord, SessionRecord, RecordingRecord, QueryLogRecord,
  AuditEventRecord, AuditBatch, LockRecord, Page, ClaimableRecords, NodeRecord, ControlEventRecord, DelegationRecord, AccessReviewRecord, ReviewLineRecord,
  ExclusionRecord, NotificationDeliveryRecord, DeliveryState, SiemCursorRecord, VaultCredentialRecord,
} from './types.js';
import { tables, type ColumnKind, type TableSpec } from './schema.js';

export type Row = Record<string, unknown>;

/** Query-log batching (see insertQuery). */
export const QUERY_FLUSH_MS = 25;
export const QUERY_FLUSH_ROWS = 500;
/** A batch the store refused (unavailable) is tried again after this, keeping at most QUERY_BACKLOG_MAX rows. */
export const QUERY_RETRY_MS = 1_000;
export const QUERY_BACKLOG_MAX = 100 * QUERY_FLUSH_ROWS;

export const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const ident = (s: string) => `"${snake(s)}"`;

/** Rows come back alike from both drivers (the PostgreSQL pool parses BIGINT into numbers). */
export function decode(kind: ColumnKind, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (kind === 'json') return JSON.parse(String(v));
  if (kind === 'bool') return v === 1 || v === true;
  return v;
}

/** The largest magnitude a filter or page value may have (epoch ms and counters stay far below). */
const MAX_INT = Number.MAX_SAFE_INTEGER;

/**
 * A number from a filter (a query string, maybe): NaN matches nothing (as SQLite compares it), and
 * fractions round the way the comparison means, so both dialects answer alike and never fail.
 */
function filterInt(v: number, op: '>=' | '<=' | '>'): number | null {
  if (typeof v !== 'number' || Number.isNaN(v)) return null;
  const r = op === '>=' ? Math.ceil(v) : Math.floor(v);
  return Math.max(-MAX_INT, Math.min(MAX_INT, r));
}

export type Extra = [string, unknown[]];

/** A numeric condition on a column, or one that matches nothing for a value that is not a number. */
export function numCond(column: string, op: '>=' | '<=' | '>', v: number | undefined): Extra[] {
  if (v === undefined) return [];
  const n = filterInt(v, op);
  return n === null ? [['1 = 0', []]] : [[`${column} ${op} ?`, [n]]];
}

/** Generic statements over one table spec; values are bound through the store's dialect. */
export class Table<T extends object> {
  readonly cols: string[];
  readonly insertSql: string;
  private readonly updateCols: string[];
  private readonly updateSql: string;
  private readonly getSql: string;
  constructor(private readonly db: SqlStore, readonly spec: TableSpec) {
    this.cols = Object.keys(spec.columns);
    this.insertSql = `INSERT INTO ${spec.name} (${this.cols.map(ident).join(',')}) VALUES (${this.cols.map(() => '?').join(',')})`;
    this.updateCols = this.cols.filter((c) => c !== spec.pk);
    this.updateSql = `UPDATE ${spec.name} SET ${this.updateCols.map((c) => `${ident(c)}=?`).join(',')} WHERE ${ident(spec.pk)}=?`;
    this.getSql = `SELECT * FROM ${spec.name} WHERE ${ident(spec.pk)}=?`;
  }
  private enc(col: string, v: unknown): unknown {
    const kind = this.spec.columns[col];
    if (!kind) throw new Error(`${this.spec.name} has no column ${col}`);
    return this.db.encode(kind, v);
  }
  /** The insert parameters of a record, in column order. */
  params(rec: T): unknown[] { return this.cols.map((c) => this.enc(c, (rec as Row)[c])); }
  row(r: Row | undefined): T | null {
    if (!r) return null;
    const out: Row = {};
    for (const [c, kind] of Object.entries(this.spec.columns)) out[c] = decode(kind, r[snake(c)]);
    return out as T;
  }
  async insert(rec: T): Promise<void> { await this.db.query(this.insertSql, this.params(rec)); }
  async update(rec: T): Promise<void> {
    await this.db.query(this.updateSql, [...this.updateCols.map((c) => this.enc(c, (rec as Row)[c])), this.enc(this.spec.pk, (rec as Row)[this.spec.pk])]);
  }
  /** Insert, or update the existing row except for the `keep` columns (one statement; its parameters are params(rec)). */
  upsertSql(keep: string[] = []): string {
    const set = this.cols.filter((c) => c !== this.spec.pk && !keep.includes(c));
    return `${this.insertSql} ON CONFLICT (${ident(this.spec.pk)}) DO UPDATE SET ${set.map((c) => `${ident(c)} = excluded.${ident(c)}`).join(',')}`;
  }
  async upsert(rec: T, keep: string[] = []): Promise<void> { await this.db.query(this.upsertSql(keep), this.params(rec)); }
  async get(id: unknown): Promise<T | null> { return this.row((await this.db.query(this.getSql, [id])).rows[0]); }
  async delete(id: unknown): Promise<void> { await this.db.query(`DELETE FROM ${this.spec.name} WHERE ${ident(this.spec.pk)}=?`, [id]); }
  /** Compare and set: update `set` where the row still matches `expect`; the updated record or null. */
  async claim(id: string, expect: Row, set: Row): Promise<T | null> {
    const sets = Object.keys(set);
    if (!sets.length) throw new Error('claim: nothing to set');
    const conds: string[] = [];
    const args: unknown[] = sets.map((c) => this.enc(c, set[c]));
    for (const [c, v] of Object.entries(expect)) {
      if (v === undefined) continue;
      if (this.spec.columns[c] === 'json') throw new Error(`claim: cannot compare the JSON column ${c}`);
      if (v === null) conds.push(`${ident(c)} IS NULL`);
      else { conds.push(`${ident(c)} = ?`); args.push(this.enc(c, v)); }
    }
    args.push(id);
    const sql = `UPDATE ${this.spec.name} SET ${sets.map((c) => `${ident(c)} = ?`).join(', ')} WHERE ${conds.map((c) => `${c} AND `).join('')}${ident(this.spec.pk)} = ? RETURNING *`;
    return this.row((await this.db.query(sql, args)).rows[0]);
  }
  /** where: column -> value (arrays become IN). extra: raw SQL conditions with `?` params. */
  async list(where: Row, opts: { order?: string; page?: Page; extra?: Extra[] } = {}): Promise<T[]> {
    const conds: string[] = [];
    const args: unknown[] = [];
    for (const [k, v] of Object.entries(where)) {
      if (v === undefined) continue;
      if (Array.isArray(v)) {
        conds.push(v.length ? `${ident(k)} IN (${v.map(() => '?').join(',')})` : '1 = 0');
        args.push(...v.map((x) => this.enc(k, x)));
      } else {
        conds.push(`${ident(k)} = ?`);
        args.push(this.enc(k, v));
      }
    }
    for (const [sql, a] of opts.extra ?? []) { conds.push(sql); args.push(...a); }
    let sql = `SELECT * FROM ${this.spec.name}`;
    if (conds.length) sql += ` WHERE ${conds.join(' AND ')}`;
    if (opts.order) sql += ` ORDER BY ${opts.order}`;
    const page = pageOf(opts.page);
    if (page) { sql += ' LIMIT ? OFFSET ?'; args.push(page.limit, page.offset); }
    return (await this.db.query(sql, args)).rows.map((r) => this.row(r)!);
  }
}

/** A page from a caller: a negative, missing or non-numeric limit means no limit; offsets are whole and not negative. */
function pageOf(p: Page | undefined): { limit: number; offset: number } | null {
  const limit = p?.limit;
  if (typeof limit !== 'number' || !(limit >= 0)) return null;
  const offset = typeof p?.offset === 'number' && p.offset > 0 ? Math.min(Math.floor(p.offset), MAX_INT) : 0;
  return { limit: Math.min(Math.floor(limit), 2 ** 31 - 1), offset };
}

type Tables = { [K in keyof typeof tables]: Table<any> };

export abstract class SqlStore implements Store {
  abstract readonly kind: string;
  protected readonly t: Tables;

  constructor() {
    this.t = Object.fromEntries(Object.entries(tables).map(([k, spec]) => [k, new Table(this, spec)])) as Tables;
  }

  /** Run one statement written with `?` placeholders. */
  abstract query(sql: string, args: unknown[]): Promise<{ rows: Row[]; changes: number }>;
  /** A value as a statement parameter of a column of this kind. */
  abstract encode(kind: ColumnKind, v: unknown): unknown;
  abstract migrate(): Promise<void>;
  abstract close(): Promise<void>;
  abstract transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T>;
  abstract appendAudit(build: (last: AuditEventRecord | null) => AuditBatch): Promise<AuditEventRecord[]>;
  /** Write the queued query-log rows now. */
  protected abstract flushQueryLog(): void | Promise<void>;

  async claim<K extends keyof ClaimableRecords>(table: K, id: string, expect: Partial<ClaimableRecords[K]>, set: Partial<ClaimableRecords[K]>) {
    return (this.t[table] as Table<ClaimableRecords[K]>).claim(id, expect as Row, set as Row);
  }

  async upsertIdentity(rec: IdentityRecord) { await this.t.identities.upsert(rec, ['firstSeen']); }
  async getIdentity(sub: string) { return this.t.identities.get(sub) as Promise<IdentityRecord | null>; }
  async listIdentities() { return this.t.identities.list({}, { order: 'sub' }) as Promise<IdentityRecord[]>; }

  async insertRequest(rec: RequestRecord) { await this.t.requests.insert(rec); }
  async updateRequest(rec: RequestRecord) { await this.t.requests.update(rec); }
  async getRequest(id: string) { return this.t.requests.get(id) as Promise<RequestRecord | null>; }
  async listRequests(f: { requester?: string; state?: RequestRecord['state']; target?: string } & Page = {}) {
    return this.t.requests.list({ requester: f.requester, state: f.state, target: f.target }, { order: 'created_at DESC', page: f }) as Promise<RequestRecord[]>;
  }

  async insertApproval(rec: ApprovalRecord) { await this.t.approvals.insert(rec); }
  async listApprovals(requestId: string) { return this.t.approvals.list({ requestId }, { order: 'at, id' }) as Promise<ApprovalRecord[]>; }

  async insertGrant(rec: GrantRecord) { await this.t.grants.insert(rec); }
  async updateGrant(rec: GrantRecord) { await this.t.grants.update(rec); }
  async getGrant(id: string) { return this.t.grants.get(id) as Promise<GrantRecord | null>; }
  async listGrants(f: { identity?: string; state?: GrantRecord['state']; target?: string } & Page = {}) {
    return this.t.grants.list({ identity: f.identity, state: f.state, target: f.target }, { order: 'created_at DESC', page: f }) as Promise<GrantRecord[]>;
  }

  async insertReview(rec: BreakGlassReviewRecord) { await this.t.reviews.insert(rec); }
  async updateReview(rec: BreakGlassReviewRecord) { await this.t.reviews.update(rec); }
  async getReview(id: string) { return this.t.reviews.get(id) as Promise<BreakGlassReviewRecord | null>; }
  async listReviews(f: { state?: 'open' | 'closed' } = {}) { return this.t.reviews.list({ state: f.state }, { order: 'opened_at DESC' }) as Promise<BreakGlassReviewRecord[]>; }

  async insertConnectionSecret(rec: ConnectionSecretRecord) { await this.t.secrets.insert(rec); }
  async getConnectionSecretByHash(hash: string) { return ((await this.t.secrets.list({ hash }))[0] ?? null) as ConnectionSecretRecord | null; }
  /** One statement on every dialect, so exactly one consumer of a single-use secret wins, on any node. */
  async useConnectionSecret(id: string, at: number) {
    const r = await this.query(
      'UPDATE connection_secrets SET used_at = COALESCE(used_at, ?), uses = uses + 1 WHERE id = ? AND expires_at > ? AND (reusable OR uses = 0) RETURNING *',
      [at, id, at],
    );
    return this.t.secrets.row(r.rows[0]) as ConnectionSecretRecord | null;
  }
  async listConnectionSecrets(f: { identity?: string; grantId?: string; protocol?: string; unusedAt?: number }) {
    const extra: Extra[] = [];
    if (f.unusedAt !== undefined) extra.push(...numCond('expires_at', '>', f.unusedAt), ['(reusable OR uses = 0)', []]);
    return this.t.secrets.list({ identity: f.identity, grantId: f.grantId, protocol: f.protocol }, { order: 'created_at DESC', extra }) as Promise<ConnectionSecretRecord[]>;
  }

  async insertApiToken(rec: ApiTokenRecord) { await this.t.tokens.insert(rec); }
  async getApiTokenByHash(hash: string) { return ((await this.t.tokens.list({ hash }))[0] ?? null) as ApiTokenRecord | null; }
  async listApiTokens(identity: string) { return this.t.tokens.list({ identity }, { order: 'created_at DESC' }) as Promise<ApiTokenRecord[]>; }
  async getApiToken(id: string) { return this.t.tokens.get(id) as Promise<ApiTokenRecord | null>; }
  async updateApiToken(rec: ApiTokenRecord) { await this.t.tokens.update(rec); }

  async insertIdpLink(rec: IdpLinkRecord) { await this.t.idpLinks.insert(rec); }
  async updateIdpLink(rec: IdpLinkRecord) { await this.t.idpLinks.update(rec); }
  async getIdpLink(id: string) { return this.t.idpLinks.get(id) as Promise<IdpLinkRecord | null>; }
  async listIdpLinks(f: { identity?: string; state?: IdpLinkRecord['state']; validatedBefore?: number; liveAt?: number }) {
    const extra: Extra[] = [];
    if (f.validatedBefore !== undefined) extra.push(...numCond('validated_at', '<=', f.validatedBefore - 1));
    if (f.liveAt !== undefined) extra.push(...numCond('expires_at', '>', f.liveAt));
    return this.t.idpLinks.list({ identity: f.identity, state: f.state }, { order: 'validated_at', extra }) as Promise<IdpLinkRecord[]>;
  }

  async insertWebSession(rec: WebSessionRecord) { await this.t.webSessions.insert(rec); }
  async getWebSessionByHash(hash: string) { return ((await this.t.webSessions.list({ hash }))[0] ?? null) as WebSessionRecord | null; }
  async updateWebSession(rec: WebSessionRecord) { await this.t.webSessions.update(rec); }

  async insertPublicKey(rec: PublicKeyRecord) { await this.t.publicKeys.insert(rec); }
  async listPublicKeys(f: { identity?: string; fingerprint?: string }) {
    return this.t.publicKeys.list({ identity: f.identity, fingerprint: f.fingerprint }, { order: 'created_at' }) as Promise<PublicKeyRecord[]>;
  }
  async deletePublicKey(id: string) { await this.t.publicKeys.delete(id); }

  async insertLease(rec: LeaseRecord) { await this.t.leases.insert(rec); }
  async updateLease(rec: LeaseRecord) { await this.t.leases.update(rec); }
  async getLease(id: string) { return this.t.leases.get(id) as Promise<LeaseRecord | null>; }
  async listLeases(f: { state?: LeaseRecord['state'][]; sessionId?: string; grantId?: string; target?: string } = {}) {
    return this.t.leases.list({ state: f.state, sessionId: f.sessionId, grantId: f.grantId, target: f.target }, { order: 'created_at' }) as Promise<LeaseRecord[]>;
  }

  async insertSession(rec: SessionRecord) { await this.t.sessions.insert(rec); }
  async updateSession(rec: SessionRecord) { await this.t.sessions.update(rec); }
  async getSession(id: string) { return this.t.sessions.get(id) as Promise<SessionRecord | null>; }
  async listSessions(f: { state?: SessionRecord['state']; identity?: string; target?: string; grantId?: string; since?: number; until?: number } & Page = {}) {
    const extra = [...numCond('started_at', '>=', f.since), ...numCond('started_at', '<=', f.until)];
    return this.t.sessions.list({ state: f.state, identity: f.identity, target: f.target, grantId: f.grantId }, { order: 'started_at DESC', page: f, extra }) as Promise<SessionRecord[]>;
  }

  async insertRecording(rec: RecordingRecord) { await this.t.recordings.insert(rec); }
  async updateRecording(rec: RecordingRecord) { await this.t.recordings.update(rec); }
  async getRecording(id: string) { return this.t.recordings.get(id) as Promise<RecordingRecord | null>; }
  async listRecordings(f: { sessionId?: string } = {}) { return this.t.recordings.list({ sessionId: f.sessionId }, { order: 'created_at' }) as Promise<RecordingRecord[]>; }

  /**
   * The query log is the one hot write (a row per statement): rows are queued and written in one
   * statement or transaction at most every QUERY_FLUSH_MS (or at QUERY_FLUSH_ROWS rows) instead of
   * one commit each — a commit per statement cost a single-client pgbench about 15% of the
   * gateway's CPU. Reads of the log and close() flush first; the session's NDJSON recording has
   * the same rows.
   */
  protected queryQueue: QueryLogRecord[] = [];
  protected queryFlushTimer: NodeJS.Timeout | null = null;
  async insertQuery(rec: QueryLogRecord) {
    this.queryQueue.push(rec);
    if (this.queryQueue.length >= QUERY_FLUSH_ROWS) setImmediate(() => void this.flushQueryLog());
    else this.queryFlushTimer ??= setTimeout(() => void this.flushQueryLog(), QUERY_FLUSH_MS).unref();
  }
  /** Put rows the store refused back at the head of the queue (bounded: the oldest go first); returns how many were dropped. */
  protected requeueQueries(rows: QueryLogRecord[]): number {
    this.queryQueue.unshift(...rows);
    const dropped = Math.max(0, this.queryQueue.length - QUERY_BACKLOG_MAX);
    if (dropped > 0) this.queryQueue.splice(0, dropped);
    return dropped;
  }
  protected clearQueryFlushTimer(): void {
    if (this.queryFlushTimer) { clearTimeout(this.queryFlushTimer); this.queryFlushTimer = null; }
  }
  /** The columns a query-log row is written with (its id comes from the database). */
  protected static readonly QUERY_COLS = ['sessionId', 'at', 'statement', 'kind', 'params', 'durationMs', 'rows', 'error', 'decision'] as const;
  private readonly queryInsertSqls = new Map<number, string>();
  protected queryInsertSql(rows: number): string {
    let sql = this.queryInsertSqls.get(rows);
    if (sql === undefined) {
      const cols = SqlStore.QUERY_COLS;
      const one = `(${cols.map(() => '?').join(',')})`;
      sql = `INSERT INTO query_log (${cols.map(ident).join(',')}) VALUES ${Array.from({ length: rows }, () => one).join(',')}`;
      if (this.queryInsertSqls.size < 1024) this.queryInsertSqls.set(rows, sql);
    }
    return sql;
  }
  protected queryParams(r: QueryLogRecord): unknown[] { return SqlStore.QUERY_COLS.map((c) => this.encode(tables.queries.columns[c], r[c])); }
  async listQueries(sessionId: string, page: Page = {}) {
    await this.flushQueryLog();
    return this.t.queries.list({ sessionId }, { order: 'id', page }) as Promise<QueryLogRecord[]>;
  }

  /** Under the audit lock: the chain's last event, the batch from build, its rows and head (see Store.appendAudit). */
  protected static readonly LAST_AUDIT_SQL = 'SELECT * FROM audit_events ORDER BY seq DESC LIMIT 1';
  async setAuditMac(seq: number, mac: string) { await this.query('UPDATE audit_events SET mac = ? WHERE seq = ? AND mac IS NULL', [mac, seq]); }
  async lastAudit() { return this.t.audit.row((await this.query(SqlStore.LAST_AUDIT_SQL, [])).rows[0]) as AuditEventRecord | null; }
  async listAudit(f: { actor?: string; action?: string | string[]; subject?: string; since?: number; until?: number; afterSeq?: number } & Page = {}) {
    const extra = [...numCond('at', '>=', f.since), ...numCond('at', '<=', f.until), ...numCond('seq', '>', f.afterSeq)];
    // One name with a trailing * is a prefix; several names (a name and its old aliases) match any of them.
    const prefix = typeof f.action === 'string' && f.action.endsWith('*') ? f.action.slice(0, -1) : undefined;
    // A prefix match that means the same on both dialects (LIKE differs in case and escapes).
    if (prefix) extra.push(['substr(action, 1, ?) = ?', [prefix.length, prefix]]);
    return this.t.audit.list({ actor: f.actor, action: prefix !== undefined ? undefined : f.action, subject: f.subject }, { order: 'seq', page: f, extra }) as Promise<AuditEventRecord[]>;
  }

  async insertLock(rec: LockRecord) { await this.t.locks.insert(rec); }
  async updateLock(rec: LockRecord) { await this.t.locks.update(rec); }
  async listLocks(f: { active?: boolean; at?: number } = {}) {
    const extra: Extra[] = [];
    if (f.active) {
      const at = filterInt(f.at ?? Date.now(), '<=') ?? Date.now();
      extra.push(['removed_at IS NULL AND (expires_at IS NULL OR expires_at > ?)', [at]]);
    }
    return this.t.locks.list({}, { order: 'created_at', extra }) as Promise<LockRecord[]>;
  }

  async upsertNode(rec: NodeRecord) { await this.t.nodes.upsert(rec); }
  async getNode(id: string) { return this.t.nodes.get(id) as Promise<NodeRecord | null>; }
  async listNodes() { return this.t.nodes.list({}, { order: 'id' }) as Promise<NodeRecord[]>; }

  /** The INSERT of a control event, returning the row (PostgreSQL wraps it to NOTIFY too). */
  protected static readonly CONTROL_INSERT_SQL = 'INSERT INTO control_events (at, origin, kind, data) VALUES (?, ?, ?, ?) RETURNING *';
  protected controlParams(e: Omit<ControlEventRecord, 'seq'>): unknown[] {
    const c = tables.controlEvents.columns;
    return [this.encode(c.at, e.at), this.encode(c.origin, e.origin), this.encode(c.kind, e.kind), this.encode(c.data, e.data)];
  }
  async appendControlEvent(e: Omit<ControlEventRecord, 'seq'>) {
    return this.t.controlEvents.row((await this.query(SqlStore.CONTROL_INSERT_SQL, this.controlParams(e))).rows[0]) as ControlEventRecord;
  }
  async listControlEvents(afterSeq: number, limit = 1000) {
    return this.t.controlEvents.list({}, { order: 'seq', page: { limit }, extra: numCond('seq', '>', afterSeq) }) as Promise<ControlEventRecord[]>;
  }
  async lastControlSeq() {
    const r = (await this.query('SELECT MAX(seq) AS m FROM control_events', [])).rows[0];
    return Number(r?.['m'] ?? 0);
  }
  async pruneControlEvents(before: number) {
    return (await this.query('DELETE FROM control_events WHERE at < ?', [filterInt(before, '<=') ?? 0])).changes;
  }

  async insertDelegation(rec: DelegationRecord) { await this.t.delegations.insert(rec); }
  async getDelegation(id: string) { return this.t.delegations.get(id) as Promise<DelegationRecord | null>; }
  async listDelegations(f: { delegator?: string; delegate?: string; activeAt?: number; endsAfter?: number } = {}) {
    const extra: Extra[] = [];
    if (f.activeAt !== undefined) extra.push(['revoked_at IS NULL', []], ...numCond('starts_at', '<=', f.activeAt), ...numCond('ends_at', '>', f.activeAt));
    if (f.endsAfter !== undefined) extra.push(['revoked_at IS NULL', []], ...numCond('ends_at', '>', f.endsAfter));
    return this.t.delegations.list({ delegator: f.delegator, delegate: f.delegate }, { order: 'starts_at, id', extra }) as Promise<DelegationRecord[]>;
  }

  async insertAccessReview(rec: AccessReviewRecord) { await this.t.accessReviews.insert(rec); }
  async updateAccessReview(rec: AccessReviewRecord) { await this.t.accessReviews.update(rec); }
  async getAccessReview(id: string) { return this.t.accessReviews.get(id) as Promise<AccessReviewRecord | null>; }
  async listAccessReviews(f: { policy?: string; state?: AccessReviewRecord['state'] } & Page = {}) {
    return this.t.accessReviews.list({ policy: f.policy, state: f.state }, { order: 'created_at DESC, id', page: f }) as Promise<AccessReviewRecord[]>;
  }
  async insertReviewLine(rec: ReviewLineRecord) { await this.t.reviewLines.insert(rec); }
  async updateReviewLine(rec: ReviewLineRecord) { await this.t.reviewLines.update(rec); }
  async getReviewLine(id: string) { return this.t.reviewLines.get(id) as Promise<ReviewLineRecord | null>; }
  async listReviewLines(reviewId: string) { return this.t.reviewLines.list({ reviewId }, { order: 'kind, identity, id' }) as Promise<ReviewLineRecord[]>; }

  async insertExclusion(rec: ExclusionRecord) { await this.t.exclusions.insert(rec); }
  async updateExclusion(rec: ExclusionRecord) { await this.t.exclusions.update(rec); }
  async getExclusion(id: string) { return this.t.exclusions.get(id) as Promise<ExclusionRecord | null>; }
  async listExclusions(f: { identity?: string; active?: boolean } = {}) {
    return this.t.exclusions.list({ identity: f.identity }, { order: 'created_at, id', extra: f.active ? [['removed_at IS NULL', []]] : [] }) as Promise<ExclusionRecord[]>;
  }

  /** ON CONFLICT DO NOTHING: a second row with the same dedupe key (or id) is dropped, on both dialects. */
  async enqueueDelivery(rec: NotificationDeliveryRecord) {
    return (await this.query(`${this.t.deliveries.insertSql} ON CONFLICT DO NOTHING`, this.t.deliveries.params(rec))).changes > 0;
  }
  async getDelivery(id: string) { return this.t.deliveries.get(id) as Promise<NotificationDeliveryRecord | null>; }
  async listDeliveries(f: { state?: DeliveryState[]; dueAt?: number; failing?: boolean; claimedBefore?: number; recent?: boolean } & Page = {}) {
    const extra = [...numCond('next_at', '<=', f.dueAt), ...numCond('claimed_until', '<=', f.claimedBefore)];
    if (f.failing) extra.push(['attempts > 0', []]);
    return this.t.deliveries.list({ state: f.state }, { order: f.recent ? 'updated_at DESC, id' : 'next_at, created_at, id', page: f, extra }) as Promise<NotificationDeliveryRecord[]>;
  }
  async countDeliveries() {
    const out: Record<DeliveryState, number> = { pending: 0, sending: 0, delivered: 0, failed: 0 };
    for (const r of (await this.query('SELECT state, COUNT(*) AS n FROM notification_deliveries GROUP BY state', [])).rows) {
      if (String(r['state']) in out) out[String(r['state']) as DeliveryState] = Number(r['n']);
    }
    return out;
  }
  async deleteDeliveries(f: { state: DeliveryState; before: number }) {
    const cond = numCond('updated_at', '<=', f.before - 1)[0]!;
    return (await this.query(`DELETE FROM notification_deliveries WHERE state = ? AND ${cond[0]}`, [f.state, ...cond[1]])).changes;
  }

  async ensureSiemCursor(rec: SiemCursorRecord) { await this.query(`${this.t.siemCursors.insertSql} ON CONFLICT DO NOTHING`, this.t.siemCursors.params(rec)); }
  async getSiemCursor(sink: string) { return this.t.siemCursors.get(sink) as Promise<SiemCursorRecord | null>; }
  async listSiemCursors() { return this.t.siemCursors.list({}, { order: 'sink' }) as Promise<SiemCursorRecord[]>; }

  async upsertVaultCredential(rec: VaultCredentialRecord) { await this.t.vault.upsert(rec); }
  async getVaultCredential(id: string) { return this.t.vault.get(id) as Promise<VaultCredentialRecord | null>; }
  async listVaultCredentials(f: { target?: string; dueAt?: number } = {}) {
    const extra = f.dueAt !== undefined ? [['next_rotation_at IS NOT NULL', []] as Extra, ...numCond('next_rotation_at', '<=', f.dueAt)] : [];
    return this.t.vault.list({ target: f.target }, { order: 'target, field', extra }) as Promise<VaultCredentialRecord[]>;
  }
  async deleteVaultCredential(id: string) { await this.t.vault.delete(id); }

  async getKv(key: string) { return ((await this.t.kv.get(key)) as { value: string } | null)?.value ?? null; }
  async setKv(key: string, value: string) { await this.t.kv.upsert({ key, value }); }
  async deleteKv(key: string) { await this.t.kv.delete(key); }
}
