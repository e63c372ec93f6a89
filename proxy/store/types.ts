/**
 * The one store interface. SQLite (better-sqlite3) is the embedded default; PostgreSQL (node-postgres)
 * serves several gateways on one database. Both implement every method once, in store/sql.ts, over
 * the same table specs (store/schema.ts); only transactions, the audit append, the query-log flush
 * and migrations differ per dialect. Everything is async and speaks plain records: times are epoch
 * milliseconds, ids are strings, JSON-ish payloads are objects.
 */

/** queued: approved, waiting for an exclusively checked-out account to be checked in (then approved, with its grant). */
export type RequestState = 'pending' | 'approved' | 'queued' | 'denied' | 'expired' | 'cancelled';
export type GrantState = 'active' | 'expired' | 'revoked';
export type LeaseState = 'pending' | 'active' | 'revoking' | 'revoked' | 'failed';
export type SessionState = 'starting' | 'active' | 'ended';
export type LockScope = 'identity' | 'target' | 'grant';

export interface IdentityRecord {
  sub: string;
  email: string | null;
  name: string | null;
  groups: string[];
  firstSeen: number;
  lastSeen: number;
}

export interface ApprovalStage {
  /** Groups whose members may approve this stage. */
  groups: string[];
  /** Distinct approvers needed in this stage. */
  count: number;
}

export interface ApprovalRecord {
  id: string;
  requestId: string;
  stage: number;
  approver: string;
  decision: 'approve' | 'deny';
  comment: string | null;
  at: number;
  /** A delegate's decision: whose approval it stands for (the approver is the delegate). */
  onBehalfOf?: string | null;
}

export interface RequestRecord {
  id: string;
  requester: string;
  target: string;
  role: string;
  durationMs: number;
  reason: string;
  state: RequestState;
  risk: string;
  policy: string;
  /** The approval plan chosen when the request was filed (may grow by escalation). */
  stages: ApprovalStage[];
  /** Index of the stage waiting for approvals; equals stages.length when all are done. */
  currentStage: number;
  /** When the current stage times out (null: never). */
  stageDeadline: number | null;
  /** How many times the current request escalated. */
  escalations: number;
  mfaRequired: boolean;
  breakGlass: boolean;
  createdAt: number;
  decidedAt: number | null;
  decidedBy: string | null;
  decisionReason: string | null;
  grantId: string | null;
  /** An extension: the grant it lengthens once approved (the grant keeps its id). */
  extendsGrant?: string | null;
}

export interface GrantRecord {
  id: string;
  requestId: string | null;
  identity: string;
  target: string;
  role: string;
  state: GrantState;
  startsAt: number;
  expiresAt: number;
  breakGlass: boolean;
  createdAt: number;
  endedAt: number | null;
  endedBy: string | null;
  endReason: string | null;
  /** Whether any session ever ran under this grant (expired-unused grants are a health figure). */
  used: boolean;
  /** The end (expiresAt) the "grant.expiring" notice was sent for; an extension moves the end, and the notice comes again. */
  notifiedFor?: number | null;
}

export interface BreakGlassReviewRecord {
  id: string;
  grantId: string;
  identity: string;
  reason: string;
  state: 'open' | 'closed';
  openedAt: number;
  closedAt: number | null;
  closedBy: string | null;
  comment: string | null;
}

export interface ConnectionSecretRecord {
  id: string;
  /** SHA-256 (hex) of the secret; the secret itself is never stored. */
  hash: string;
  grantId: string;
  identity: string;
  target: string;
  role: string;
  protocol: string | null;
  reusable: boolean;
  createdAt: number;
  expiresAt: number;
  usedAt: number | null;
  uses: number;
  /**
   * Protocol-specific verifiers derived from the secret at issue time, for challenge-response
   * protocols that never see the secret itself (PostgreSQL SCRAM, mysql_native_password).
   * Produced by ProtocolModule.secretVerifiers; never the secret.
   */
  verifiers: Record<string, string>;
  /** The credential that asked for it ('token:<id>' or 'web:<id>'); null when issued by the gateway itself. */
  issuedBy?: string | null;
  /** The IdP link of that credential: the secret stops working when the link fails re-validation. */
  linkId?: string | null;
}

