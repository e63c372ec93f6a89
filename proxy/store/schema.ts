/**
 * The schema, shared by every store: `tables` maps record fields (camelCase) to columns
 * (snake_case) and is what the generic statements of store/sql.ts are built from. `migrations` is
 * the SQLite dialect; schema-postgres.ts holds the PostgreSQL twin of every version (the store
 * contract test fails until both have the same versions and the same columns). A new version is
 * appended to both, never edited.
 */
export type ColumnKind = 'text' | 'int' | 'json' | 'bool';
export interface TableSpec { name: string; pk: string; columns: Record<string, ColumnKind> }

export const tables = {
  identities: { name: 'identities', pk: 'sub', columns: { sub: 'text', email: 'text', name: 'text', groups: 'json', firstSeen: 'int', lastSeen: 'int' } },
  requests: {
    name: 'requests', pk: 'id', columns: {
      id: 'text', requester: 'text', target: 'text', role: 'text', durationMs: 'int', reason: 'text', state: 'text', risk: 'text',
      policy: 'text', stages: 'json', currentStage: 'int', stageDeadline: 'int', escalations: 'int', mfaRequired: 'bool',
      breakGlass: 'bool', createdAt: 'int', decidedAt: 'int', decidedBy: 'text', decisionReason: 'text', grantId: 'text', extendsGrant: 'text',
    },
  },
  approvals: { name: 'approvals', pk: 'id', columns: { id: 'text', requestId: 'text', stage: 'int', approver: 'text', decision: 'text', comment: 'text', at: 'int', onBehalfOf: 'text' } },
  grants: {
    name: 'grants', pk: 'id', columns: {
      id: 'text', requestId: 'text', identity: 'text', target: 'text', role: 'text', state: 'text', startsAt: 'int', expiresAt: 'int',
      breakGlass: 'bool', createdAt: 'int', endedAt: 'int', endedBy: 'text', endReason: 'text', used: 'bool', notifiedFor: 'int',
    },
  },
  reviews: {
    name: 'breakglass_reviews', pk: 'id', columns: {
      id: 'text', grantId: 'text', identity: 'text', reason: 'text', state: 'text', openedAt: 'int', closedAt: 'int', closedBy: 'text', comment: 'text',
    },
  },
  secrets: {
    name: 'connection_secrets', pk: 'id', columns: {
      id: 'text', hash: 'text', grantId: 'text', identity: 'text', target: 'text', role: 'text', protocol: 'text', reusable: 'bool',
      createdAt: 'int', expiresAt: 'int', usedAt: 'int', uses: 'int', verifiers: 'json', issuedBy: 'text', linkId: 'text',
    },
  },
  tokens: {
    name: 'api_tokens', pk: 'id', columns: {
      id: 'text', hash: 'text', identity: 'text', name: 'text', createdAt: 'int', expiresAt: 'int', lastUsedAt: 'int', revokedAt: 'int', mfaAt: 'int', linkId: 'text',
    },
  },
  webSessions: { name: 'web_sessions', pk: 'id', columns: { id: 'text', hash: 'text', identity: 'text', createdAt: 'int', expiresAt: 'int', mfaAt: 'int', revokedAt: 'int', linkId: 'text' } },
  idpLinks: {
    name: 'idp_links', pk: 'id', columns: {
      id: 'text', identity: 'text', refreshSealed: 'text', accessSealed: 'text', accessExpiresAt: 'int', createdAt: 'int', validatedAt: 'int',
      expiresAt: 'int', state: 'text', failedAt: 'int', failKind: 'text', failReason: 'text',
    },
  },
  publicKeys: { name: 'public_keys', pk: 'id', columns: { id: 'text', identity: 'text', publicKey: 'text', fingerprint: 'text', name: 'text', createdAt: 'int' } },
  leases: {
    name: 'leases', pk: 'id', columns: {
      id: 'text', sessionId: 'text', grantId: 'text', target: 'text', kind: 'text', state: 'text', data: 'json', createdAt: 'int',
      activatedAt: 'int', revokedAt: 'int', error: 'text', attempts: 'int', retryAt: 'int',
    },
  },
  sessions: {
    name: 'sessions', pk: 'id', columns: {
      id: 'text', grantId: 'text', identity: 'text', target: 'text', role: 'text', protocol: 'text', clientAddr: 'text', state: 'text',
      startedAt: 'int', endedAt: 'int', endReason: 'text', bytesUp: 'int', bytesDown: 'int', gatewayId: 'text',
    },
  },
  recordings: {
    name: 'recordings', pk: 'id', columns: {
      id: 'text', sessionId: 'text', kind: 'text', path: 'text', state: 'text', sha256: 'text', bytes: 'int', createdAt: 'int', sealedAt: 'int', cut: 'text',
    },
  },
  queries: {
    name: 'query_log', pk: 'id', columns: {
      id: 'int', sessionId: 'text', at: 'int', statement: 'text', kind: 'text', params: 'int', durationMs: 'int', rows: 'int', error: 'text', decision: 'text',
    },
  },
  audit: { name: 'audit_events', pk: 'seq', columns: { seq: 'int', at: 'int', actor: 'text', action: 'text', subject: 'text', data: 'json', prevHash: 'text', hash: 'text', mac: 'text' } },
  locks: {
    name: 'locks', pk: 'id', columns: {
      id: 'text', scope: 'text', value: 'text', reason: 'text', createdBy: 'text', createdAt: 'int', expiresAt: 'int', removedAt: 'int', removedBy: 'text',
    },
  },
  kv: { name: 'kv', pk: 'key', columns: { key: 'text', value: 'text' } },
  nodes: {
    name: 'nodes', pk: 'id', columns: {
      id: 'text', incarnation: 'text', host: 'text', pid: 'int', internalAddr: 'text', state: 'text', startedAt: 'int', heartbeatAt: 'int',
      lostAt: 'int', lostBy: 'text',
    },
  },
  controlEvents: { name: 'control_events', pk: 'seq', columns: { seq: 'int', at: 'int', origin: 'text', kind: 'text', data: 'json' } },
  delegations: {
    name: 'delegations', pk: 'id', columns: {
      id: 'text', delegator: 'text', delegate: 'text', startsAt: 'int', endsAt: 'int', reason: 'text', createdAt: 'int', createdBy: 'text',
      revokedAt: 'int', revokedBy: 'text',
    },
  },
  accessReviews: {
    name: 'access_reviews', pk: 'id', columns: {
      id: 'text', policy: 'text', state: 'text', reviewers: 'json', escalateTo: 'json', createdAt: 'int', createdBy: 'text', dueAt: 'int',
      escalatedAt: 'int', completedAt: 'int', scheduled: 'bool',
    },
  },
  reviewLines: {
    name: 'access_review_lines', pk: 'id', columns: {
      id: 'text', reviewId: 'text', kind: 'text', identity: 'text', policy: 'text', grantId: 'text', detail: 'json', decision: 'text',
      decidedBy: 'text', decidedAt: 'int', comment: 'text', exclusionId: 'text',
    },
  },
  exclusions: {
    name: 'exclusions', pk: 'id', columns: {
      id: 'text', identity: 'text', scope: 'text', policy: 'text', reason: 'text', createdAt: 'int', createdBy: 'text', reviewId: 'text',
      lineId: 'text', removedAt: 'int', removedBy: 'text',
    },
  },
  deliveries: {
    name: 'notification_deliveries', pk: 'id', columns: {
      id: 'text', channel: 'text', topic: 'text', recipient: 'text', payload: 'json', state: 'text', attempts: 'int', nextAt: 'int',
      createdAt: 'int', updatedAt: 'int', deliveredAt: 'int', lastError: 'text', dedupe: 'text', claimedBy: 'text', claimedUntil: 'int',
    },
  },
  siemCursors: {
    name: 'siem_cursors', pk: 'sink', columns: {
      sink: 'text', seq: 'int', holder: 'text', heldUntil: 'int', updatedAt: 'int', ackAt: 'int', failures: 'int', lastError: 'text', lastErrorAt: 'int',
    },
  },
  vault: {
    name: 'vault_credentials', pk: 'id', columns: {
      id: 'text', target: 'text', field: 'text', sealed: 'text', pendingSealed: 'text', setAt: 'int', setBy: 'text', rotatedAt: 'int',
      nextRotationAt: 'int', failures: 'int', lastFailure: 'text', lastFailureAt: 'int', version: 'int',
    },
  },
} satisfies Record<string, TableSpec>;

