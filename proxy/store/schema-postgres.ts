/**
 * The PostgreSQL twin of every SQLite migration in schema.ts, version for version. Porting a
 * SQLite migration is mechanical:
 * - `INTEGER` columns (epoch milliseconds, counters, sizes) become `BIGINT`;
 * - `INTEGER` booleans (fields of kind 'bool' in `tables`) become `BOOLEAN`, `DEFAULT 0/1` → `DEFAULT false/true`;
 * - `INTEGER PRIMARY KEY AUTOINCREMENT` becomes `BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY`;
 * - JSON stays `TEXT` (exact round trips: audit hashes cover it, and JSONB refuses `\u0000` escapes);
 * - `TEXT`, indexes (partial and unique too), `REFERENCES`, `ALTER TABLE … ADD COLUMN` stay as they are;
 * - `INSERT OR IGNORE` becomes `INSERT … ON CONFLICT DO NOTHING`.
 * Each version runs in one transaction (PostgreSQL DDL is transactional) under an advisory lock.
 */
import type { Migration } from './schema.js';

export const pgMigrations: Migration[] = [
  {
    version: 1,
    sql: `
CREATE TABLE identities (sub TEXT PRIMARY KEY, email TEXT, name TEXT, groups TEXT NOT NULL, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL);
CREATE TABLE requests (
  id TEXT PRIMARY KEY, requester TEXT NOT NULL, target TEXT NOT NULL, role TEXT NOT NULL, duration_ms BIGINT NOT NULL, reason TEXT NOT NULL,
  state TEXT NOT NULL, risk TEXT NOT NULL, policy TEXT NOT NULL, stages TEXT NOT NULL, current_stage BIGINT NOT NULL, stage_deadline BIGINT,
  escalations BIGINT NOT NULL DEFAULT 0, mfa_required BOOLEAN NOT NULL, break_glass BOOLEAN NOT NULL, created_at BIGINT NOT NULL,
  decided_at BIGINT, decided_by TEXT, decision_reason TEXT, grant_id TEXT);
CREATE INDEX requests_state ON requests(state);
CREATE INDEX requests_requester ON requests(requester);
CREATE TABLE approvals (id TEXT PRIMARY KEY, request_id TEXT NOT NULL REFERENCES requests(id), stage BIGINT NOT NULL, approver TEXT NOT NULL,
  decision TEXT NOT NULL, comment TEXT, at BIGINT NOT NULL, UNIQUE (request_id, approver));
CREATE TABLE grants (
  id TEXT PRIMARY KEY, request_id TEXT, identity TEXT NOT NULL, target TEXT NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL,
  starts_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, break_glass BOOLEAN NOT NULL, created_at BIGINT NOT NULL,
  ended_at BIGINT, ended_by TEXT, end_reason TEXT, used BOOLEAN NOT NULL DEFAULT false);
CREATE INDEX grants_identity ON grants(identity, state);
CREATE UNIQUE INDEX grants_request ON grants(request_id) WHERE request_id IS NOT NULL;
CREATE TABLE breakglass_reviews (id TEXT PRIMARY KEY, grant_id TEXT NOT NULL, identity TEXT NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL,
  opened_at BIGINT NOT NULL, closed_at BIGINT, closed_by TEXT, comment TEXT);
CREATE TABLE connection_secrets (
  id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, grant_id TEXT NOT NULL, identity TEXT NOT NULL, target TEXT NOT NULL, role TEXT NOT NULL,
  protocol TEXT, reusable BOOLEAN NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, used_at BIGINT, uses BIGINT NOT NULL DEFAULT 0,
  verifiers TEXT NOT NULL DEFAULT '{}');
CREATE INDEX connection_secrets_target ON connection_secrets(target, expires_at);
CREATE TABLE api_tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, identity TEXT NOT NULL, name TEXT NOT NULL, created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL, last_used_at BIGINT, revoked_at BIGINT, mfa_at BIGINT);
CREATE TABLE web_sessions (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, identity TEXT NOT NULL, created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL, mfa_at BIGINT, revoked_at BIGINT);
CREATE TABLE public_keys (id TEXT PRIMARY KEY, identity TEXT NOT NULL, public_key TEXT NOT NULL, fingerprint TEXT NOT NULL UNIQUE, name TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE leases (
  id TEXT PRIMARY KEY, session_id TEXT, grant_id TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL,
  created_at BIGINT NOT NULL, activated_at BIGINT, revoked_at BIGINT, error TEXT);
CREATE INDEX leases_state ON leases(state);
CREATE TABLE sessions (
  id TEXT PRIMARY KEY, grant_id TEXT NOT NULL, identity TEXT NOT NULL, target TEXT NOT NULL, role TEXT NOT NULL, protocol TEXT NOT NULL,
  client_addr TEXT, state TEXT NOT NULL, started_at BIGINT NOT NULL, ended_at BIGINT, end_reason TEXT, bytes_up BIGINT NOT NULL DEFAULT 0,
  bytes_down BIGINT NOT NULL DEFAULT 0, gateway_id TEXT NOT NULL);
CREATE INDEX sessions_state ON sessions(state);
CREATE TABLE recordings (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL,
  sha256 TEXT, bytes BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, sealed_at BIGINT);
CREATE INDEX recordings_session ON recordings(session_id);
CREATE TABLE query_log (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, session_id TEXT NOT NULL, at BIGINT NOT NULL, statement TEXT NOT NULL, kind TEXT,
  params BIGINT NOT NULL DEFAULT 0, duration_ms BIGINT, "rows" BIGINT, error TEXT, decision TEXT NOT NULL);
CREATE INDEX query_log_session ON query_log(session_id, id);
CREATE TABLE audit_events (seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, subject TEXT,
  data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX audit_action ON audit_events(action);
CREATE TABLE locks (id TEXT PRIMARY KEY, scope TEXT NOT NULL, value TEXT NOT NULL, reason TEXT NOT NULL, created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL, expires_at BIGINT, removed_at BIGINT, removed_by TEXT);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`,
  },
  {
    // Identity lifecycle: IdP links (sealed refresh tokens) for re-validation; which credential issued a secret.
    version: 2,
    sql: `
CREATE TABLE idp_links (id TEXT PRIMARY KEY, identity TEXT NOT NULL, refresh_sealed TEXT, access_sealed TEXT, access_expires_at BIGINT,
  created_at BIGINT NOT NULL, validated_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, state TEXT NOT NULL, failed_at BIGINT,
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
ALTER TABLE leases ADD COLUMN attempts BIGINT;
ALTER TABLE leases ADD COLUMN retry_at BIGINT;
`,
  },
  {
    // Several nodes (issue 17): the node registry and the control bus's catch-up log.
    version: 14,
    sql: `
CREATE TABLE nodes (id TEXT PRIMARY KEY, incarnation TEXT NOT NULL, host TEXT, pid BIGINT, internal_addr TEXT, state TEXT NOT NULL,
  started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL, lost_at BIGINT, lost_by TEXT);
CREATE TABLE control_events (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at BIGINT NOT NULL, origin TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX control_events_at ON control_events(at);
`,
  },
  {
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
ALTER TABLE grants ADD COLUMN notified_for BIGINT;
CREATE TABLE delegations (id TEXT PRIMARY KEY, delegator TEXT NOT NULL, delegate TEXT NOT NULL, starts_at BIGINT NOT NULL, ends_at BIGINT NOT NULL,
  reason TEXT NOT NULL, created_at BIGINT NOT NULL, created_by TEXT NOT NULL, revoked_at BIGINT, revoked_by TEXT);
CREATE INDEX delegations_delegate ON delegations(delegate, ends_at);
CREATE INDEX delegations_delegator ON delegations(delegator, ends_at);
CREATE TABLE access_reviews (id TEXT PRIMARY KEY, policy TEXT NOT NULL, state TEXT NOT NULL, reviewers TEXT NOT NULL, escalate_to TEXT NOT NULL,
  created_at BIGINT NOT NULL, created_by TEXT NOT NULL, due_at BIGINT NOT NULL, escalated_at BIGINT, completed_at BIGINT, scheduled BOOLEAN NOT NULL);
CREATE INDEX access_reviews_state ON access_reviews(state, due_at);
CREATE TABLE access_review_lines (id TEXT PRIMARY KEY, review_id TEXT NOT NULL REFERENCES access_reviews(id), kind TEXT NOT NULL, identity TEXT NOT NULL,
  policy TEXT NOT NULL, grant_id TEXT, detail TEXT NOT NULL, decision TEXT, decided_by TEXT, decided_at BIGINT, comment TEXT, exclusion_id TEXT);
CREATE INDEX access_review_lines_review ON access_review_lines(review_id);
CREATE TABLE exclusions (id TEXT PRIMARY KEY, identity TEXT NOT NULL, scope TEXT NOT NULL, policy TEXT, reason TEXT NOT NULL, created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL, review_id TEXT, line_id TEXT, removed_at BIGINT, removed_by TEXT);
CREATE INDEX exclusions_identity ON exclusions(identity);
`,
  },
  {
    // Notifications: the delivery queue with retries (proxy/notifications); SIEM push: each sink's acknowledged seq (proxy/siem).
    version: 17,
    sql: `
CREATE TABLE notification_deliveries (id TEXT PRIMARY KEY, channel TEXT NOT NULL, topic TEXT NOT NULL, recipient TEXT NOT NULL, payload TEXT NOT NULL,
  state TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, next_at BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
  delivered_at BIGINT, last_error TEXT, dedupe TEXT UNIQUE, claimed_by TEXT, claimed_until BIGINT);
CREATE INDEX notification_deliveries_due ON notification_deliveries(state, next_at);
CREATE TABLE siem_cursors (sink TEXT PRIMARY KEY, seq BIGINT NOT NULL, holder TEXT, held_until BIGINT, updated_at BIGINT NOT NULL,
  ack_at BIGINT, failures BIGINT NOT NULL DEFAULT 0, last_error TEXT, last_error_at BIGINT);
`,
  },
  {
    // The credential vault (issue 22): target admin credentials sealed with a key derived from the
    // gateway key (outside the store), the pending one of a rotation in progress, and its schedule.
    version: 18,
    sql: `
CREATE TABLE vault_credentials (id TEXT PRIMARY KEY, target TEXT NOT NULL, field TEXT NOT NULL, sealed TEXT NOT NULL, pending_sealed TEXT,
  set_at BIGINT NOT NULL, set_by TEXT NOT NULL, rotated_at BIGINT, next_rotation_at BIGINT, failures BIGINT NOT NULL DEFAULT 0,
  last_failure TEXT, last_failure_at BIGINT, version BIGINT NOT NULL DEFAULT 1, UNIQUE (target, field));
CREATE INDEX vault_credentials_due ON vault_credentials(next_rotation_at);
`,
  },
];