export interface ApiTokenRecord {
  id: string;
  /** SHA-256 (hex) of the token. */
  hash: string;
  identity: string;
  name: string;
  createdAt: number;
  expiresAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
  /** When the identity last proved MFA for the sign-in that created this token (null: never). */
  mfaAt: number | null;
  /** The IdP sign-in this token is re-validated with (null: created by the operator, not tied to the IdP). */
  linkId?: string | null;
}

export interface WebSessionRecord {
  id: string;
  /** SHA-256 (hex) of the cookie value. */
  hash: string;
  identity: string;
  createdAt: number;
  expiresAt: number;
  mfaAt: number | null;
  revokedAt: number | null;
  /** The IdP sign-in this session is re-validated with (null: made by the gateway itself, e.g. tests). */
  linkId?: string | null;
}

/**
 * One sign-in at the IdP that credentials (a web session, the API tokens made from it, a device
 * sign-in's token) are re-validated with. Its IdP tokens are stored only sealed with the gateway key.
 */
export interface IdpLinkRecord {
  id: string;
  identity: string;
  /** The IdP's refresh token, sealed (AES-256-GCM with the gateway key); null when none was issued. */
  refreshSealed: string | null;
  /** The IdP's access token, sealed, for userinfo when there is no refresh token. */
  accessSealed: string | null;
  accessExpiresAt: number | null;
  createdAt: number;
  /** Last time the IdP confirmed the identity and its groups. */
  validatedAt: number;
  /** Latest expiry among the credentials that depend on it: nothing to re-validate afterwards. */
  expiresAt: number;
  state: 'ok' | 'failed';
  failedAt: number | null;
  /** 'refused': the IdP said no (user disabled, refresh refused); 'unverifiable': nothing left to ask it with. */
  failKind: 'refused' | 'unverifiable' | null;
  failReason: string | null;
}

export interface PublicKeyRecord {
  id: string;
  identity: string;
  /** OpenSSH "type base64" form. */
  publicKey: string;
  fingerprint: string;
  name: string;
  createdAt: number;
}

export interface LeaseRecord {
  id: string;
  sessionId: string | null;
  grantId: string;
  target: string;
  /** Provisioner kind, e.g. 'linux-account', 'ssh-certificate', 'postgres-role'. */
  kind: string;
  state: LeaseState;
  /** What is needed to revoke it later (account name, serial...). Never a password. */
  data: Record<string, unknown>;
  createdAt: number;
  activatedAt: number | null;
  revokedAt: number | null;
  /** The last revoke's (or mint's) error; null once revoked. */
  error: string | null;
  /** Revokes tried so far (null or absent: none). */
  attempts?: number | null;
  /** When a failed revoke is tried again (backoff); null when none is due. */
  retryAt?: number | null;
}

export interface SessionRecord {
  id: string;
  grantId: string;
  identity: string;
  target: string;
  role: string;
  protocol: string;
  clientAddr: string | null;
  state: SessionState;
  startedAt: number;
  endedAt: number | null;
  endReason: string | null;
  bytesUp: number;
  bytesDown: number;
  /** Which gateway instance runs it (for the reaper with several gateways). */
  gatewayId: string;
}

export interface RecordingRecord {
  id: string;
  sessionId: string;
  /** 'cast' | 'queries' | 'events' | 'screen' | 'http'. */
  kind: string;
  path: string;
  state: 'open' | 'sealed';
  sha256: string | null;
  bytes: number;
  createdAt: number;
  sealedAt: number | null;
  /**
   * Why the recording stops before its session did, when it does: 'gateway_crash' (sealed at the next
   * start as it was on disk, at most the last flush interval lost), 'write_failed' (the disk refused a
   * write; what was written before is sealed). Null or absent: complete.
   */
  cut?: string | null;
}

export interface QueryLogRecord {
  id?: number;
  sessionId: string;
  at: number;
  statement: string;
  kind: string | null;
  params: number;
  durationMs: number | null;
  rows: number | null;
  error: string | null;
  decision: 'allow' | 'deny' | 'kill' | 'alert';
}