/** One schema version in one SQL dialect. */
export interface Migration { version: number; sql: string }

/** The SQLite dialect (INTEGER epochs and booleans, JSON as TEXT). */
export const migrations: Migration[] = [
  {
    version: 1,
    sql: `
CREATE TABLE identities (sub TEXT PRIMARY KEY, email TEXT, name TEXT, groups TEXT NOT NULL, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL);
CREATE TABLE requests (
  id TEXT PRIMARY KEY, requester TEXT NOT NULL, target TEXT NOT NULL, role TEXT NOT NULL, duration_ms INTEGER NOT NULL, reason TEXT NOT NULL,
  state TEXT NOT NULL, risk TEXT NOT NULL, policy TEXT NOT NULL, stages TEXT NOT NULL, current_stage INTEGER NOT NULL, stage_deadline INTEGER,
  escalations INTEGER NOT NULL DEFAULT 0, mfa_required INTEGER NOT NULL, break_glass INTEGER NOT NULL, created_at INTEGER NOT NULL,
  decided_at INTEGER, decided_by TEXT, decision_reason TEXT, grant_id TEXT);
CREATE INDEX requests_state ON requests(state);
CREATE INDEX requests_requester ON requests(requester);
CREATE TABLE approvals (id TEXT PRIMARY KEY, request_id TEXT NOT NULL REFERENCES requests(id), stage INTEGER NOT NULL, approver TEXT NOT NULL,
  decision TEXT NOT NULL, comment TEXT, at INTEGER NOT NULL, UNIQUE (request_id, approver));
CREATE TABLE grants (
  id TEXT PRIMARY KEY, request_id TEXT, identity TEXT NOT NULL, target TEXT NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL,
  starts_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, break_glass INTEGER NOT NULL, created_at INTEGER NOT NULL,
  ended_at INTEGER, ended_by TEXT, end_reason TEXT, used INTEGER NOT NULL DEFAULT 0);
CREATE INDEX grants_identity ON grants(identity, state);
CREATE UNIQUE INDEX grants_request ON grants(request_id) WHERE request_id IS NOT NULL;
CREATE TABLE breakglass_reviews (id TEXT PRIMARY KEY, grant_id TEXT NOT NULL, identity TEXT NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL,
  opened_at INTEGER NOT NULL, closed_at INTEGER, closed_by TEXT, comment TEXT);
CREATE TABLE connection_secrets (
  id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, grant_id TEXT NOT NULL, identity TEXT NOT NULL, target TEXT NOT NULL, role TEXT NOT NULL,
  protocol TEXT, reusable INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER, uses INTEGER NOT NULL DEFAULT 0,
  verifiers TEXT NOT NULL DEFAULT '{}');
CREATE INDEX connection_secrets_target ON connection_secrets(target, expires_at);
CREATE TABLE api_tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, identity TEXT NOT NULL, name TEXT NOT NULL, created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, last_used_at INTEGER, revoked_at INTEGER, mfa_at INTEGER);
CREATE TABLE web_sessions (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, identity TEXT NOT NULL, created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, mfa_at INTEGER, revoked_at INTEGER);
CREATE TABLE public_keys (id TEXT PRIMARY KEY, identity TEXT NOT NULL, public_key TEXT NOT NULL, fingerprint TEXT NOT NULL UNIQUE, name TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE leases (
  id TEXT PRIMARY KEY, session_id TEXT, grant_id TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL,
  created_at INTEGER NOT NULL, activated_at INTEGER, revoked_at INTEGER, error TEXT);
CREATE INDEX leases_state ON leases(state);
CREATE TABLE sessions (
  id TEXT PRIMARY KEY, grant_id TEXT NOT NULL, identity TEXT NOT NULL, target TEXT NOT NULL, role TEXT NOT NULL, protocol TEXT NOT NULL,
  client_addr TEXT, state TEXT NOT NULL, started_at INTEGER NOT NULL, ended_at INTEGER, end_reason TEXT, bytes_up INTEGER NOT NULL DEFAULT 0,
  bytes_down INTEGER NOT NULL DEFAULT 0, gateway_id TEXT NOT NULL);
CREATE INDEX sessions_state ON sessions(state);
CREATE TABLE recordings (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL,
  sha256 TEXT, bytes INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, sealed_at INTEGER);
CREATE INDEX recordings_session ON recordings(session_id);
CREATE TABLE query_log (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, at INTEGER NOT NULL, statement TEXT NOT NULL, kind TEXT,
  params INTEGER NOT NULL DEFAULT 0, duration_ms INTEGER, rows INTEGER, error TEXT, decision TEXT NOT NULL);
CREATE INDEX query_log_session ON query_log(session_id, id);
CREATE TABLE audit_events (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, subject TEXT,
  data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX audit_action ON audit_events(action);
CREATE TABLE locks (id TEXT PRIMARY KEY, scope TEXT NOT NULL, value TEXT NOT NULL, reason TEXT NOT NULL, created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL, expires_at INTEGER, removed_at INTEGER, removed_by TEXT);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`,
  },
  {
    // Identity lifecycle: IdP links (sealed refresh tokens) for re-validation; which credential issued a secret.
    version: 2,
    sql: `
CREATE TABLE idp_links (id TEXT PRIMARY KEY, identity TEXT NOT NULL, refresh_sealed TEXT, access_sealed TEXT, access_expires_at INTEGER,
  created_at INTEGER NOT NULL, validated_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, state TEXT NOT NULL, failed_at INTEGER,
  fail_kind TEXT, fail_reason TEXT);
CREATE INDEX idp_links_due ON idp_links(state, validated_at);
CREATE INDEX idp_links_identity ON idp_links(identity);
ALTER TABLE api_tokens ADD COLUMN link_id TEXT;
ALTER TABLE web_sessions ADD COLUMN link_id TEXT;
ALTER TABLE connection_secrets ADD COLUMN issued_by TEXT;
ALTER TABLE connection_secrets ADD COLUMN link_id TEXT;
`,
  },
  {
    // Keyed audit: each event's HMAC under the audit key (the key itself lives outside the store).
    version: 3,
    sql: `ALTER TABLE audit_events ADD COLUMN mac TEXT;`,
  },
  {
    // Revokes that failed stay visible and are retried with backoff (standing privileges).
    version: 13,
    sql: `
ALTER TABLE leases ADD COLUMN attempts INTEGER;
ALTER TABLE leases ADD COLUMN retry_at INTEGER;
`,
  },
  {
    // Several nodes (issue 17): the node registry (heartbeats, who reaped a lost node) and the
    // control bus's catch-up log (kill, lock, revoke, grant end), read from the last seen seq.
    version: 14,
    sql: `
CREATE TABLE nodes (id TEXT PRIMARY KEY, incarnation TEXT NOT NULL, host TEXT, pid INTEGER, internal_addr TEXT, state TEXT NOT NULL,
  started_at INTEGER NOT NULL, heartbeat_at INTEGER NOT NULL, lost_at INTEGER, lost_by TEXT);
CREATE TABLE control_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, origin TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX control_events_at ON control_events(at);
`,
  },
  {
    // Recordings cut short: by a gateway crash (sealed at the next start) or a failed write.
    version: 15,
    sql: `ALTER TABLE recordings ADD COLUMN cut TEXT;`,
  },
  {
    // Governance (issue 20): delegations of approvals, access reviews (campaigns, their lines, the
    // exclusions a revoked line leaves), who an approval was made for, grant extensions, and the
    // expiry notice already sent for a grant's end.
    version: 16,
    sql: `
ALTER TABLE approvals ADD COLUMN on_behalf_of TEXT;
ALTER TABLE requests ADD COLUMN extends_grant TEXT;
ALTER TABLE grants ADD COLUMN notified_for INTEGER;
CREATE TABLE delegations (id TEXT PRIMARY KEY, delegator TEXT NOT NULL, delegate TEXT NOT NULL, starts_at INTEGER NOT NULL, ends_at INTEGER NOT NULL,
  reason TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL, revoked_at INTEGER, revoked_by TEXT);
CREATE INDEX delegations_delegate ON delegations(delegate, ends_at);
CREATE INDEX delegations_delegator ON delegations(delegator, ends_at);
CREATE TABLE access_reviews (id TEXT PRIMARY KEY, policy TEXT NOT NULL, state TEXT NOT NULL, reviewers TEXT NOT NULL, escalate_to TEXT NOT NULL,
  created_at INTEGER NOT NULL, created_by TEXT NOT NULL, due_at INTEGER NOT NULL, escalated_at INTEGER, completed_at INTEGER, scheduled INTEGER NOT NULL);
CREATE INDEX access_reviews_state ON access_reviews(state, due_at);
CREATE TABLE access_review_lines (id TEXT PRIMARY KEY, review_id TEXT NOT NULL REFERENCES access_reviews(id), kind TEXT NOT NULL, identity TEXT NOT NULL,
  policy TEXT NOT NULL, grant_id TEXT, detail TEXT NOT NULL, decision TEXT, decided_by TEXT, decided_at INTEGER, comment TEXT, exclusion_id TEXT);
CREATE INDEX access_review_lines_review ON access_review_lines(review_id);
CREATE TABLE exclusions (id TEXT PRIMARY KEY, identity TEXT NOT NULL, scope TEXT NOT NULL, policy TEXT, reason TEXT NOT NULL, created_at INTEGER NOT NULL,
  created_by TEXT NOT NULL, review_id TEXT, line_id TEXT, removed_at INTEGER, removed_by TEXT);
CREATE INDEX exclusions_identity ON exclusions(identity);
`,
  },
  {
    // Notifications: the delivery queue with retries (proxy/notifications); SIEM push: each sink's acknowledged seq (proxy/siem).
    version: 17,
    sql: `
CREATE TABLE notification_deliveries (id TEXT PRIMARY KEY, channel TEXT NOT NULL, topic TEXT NOT NULL, recipient TEXT NOT NULL, payload TEXT NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  delivered_at INTEGER, last_error TEXT, dedupe TEXT UNIQUE, claimed_by TEXT, claimed_until INTEGER);
CREATE INDEX notification_deliveries_due ON notification_deliveries(state, next_at);
CREATE TABLE siem_cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL, holder TEXT, held_until INTEGER, updated_at INTEGER NOT NULL,
  ack_at INTEGER, failures INTEGER NOT NULL DEFAULT 0, last_error TEXT, last_error_at INTEGER);
`,
  },
  {
    // The credential vault (issue 22): target admin credentials sealed with a key derived from the
    // gateway key (outside the store), the pending one of a rotation in progress, and its schedule.
    version: 18,
    sql: `
CREATE TABLE vault_credentials (id TEXT PRIMARY KEY, target TEXT NOT NULL, field TEXT NOT NULL, sealed TEXT NOT NULL, pending_sealed TEXT,
  set_at INTEGER NOT NULL, set_by TEXT NOT NULL, rotated_at INTEGER, next_rotation_at INTEGER, failures INTEGER NOT NULL DEFAULT 0,
  last_failure TEXT, last_failure_at INTEGER, version INTEGER NOT NULL DEFAULT 1, UNIQUE (target, field));
CREATE INDEX vault_credentials_due ON vault_credentials(next_rotation_at);
`,
  },
];