export interface AuditEventRecord {
  seq: number;
  at: number;
  actor: string;
  action: string;
  subject: string | null;
  data: Record<string, unknown>;
  prevHash: string;
  hash: string;
  /** HMAC-SHA-256 of the event's hash under the audit key (derived from the gateway key, kept outside the store). */
  mac: string | null;
}

export interface LockRecord {
  id: string;
  scope: LockScope;
  value: string;
  reason: string;
  createdBy: string;
  createdAt: number;
  expiresAt: number | null;
  removedAt: number | null;
  removedBy: string | null;
}

/**
 * One gateway process in the node registry (several nodes and worker processes on one store). It
 * heartbeats while it runs; a survivor that sees it silent for gateway.nodeTimeout claims it
 * ('lost'), ends its sessions and revokes their leases.
 */
export interface NodeRecord {
  /** gateway.id (worker processes: <id>/w<n>). */
  id: string;
  /** Random per start: a node that finds another incarnation (or 'lost') in its row was declared lost meanwhile. */
  incarnation: string;
  host: string | null;
  pid: number | null;
  /** host:port of its internal listener (mutual TLS), where other nodes stream its live sessions from; null: none. */
  internalAddr: string | null;
  state: NodeState;
  startedAt: number;
  /** The node's own wall clock at its last heartbeat (survivors judge silence by their own clock: an unchanged value). */
  heartbeatAt: number;
  lostAt: number | null;
  /** The node that claimed it lost and reaped it. */
  lostBy: string | null;
}

export type NodeState = 'up' | 'draining' | 'stopped' | 'lost';

/** One control-bus message (kill, lock, revoke, grant end), kept so a node that missed the wake-up catches up. */
export interface ControlEventRecord {
  seq: number;
  at: number;
  /** The node that published it (it has applied it already). */
  origin: string;
  kind: string;
  data: Record<string, unknown>;
}

/** A LISTEN connection of the PostgreSQL store (the control bus's wake-up). */
export interface StoreSubscription { close(): Promise<void> }
/** An approver's approvals handed to another approver for a time window. */
export interface DelegationRecord {
  id: string;
  delegator: string;
  delegate: string;
  startsAt: number;
  endsAt: number;
  reason: string;
  createdAt: number;
  createdBy: string;
  revokedAt: number | null;
  revokedBy: string | null;
}

/** An access review (recertification campaign) of one policy. */
export interface AccessReviewRecord {
  id: string;
  policy: string;
  /** open: lines wait for a decision; completed: every line is decided. */
  state: 'open' | 'completed';
  /** Groups whose members decide its lines. */
  reviewers: string[];
  /** Groups that become reviewers too when it is overdue. */
  escalateTo: string[];
  createdAt: number;
  /** 'system' for a scheduled review, else who started it. */
  createdBy: string;
  dueAt: number;
  escalatedAt: number | null;
  completedAt: number | null;
  scheduled: boolean;
}

export type ReviewLineKind = 'eligibility' | 'breakglass' | 'grant';

/** One line of an access review: an eligibility, a break-glass group member, or a grant longer than a day. */
export interface ReviewLineRecord {
  id: string;
  reviewId: string;
  kind: ReviewLineKind;
  identity: string;
  /** The policy (break-glass lines: 'break-glass'). */
  policy: string;
  grantId: string | null;
  /** What the reviewer sees: groups, targets, roles, the grant's times. */
  detail: Record<string, unknown>;
  decision: 'confirm' | 'revoke' | null;
  decidedBy: string | null;
  decidedAt: number | null;
  comment: string | null;
  /** The exclusion a revoked eligibility or break-glass line made. */
  exclusionId: string | null;
}

/**
 * A Tollgate-side exclusion: the identity is no longer eligible under a policy (scope 'policy') or
 * for break-glass (scope 'breakglass'), whatever the IdP's groups say.
 */
export interface ExclusionRecord {
  id: string;
  identity: string;
  scope: 'policy' | 'breakglass';
  policy: string | null;
  reason: string;
  createdAt: number;
  createdBy: string;
  reviewId: string | null;
  lineId: string | null;
  removedAt: number | null;
  removedBy: string | null;
}

export type DeliveryState = 'pending' | 'sending' | 'delivered' | 'failed';

/** One notification on its way to one recipient over one channel (the retry queue, proxy/notifications). */
export interface NotificationDeliveryRecord {
  id: string;
  /** 'email' or 'webhook:<name>'. */
  channel: string;
  /** What it is about (proxy/notifications/events.ts): request.pending, grant.expiring, … */
  topic: string;
  /** An email address, or the webhook's name. */
  recipient: string;
  /** What is sent: subject and texts, or the JSON body. Never a secret (keys and passwords come from the config at send time). */
  payload: Record<string, unknown>;
  state: DeliveryState;
  /** Attempts made so far. */
  attempts: number;
  /** When the next attempt is due (pending). */
  nextAt: number;
  createdAt: number;
  updatedAt: number;
  deliveredAt: number | null;
  lastError: string | null;
  /** The same key is enqueued once, whichever gateway notices first (null: no such key). */
  dedupe: string | null;
  /** The gateway sending it now, and until when its claim holds (a crash mid-send: another takes over afterwards). */
  claimedBy: string | null;
  claimedUntil: number | null;
}

/** How far one SIEM sink has acknowledged the audit stream, and which gateway streams to it now. */
export interface SiemCursorRecord {
  sink: string;
  /** The last audit seq the sink acknowledged (0: none yet). */
  seq: number;
  /** The gateway streaming to it, and until when that holds unless renewed. */
  holder: string | null;
  heldUntil: number | null;
  updatedAt: number;
  /** When the sink last acknowledged a batch. */
  ackAt: number | null;
  /** Failed attempts in a row, and the last failure. */
  failures: number;
  lastError: string | null;
  lastErrorAt: number | null;
}

/**
 * One target admin credential kept in the vault (proxy/vault.ts): sealed with AES-256-GCM under a
 * key derived from the gateway key (which lives outside the store), bound to its target and field.
 * The store never sees it in clear.
 */
export interface VaultCredentialRecord {
  /** `<target>/<field>` (vaultId in proxy/vault.ts). */
  id: string;
  target: string;
  /** Which credential of the target: `admin.password`, `admin.privateKey`. */
  field: string;
  /** The current credential, sealed. */
  sealed: string;
  /** A rotation in progress: the new credential, sealed before it is set on the target (a crash recovers from it). */
  pendingSealed: string | null;
  setAt: number;
  /** Who set it (an identity) or `system` (a rotation). */
  setBy: string;
  rotatedAt: number | null;
  /** When the next rotation is due (null: not scheduled); claimed forward by the node that rotates. */
  nextRotationAt: number | null;
  /** Failed rotations in a row, and the last one's reason (never a secret). */
  failures: number;
  lastFailure: string | null;
  lastFailureAt: number | null;
  /** Increases with every change of the credential. */
  version: number;
}

export interface Page { limit?: number; offset?: number }

/** The records `claim` can change, by table (the keys of `tables` in store/schema.ts). */
export interface ClaimableRecords {
  requests: RequestRecord;
  grants: GrantRecord;
  reviews: BreakGlassReviewRecord;
  leases: LeaseRecord;
  sessions: SessionRecord;
  locks: LockRecord;
  tokens: ApiTokenRecord;
  webSessions: WebSessionRecord;
  nodes: NodeRecord;
  delegations: DelegationRecord;
  accessReviews: AccessReviewRecord;
  reviewLines: ReviewLineRecord;
  exclusions: ExclusionRecord;
  deliveries: NotificationDeliveryRecord;
  siemCursors: SiemCursorRecord;
  vault: VaultCredentialRecord;
}

/** What the audit log computes from the chain's last event, inside the store's audit lock. */
export interface AuditBatch {
  /** The new events, in order: seq, prevHash, hash and mac already set from `last`. */
  events: AuditEventRecord[];
  /** A KV value written in the same transaction (the signed head of the chain). */
  head?: { key: string; value: string };
}

export interface Store {
  readonly kind: string;
  migrate(): Promise<void>;
  close(): Promise<void>;
  /**
   * Run fn atomically: all of its writes or none. Calls made through `tx` run in the transaction; a
   * transaction() inside fn joins it. The policy workflow relies on this to decide once: it reads a
   * request or grant, re-checks it inside the transaction and writes the outcome, so two decisions
   * on the same request (another approver, a timer, another gateway) never both apply.
   *
   * - SQLite: one writer at a time (`BEGIN IMMEDIATE`, so other processes on the file wait too).
   *   Transactions take turns in-process, and every call from outside fn's async context waits until
   *   it has committed or rolled back; calls from inside it (through `tx` or the store) run in it.
   *   fn runs once.
   * - PostgreSQL: SERIALIZABLE on one pooled connection, so concurrent transactions on any node
   *   behave as if run one after the other. When the database aborts one (serialization failure or
   *   deadlock, SQLSTATE 40001 / 40P01) it is rolled back and fn runs again from the start, a few
   *   times with a short backoff: fn must have no effect outside `tx` (re-read, re-check, write).
   *   Calls on the store itself, not `tx`, run meanwhile on other pool connections, outside it.
   *
   * Do not append audit events inside fn: appendAudit is its own transaction.
   */
  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T>;
  /**
   * Compare and set one row, atomically: `UPDATE <table> SET <set> WHERE pk = id AND <expect>`
   * (`null` in expect means IS NULL). Returns the updated record, or null when the row is gone or
   * no longer matches. This is how a timer fires once cluster-wide: every gateway arms it, each one
   * claims it when due (e.g. clears a request's `stageDeadline` where it still has the due value)
   * and only the one whose claim matched goes on; inside a transaction the claim rolls back with it.
   */
  claim<K extends keyof ClaimableRecords>(table: K, id: string, expect: Partial<ClaimableRecords[K]>, set: Partial<ClaimableRecords[K]>): Promise<ClaimableRecords[K] | null>;

  upsertIdentity(rec: IdentityRecord): Promise<void>;
  getIdentity(sub: string): Promise<IdentityRecord | null>;
  listIdentities(): Promise<IdentityRecord[]>;

  insertRequest(rec: RequestRecord): Promise<void>;
  updateRequest(rec: RequestRecord): Promise<void>;
  getRequest(id: string): Promise<RequestRecord | null>;
  listRequests(filter?: { requester?: string; state?: RequestState; target?: string } & Page): Promise<RequestRecord[]>;

  insertApproval(rec: ApprovalRecord): Promise<void>;
  listApprovals(requestId: string): Promise<ApprovalRecord[]>;

  insertGrant(rec: GrantRecord): Promise<void>;
  updateGrant(rec: GrantRecord): Promise<void>;
  getGrant(id: string): Promise<GrantRecord | null>;
  listGrants(filter?: { identity?: string; state?: GrantState; target?: string } & Page): Promise<GrantRecord[]>;

  insertReview(rec: BreakGlassReviewRecord): Promise<void>;
  updateReview(rec: BreakGlassReviewRecord): Promise<void>;
  getReview(id: string): Promise<BreakGlassReviewRecord | null>;
  listReviews(filter?: { state?: 'open' | 'closed' }): Promise<BreakGlassReviewRecord[]>;

  insertConnectionSecret(rec: ConnectionSecretRecord): Promise<void>;
  getConnectionSecretByHash(hash: string): Promise<ConnectionSecretRecord | null>;
  /** Atomically count one use; for single-use secrets only succeeds once. Returns the updated record or null. */
  useConnectionSecret(id: string, at: number): Promise<ConnectionSecretRecord | null>;
  listConnectionSecrets(filter: { identity?: string; grantId?: string; protocol?: string; unusedAt?: number }): Promise<ConnectionSecretRecord[]>;

  insertApiToken(rec: ApiTokenRecord): Promise<void>;
  getApiTokenByHash(hash: string): Promise<ApiTokenRecord | null>;
  listApiTokens(identity: string): Promise<ApiTokenRecord[]>;
  getApiToken(id: string): Promise<ApiTokenRecord | null>;
  updateApiToken(rec: ApiTokenRecord): Promise<void>;

  insertIdpLink(rec: IdpLinkRecord): Promise<void>;
  updateIdpLink(rec: IdpLinkRecord): Promise<void>;
  getIdpLink(id: string): Promise<IdpLinkRecord | null>;
  /** validatedBefore: last validated before this time; liveAt: still has credentials at this time. */
  listIdpLinks(filter: { identity?: string; state?: IdpLinkRecord['state']; validatedBefore?: number; liveAt?: number }): Promise<IdpLinkRecord[]>;

  insertWebSession(rec: WebSessionRecord): Promise<void>;
  getWebSessionByHash(hash: string): Promise<WebSessionRecord | null>;
  updateWebSession(rec: WebSessionRecord): Promise<void>;

  insertPublicKey(rec: PublicKeyRecord): Promise<void>;
  listPublicKeys(filter: { identity?: string; fingerprint?: string }): Promise<PublicKeyRecord[]>;
  deletePublicKey(id: string): Promise<void>;

  insertLease(rec: LeaseRecord): Promise<void>;
  updateLease(rec: LeaseRecord): Promise<void>;
  getLease(id: string): Promise<LeaseRecord | null>;
  listLeases(filter?: { state?: LeaseState[]; sessionId?: string; grantId?: string; target?: string }): Promise<LeaseRecord[]>;

  insertSession(rec: SessionRecord): Promise<void>;
  updateSession(rec: SessionRecord): Promise<void>;
  getSession(id: string): Promise<SessionRecord | null>;
  listSessions(filter?: { state?: SessionState; identity?: string; target?: string; grantId?: string; since?: number; until?: number } & Page): Promise<SessionRecord[]>;

  insertRecording(rec: RecordingRecord): Promise<void>;
  updateRecording(rec: RecordingRecord): Promise<void>;
  getRecording(id: string): Promise<RecordingRecord | null>;
  listRecordings(filter?: { sessionId?: string }): Promise<RecordingRecord[]>;

  /** Queue one query-log row: rows are written in batches (every 25 ms or 500 rows); listQueries and close flush first. */
  insertQuery(rec: QueryLogRecord): Promise<void>;
  listQueries(sessionId: string, page?: Page): Promise<QueryLogRecord[]>;

  /**
   * Append audit events as one operation: under a lock that every connection and gateway shares
   * (SQLite: the database write lock; PostgreSQL: a transaction advisory lock, read committed), read
   * the chain's last event, call build(last) — synchronous, no side effects, it may run again — and
   * insert what it returns, with its head KV value, in the same transaction. So seq and prevHash are
   * assigned atomically and the chain never forks, whoever appends. Returns the inserted events.
   */
  appendAudit(build: (last: AuditEventRecord | null) => AuditBatch): Promise<AuditEventRecord[]>;
  /** Key an event written before the audit log had a key (only where mac is still empty; once, when the key moves out of the store). */
  setAuditMac(seq: number, mac: string): Promise<void>;
  lastAudit(): Promise<AuditEventRecord | null>;
  listAudit(filter?: { actor?: string; action?: string | string[]; subject?: string; since?: number; until?: number; afterSeq?: number } & Page): Promise<AuditEventRecord[]>;

  insertLock(rec: LockRecord): Promise<void>;
  updateLock(rec: LockRecord): Promise<void>;
  listLocks(filter?: { active?: boolean; at?: number }): Promise<LockRecord[]>;

  /** The node registry: a node's row is written whole at its start; heartbeats and the lost claim go through claim('nodes', …). */
  upsertNode(rec: NodeRecord): Promise<void>;
  getNode(id: string): Promise<NodeRecord | null>;
  listNodes(): Promise<NodeRecord[]>;

  /**
   * Append a control-bus event (its seq comes from the store). PostgreSQL also sends it as a
   * NOTIFY on CONTROL_CHANNEL in the same statement (delivered at commit).
   */
  appendControlEvent(e: Omit<ControlEventRecord, 'seq'>): Promise<ControlEventRecord>;
  /** Events after seq, oldest first. */
  listControlEvents(afterSeq: number, limit?: number): Promise<ControlEventRecord[]>;
  /** The highest seq so far (0: none). */
  lastControlSeq(): Promise<number>;
  /** Forget events older than `before` (ms); how many. */
  pruneControlEvents(before: number): Promise<number>;
  /**
   * PostgreSQL only: LISTEN on CONTROL_CHANNEL on a connection of its own. onPayload gets each
   * NOTIFY payload; onConnect runs after every (re)connect (the bus catches up then). Reconnects by
   * itself until closed.
   */
  listenControl?(handlers: { onPayload(payload: string): void; onConnect(): void; onError?(e: Error): void }): StoreSubscription;
  insertDelegation(rec: DelegationRecord): Promise<void>;
  getDelegation(id: string): Promise<DelegationRecord | null>;
  /** activeAt: not revoked and the window contains this time; endsAfter: not revoked and not over by then. */
  listDelegations(filter?: { delegator?: string; delegate?: string; activeAt?: number; endsAfter?: number }): Promise<DelegationRecord[]>;

  insertAccessReview(rec: AccessReviewRecord): Promise<void>;
  updateAccessReview(rec: AccessReviewRecord): Promise<void>;
  getAccessReview(id: string): Promise<AccessReviewRecord | null>;
  listAccessReviews(filter?: { policy?: string; state?: AccessReviewRecord['state'] } & Page): Promise<AccessReviewRecord[]>;
  insertReviewLine(rec: ReviewLineRecord): Promise<void>;
  updateReviewLine(rec: ReviewLineRecord): Promise<void>;
  getReviewLine(id: string): Promise<ReviewLineRecord | null>;
  listReviewLines(reviewId: string): Promise<ReviewLineRecord[]>;

  insertExclusion(rec: ExclusionRecord): Promise<void>;
  updateExclusion(rec: ExclusionRecord): Promise<void>;
  getExclusion(id: string): Promise<ExclusionRecord | null>;
  listExclusions(filter?: { identity?: string; active?: boolean }): Promise<ExclusionRecord[]>;

  /** Queue a notification delivery; false when one with the same dedupe key exists already (nothing written). */
  enqueueDelivery(rec: NotificationDeliveryRecord): Promise<boolean>;
  getDelivery(id: string): Promise<NotificationDeliveryRecord | null>;
  /**
   * Deliveries, due first (by nextAt) or, with `recent`, last changed first. dueAt: pending ones due
   * by then; failing: tried at least once and not delivered; claimedBefore: claims that ran out by then.
   */
  listDeliveries(filter?: { state?: DeliveryState[]; dueAt?: number; failing?: boolean; claimedBefore?: number; recent?: boolean } & Page): Promise<NotificationDeliveryRecord[]>;
  /** How many deliveries are in each state. */
  countDeliveries(): Promise<Record<DeliveryState, number>>;
  /** Delete deliveries in a state last changed before `before` (retention); how many went. */
  deleteDeliveries(filter: { state: DeliveryState; before: number }): Promise<number>;

  /** Create a SIEM sink's cursor unless it exists (its first position). */
  ensureSiemCursor(rec: SiemCursorRecord): Promise<void>;
  getSiemCursor(sink: string): Promise<SiemCursorRecord | null>;
  listSiemCursors(): Promise<SiemCursorRecord[]>;

  /** Insert or replace a vault credential (whole row). */
  upsertVaultCredential(rec: VaultCredentialRecord): Promise<void>;
  getVaultCredential(id: string): Promise<VaultCredentialRecord | null>;
  /** By target; dueAt: rotations due by then (nextRotationAt set and not later). */
  listVaultCredentials(filter?: { target?: string; dueAt?: number }): Promise<VaultCredentialRecord[]>;
  deleteVaultCredential(id: string): Promise<void>;

  /** Small key/value space for gateway state (CA keys references, instance ids). */
  getKv(key: string): Promise<string | null>;
  setKv(key: string, value: string): Promise<void>;
  deleteKv(key: string): Promise<void>;
}
