/**
 * The one small interface between proxy/ (which owns the session lifecycle) and a protocol module
 * (which only speaks its wire format). A protocol module:
 *   - refuses a client in its own protocol     -> module.refuse(...) (the front door calls it too)
 *   - accepts and authenticates a client       -> ctx.access.authenticate(...)
 *   - runs a session under the grant           -> ctx.sessions.withSession(...) (or open(...) + end())
 *   - mints its credential through a lease     -> session.lease(kind, ...), kind one of module.leaseKinds
 *   - dials the target, relays, records        -> session.recording.*
 *   - asks before letting a command through    -> session.check(...)
 *   - obeys "end now"                          -> session.onTerminate(...)
 *   - reports the end                          -> session.end(...)
 * Every ending path MUST end the session (withSession does it whatever happens); the proxy then
 * revokes leases, seals recordings and audits. session.end() is idempotent. A lease is revoked only
 * through the revoke of the kind that minted it, and is marked revoked only when that revoke
 * confirmed; until then it is a standing privilege (dashboard, API, alert) that the reaper retries.
 */
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Clock } from '../policies/clock.js';
import type { ShellReading, Uncertainty } from '../policies/shell.js';
import type { Secret } from '../auth/secret.js';
import type { Principal } from '../auth/types.js';
import type { GrantRecord, LeaseRecord } from '../proxy/store/types.js';
import type { SecretRef } from '../auth/secret.js';
import type { TargetConfig, RoleConfig } from './config.js';
import type { CommandRuleConfig } from '../policies/config.js';
import type { RuleCheckOptions, RuleDecision } from '../policies/rules.js';
import type { SessionRecording } from '../recorder/types.js';
import type { Directory } from './directory.js';

export type { TargetConfig, RoleConfig, SecretRef, CommandRuleConfig, RuleDecision, RuleCheckOptions };

export interface ListenerAddress {
  host: string;
  port: number;
  /** What an unauthenticated peer may cost this listener (listeners.<p>.loginTimeout, maxStartups, maxStartupsPerSource); defaults when absent. */
  preauth?: PreauthLimits;
  /** The module's own refuse (ProtocolModule.refuse), handed to its front door by the gateway: every connection the front door refuses gets it. */
  refuse?(sock: Duplex, code: RefusalCode, message: string): void;
  /** When it aborts (the gateway drains), the listener stops accepting; connections already open go on. */
  drain?: AbortSignal;
}

export interface PreauthLimits {
  /** A connection not signed in by then is closed (sshd's LoginGraceTime). */
  loginTimeoutMs: number;
  /** Unauthenticated connections at once, in total and from one source (sshd's MaxStartups); beyond, new ones are refused. */
  maxStartups: number;
  maxStartupsPerSource: number;
}

export interface ProtocolListener extends ListenerAddress {
  close(): Promise<void>;
}

export interface TlsMaterial {
  /** PEM of the gateway's certificate chain, key and the CA that issued it (clients may pin the CA). */
  cert: string;
  key: Secret;
  ca: string;
}

export type RefusalCode =
  | 'unknown_target' | 'unknown_role' | 'bad_secret' | 'secret_used' | 'secret_expired'
  | 'no_grant' | 'grant_expired' | 'locked' | 'outside_hours' | 'bad_key' | 'denied'
  /** Too many failed secret attempts from the client's address: refused before any secret is looked at. */
  | 'throttled'
  /** Too many connections are signing in (the listener's pre-authentication caps): try again in a moment. */
  | 'busy'
  /** The target needs an MFA at connect time (mfaAtConnect) and none fresh enough came with the sign-in. */
  | 'mfa_required';

/**
 * What `tollgate targets check` says: reachable and the admin credential works, or the first
 * stage that failed: `config` (the target's settings cannot be used), `dial` (no TCP connection),
 * `tls` (handshake or certificate), `identity` (the target is not the one pinned, e.g. an SSH host
 * key), `auth` (the admin credential is refused), `provision` (signed in, but cannot do what
 * minting needs), `protocol` (the target answered something unexpected).
 */
export type CheckStage = 'config' | 'dial' | 'tls' | 'identity' | 'auth' | 'provision' | 'protocol';
export type CheckResult = { ok: true; detail: string } | { ok: false; stage: CheckStage; detail: string };

export interface AuthRequest {
  protocol: string;
  /** What the client sent as user name: "target" or "target:role". */
  username: string;
  clientAddr: string;
  /** A connection secret typed as password. */
  secret?: Secret;
  /** SHA256 fingerprint (OpenSSH "SHA256:..." form) of a public key the client proved it holds. */
  publicKeyFingerprint?: string;
  /** A principal already established out of band (browser approval, HTTP cookie). */
  principal?: Principal;
  /**
   * The id of a connection secret whose verifier the protocol checked itself (challenge-response:
   * SCRAM, mysql_native_password), chosen among ctx.access.pendingSecrets(...). It is consumed like a typed secret.
   */
  provenSecretId?: string;
  /**
   * An authenticator (TOTP) code the client typed, for targets that need MFA at connect time
   * (SSH keyboard-interactive after a public key). Checked against the identity's authenticator.
   */
  mfaCode?: Secret;
}

/** A pending connection secret as a challenge-response protocol sees it: only its verifiers. */
export interface SecretCandidate {
  id: string;
  verifiers: Record<string, string>;
}

export interface Authorized {
  principal: Principal;
  grant: GrantRecord;
  target: TargetConfig;
  role: RoleConfig;
  /** The connection secret that was used, if any. */
  secretId?: string;
}

export type AuthOutcome =
  | { ok: true; auth: Authorized }
  | { ok: false; code: RefusalCode; reason: string };

export interface EndReason {
  code: 'client_exit' | 'killed' | 'locked' | 'expired' | 'revoked' | 'forbidden' | 'target_closed' | 'target_error' | 'error' | 'resource_limit' | 'gateway_shutdown'
    /** Ended by a surviving node: the node that held it went silent (gateway.nodeTimeout). */
    | 'gateway_lost'
    /** Its node could not reach the store for gateway.storeLossTimeout (fail closed). */
    | 'store_lost'
    /** Fail-closed: the session's recording cannot be written (recordings.onFailure), or the gateway's store cannot. */
    | 'recording_failed' | 'store_unavailable';
  /** A sentence a person understands; shown to the client where the protocol allows. */
  message: string;
}

export interface LeaseResult<T> {
  /** What the protocol needs to connect (password, key...). Never stored. */
  credential: T;
  /** Extra revocation data learnt while creating (merged into the stored lease data). */
  data?: Record<string, unknown>;
}

/**
 * One kind of lease a module mints (a login role, a Linux account, a certificate, a password):
 * declared in ProtocolModule.leaseKinds, so nothing can be minted that the module cannot revoke.
 */
export interface LeaseKind {
  /** What such a lease holds on the target, in a few words (dashboard, audit): "a PostgreSQL login role". */
  readonly holds: string;
  /**
   * Revoke from the stored lease alone (session end, a failed mint, the reaper after a crash or for
   * a node that died). Idempotent: a credential that is already gone, or was never created, is
   * fine. Resolve only once the credential is gone, saying what was done; throw otherwise. The
   * proxy marks the lease revoked only on this answer.
   */
  revoke(ctx: ProtocolContext, target: TargetConfig, lease: LeaseRecord): Promise<Revoked>;
}

/** A revoke's confirmation: the credential no longer works. */
export interface Revoked {
  revoked: true;
  /** What was done or found, for the audit event ("role tg_alice_1a2b dropped", "account already gone"). */
  detail: string;
}

/** A lease kind the module did not declare (minting refuses it; revoking one from the store fails, so it stays visible). */
export class UnknownLeaseKindError extends Error {
  constructor(readonly module: string, readonly kind: string, known: string[]) {
    super(`the ${module} module has no lease kind "${kind}" (it declares ${known.length ? known.map((k) => `"${k}"`).join(', ') : 'none'})`);
    this.name = 'UnknownLeaseKindError';
  }
}

/** The declared lease kind of a module, or UnknownLeaseKindError. */
export function leaseKindOf(mod: Pick<ProtocolModule, 'name' | 'leaseKinds'>, kind: string): LeaseKind {
  const k = Object.hasOwn(mod.leaseKinds, kind) ? mod.leaseKinds[kind] : undefined;
  if (!k) throw new UnknownLeaseKindError(mod.name, kind, Object.keys(mod.leaseKinds));
  return k;
}

/**
 * Revoke a stored lease through the module's declared kind: UnknownLeaseKindError for a kind it
 * does not declare, and an error unless the revoke explicitly confirmed (a revoke that returns
 * nothing has not said the credential is gone).
 */
export async function revokeWithModule(mod: Pick<ProtocolModule, 'name' | 'leaseKinds'>, ctx: ProtocolContext, target: TargetConfig, lease: LeaseRecord): Promise<Revoked> {
  const confirmed = await leaseKindOf(mod, lease.kind).revoke(ctx, target, lease);
  if ((confirmed as Revoked | undefined)?.revoked !== true) throw new Error(`the ${mod.name} revoke of ${lease.kind} did not confirm that the credential is gone`);
  return confirmed;
}

/** session.lease() while the session is ending or ended: nothing more is minted. */
export class SessionEndedError extends Error {
  constructor(message = 'the session ended while it was starting') {
    super(message);
    this.name = 'SessionEndedError';
  }
}

export interface LiveSession {
  readonly id: string;
  readonly principal: Principal;
  readonly grant: GrantRecord;
  readonly target: TargetConfig;
  readonly role: RoleConfig;
  readonly startedAt: number;
  readonly recording: SessionRecording;
  readonly log: Logger;
  /**
   * Mint a credential under a lease. `kind` must be one of the module's leaseKinds (else
   * UnknownLeaseKindError, before anything is stored). The lease (kind + data) is stored BEFORE
   * create() runs, so a crash can never leave an unrecorded account. If create() throws, the kind's
   * revoke runs on the stored lease and the error is rethrown. If the session ends while create()
   * runs, its teardown waits for it, the fresh credential is revoked and SessionEndedError is thrown.
   * Leases are revoked by the proxy at session end.
   */
  lease<T>(kind: string, data: Record<string, unknown>, create: (leaseId: string) => Promise<LeaseResult<T>>): Promise<T>;
  /** Check a command line / statement / request against the session's rules. Deny/kill/alert are audited here; on 'kill' the proxy terminates the session right after. */
  check(text: string, opts?: RuleCheckOptions): RuleDecision;
  /** The command rules of the session's role (config order), e.g. to enforce them in the target too. */
  readonly commandRules: readonly CommandRuleConfig[];
  /** Called once when the gateway ends the session (kill, lock, expiry, revoke, forbidden). The module must close both sides and then call end(). */
  onTerminate(handler: (reason: EndReason) => void): void;
  /** Called before the grant ends (message to show, ms left). */
  onWarning(handler: (message: string, msLeft: number) => void): void;
  addBytes(up: number, down: number): void;
  /**
   * Bytes this session's inspectors start (+) or stop (-) holding (partial messages, out-of-order
   * pieces, request tracking). Above limits.sessionBufferBytes the gateway ends the session with
   * `resource_limit` (onTerminate runs); returns false from then on.
   */
  holdBytes(delta: number): boolean;
  /**
   * Wrap an event handler of this session (socket or channel data, timers): it runs in the
   * session's scope, and a throw from it, or from asynchronous work it started, is logged and
   * audited and ends only this session (code `error`) instead of the gateway process.
   */
  guard<A extends unknown[]>(handler: (...args: A) => void): (...args: A) => void;
  /** An audit event about this session (action like 'ssh.exec', 'sftp.upload'). */
  audit(action: string, data: Record<string, unknown>): void;
  /** Report the end. Idempotent; resolves after leases are revoked and recordings sealed. */
  end(reason: EndReason): Promise<void>;
  readonly ended: boolean;
  /** Resolves with the reason once end() was called (by the module, or by the gateway after "end now"). */
  readonly ending: Promise<EndReason>;
}

/** Where a session comes from. */
export interface SessionMeta {
  protocol: string;
  clientAddr: string;
  /**
   * withSession only: the client's connection. When it closes before the session is over, the
   * session is ended with client_exit (its onTerminate handlers run first), whatever fn is doing.
   */
  client?: { once(event: 'close', listener: () => void): unknown; off(event: 'close', listener: () => void): unknown };
  /**
   * The client's TCP connection (open or withSession), for close-first teardown: when the gateway
   * ends the session (kill, revoke, lock, expiry), teardown waits a bounded time for it to close
   * (the module's "end now" closes it) and destroys it then, before any lease is revoked.
   */
  socket?: ClientConnection;
}

/** What close-first teardown needs of the client's connection (a net.Socket has it). */
export interface ClientConnection {
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
  readonly destroyed?: boolean;
  readonly closed?: boolean;
  destroy?(): unknown;
}

/** The gateway's configuration as a module sees it. */
export interface ConfigFacet {
  target(name: string): TargetConfig | undefined;
  targets(): TargetConfig[];
  /** Resolve a secret reference from the target's config (path is for error messages). */
  resolveSecret(ref: unknown, path: string): Secret;
  /**
   * A credential of a target by its field under `credentials` (e.g. `admin.password`): a secret
   * reference from the config, or, for `{vault: true}`, the current one from the vault (always the
   * latest, on every node: rotations change it).
   */
  credential(target: TargetConfig, field: string): Promise<Secret>;
  /** Public host name to print in client commands. */
  readonly publicHost: string;
  /** Public base URL of the HTTP front. */
  readonly publicUrl: string;
  /** This module's own directory under the gateway's data directory. */
  readonly dataDir: string;
  /** The gateway's certificate and key, for the module's listeners. */
  readonly tls: TlsMaterial;
}

/** Who is calling, and whether they may reach the target now. */
export interface AccessFacet {
  /** Check who is calling and whether they may reach the target now. Audits refusals. */
  authenticate(req: AuthRequest): Promise<AuthOutcome>;
  /**
   * Unused, unexpired connection secrets that could match "target[:role]" for this protocol (for
   * challenge-response auth). The caller proves one with a verifier, then calls authenticate with provenSecretId.
   * None while the client's address is throttled (authenticate then says so).
   */
  pendingSecrets(username: string, protocol: string, clientAddr: string): Promise<SecretCandidate[]>;
  /**
   * Start a browser approval for a client that cannot type a secret (e.g. SSH keyboard-interactive):
   * returns a URL to show; wait() resolves when the person signed in and approved, or refuses.
   * Throws (with a message for the person) when too many approvals are pending, in total or from the client's address.
   */
  beginBrowserApproval(req: Omit<AuthRequest, 'secret' | 'principal'>): { url: string; wait(timeoutMs: number): Promise<AuthOutcome>; cancel(): void };
  /** The signed-in person behind a gateway web session cookie value (tg_session), or null. */
  webPrincipal(cookieValue: string): Promise<Principal | null>;
}

/** The gateway key, for what a module must keep sealed or derive. */
export interface CryptoFacet {
  /**
   * Encrypt+authenticate a small JSON value with an expiry (AES-256-GCM with the gateway key, which lives
   * outside the store); ttlMs = Infinity seals without expiry. unseal returns null when tampered or expired.
   */
  seal(value: unknown, ttlMs: number): string;
  unseal<T = unknown>(sealed: string): T | null;
  /** A stable 32-byte key derived from the gateway's own key for this label (e.g. a per-target SCRAM salt). */
  deriveKey(label: string): Buffer;
}

/** Sessions under an authorization. */
export interface SessionsFacet {
  /** Open a session: re-checks the grant and locks, registers it for enforcement, opens its recording. The caller must end it. */
  open(auth: Authorized, meta: SessionMeta): Promise<LiveSession>;
  /**
   * Open a session and run fn in it; the session is ended on every path: with the EndReason fn
   * resolves to (or client_exit), with `error` when fn throws (the error is rethrown), and with
   * client_exit as soon as meta.client closes. fn resolves when the session is over (e.g. `return
   * session.ending` once the relay runs). Throws, without a session, when open() refuses.
   */
  withSession(auth: Authorized, meta: SessionMeta, fn: (session: LiveSession) => Promise<EndReason | void>): Promise<void>;
}

/** Small persistent state and audit events of the module itself. */
export interface StateFacet {
  /** Keys private to the module (e.g. pinned SSH host keys), kept in the store. */
  readonly kv: { get(key: string): Promise<string | null>; set(key: string, value: string): Promise<void> };
  /** An audit event by the gateway itself (actor "system"); alert: also notify (a possible attack). */
  audit(action: string, subject: string | null, data: Record<string, unknown>, opts?: { alert?: boolean }): Promise<void>;
  /** The configured directory (the `directory` section) for directory-account / directory-group leases; null when none. */
  readonly directory: Directory | null;
}

/** What the gateway offers a protocol module, in facets by concern. */
export interface ProtocolContext {
  readonly log: Logger;
  readonly clock: Clock;
  readonly config: ConfigFacet;
  readonly access: AccessFacet;
  readonly crypto: CryptoFacet;
  readonly sessions: SessionsFacet;
  readonly state: StateFacet;
}

/**
 * What a protocol module served on the gateway's HTTP front (the HTTP app proxy) gets: raw access
 * to the uWebSockets.js app for its routes. Raw hooks run before the API router; return true
 * when the hook took the request.
 */
export interface HttpMount {
  raw(hook: (res: import('uWebSockets.js').HttpResponse, req: import('uWebSockets.js').HttpRequest) => boolean): void;
  readonly app: import('uWebSockets.js').TemplatedApp;
  /** The cookie name of gateway web sessions (`__Host-tg_session` when the front is TLS). */
  readonly sessionCookie: string;
  /** Whether cookies get Secure and the `__Host-` prefix (the front is TLS, or gateway.secureCookies). */
  readonly secureCookies: boolean;
  /** gateway.appsDomain: HTTP apps live at <app>.<appsDomain> (null: under the gateway host or localhost). */
  readonly appsDomain: string | null;
  /** Cookie names reserved for the gateway (tg_*): an app may never set one. */
  isGatewayCookie(name: string): boolean;
  /**
   * Null when a cookie-authenticated change (or, websocket: true, an upgrade) comes from the gateway's
   * own origin (Origin / Sec-Fetch-Site against publicUrl); otherwise why not.
   */
  foreignOrigin(header: (name: string) => string | undefined, websocket?: boolean): string | null;
  /** The CSRF token of a web session, for HTML forms the gateway serves; checkCsrf verifies one. */
  csrfToken(sessionCookie: string): string;
  checkCsrf(sessionCookie: string, token: string | null | undefined): boolean;
  /** Call the gateway's REST API in-process as the web session behind this cookie value (JSON body). */
  api(method: string, path: string, sessionCookie: string, body?: unknown): Promise<{ status: number; body: unknown }>;
}

export interface ClientCommandInfo {
  protocol: string;
  host: string;
  port: number;
  /** "target" or "target:role". */
  username: string;
  secret: string;
  target: TargetConfig;
  /** URL of the gateway CA as served by the API (for clients that pin it). */
  caUrl: string;
  /** The gateway's public base URL (other files a command downloads, e.g. /api/v1/ssh/known_hosts). */
  gatewayUrl: string;
  /** SHA-256 of the gateway's TLS certificate, lower-case hex pairs joined by ':' (clients that pin the certificate). */
  certSha256: string;
  /**
   * Where a command finds the gateway's CA and SSH known_hosts. In clientCommands: file names the
   * printed command downloads itself (from caUrl and gatewayUrl); in nativeClient: CLIENT_FILES
   * placeholders that `tollgate connect` replaces with files it fetched.
   */
  files: { ca: string; knownHosts: string };
}

/** Placeholders in NativeClient argv/env that `tollgate connect` replaces with the path of a file it fetched from the gateway. */
export const CLIENT_FILES = {
  /** GET /api/v1/ca.pem */
  ca: '{{tollgate-ca}}',
  /** GET /api/v1/ssh/known_hosts */
  knownHosts: '{{tollgate-known-hosts}}',
} as const;

export interface NativeClient { argv: string[]; env: Record<string, string>; askpass?: boolean }

export interface ProtocolModule {
  readonly name: string;
  readonly defaultPort: number;
  /** Validate target.credentials / target.options / roles; return the first problem. */
  validateTarget?(target: TargetConfig): { path: string; expected: string } | null;
  /** Mount routes on the gateway's own HTTP front (called at start-up for every module that has it). */
  mountHttp?(ctx: ProtocolContext, front: HttpMount): void;
  /** Start listening (called when config.listeners[name] exists). */
  listen?(ctx: ProtocolContext, address: ListenerAddress): Promise<ProtocolListener>;
  /**
   * Every kind of lease this module mints, each with its revoke. session.lease() refuses any other
   * kind; a stored lease of an unknown kind is never marked revoked (it stays a standing privilege).
   * A module that mints nothing declares {}.
   */
  readonly leaseKinds: Readonly<Record<string, LeaseKind>>;
  /**
   * Refuse a client at the very start of its connection (nothing read yet), in the protocol's own
   * words, then close: the shared front door (protocols/net.ts listenTcp) calls it for connections
   * over the pre-authentication caps (code `busy`), and the module may call it for its own early
   * refusals. A protocol with no words before its handshake (RDP) just closes.
   */
  refuse?(sock: Duplex, code: RefusalCode, message: string): void;
  /** Dial the target with its admin credential: "reachable, credentials work", or the stage that failed. */
  checkTarget?(ctx: ProtocolContext, target: TargetConfig): Promise<CheckResult>;
  /**
   * After a legitimate change of the target's identity (an SSH host key rotation): dial it with the
   * admin credential and pin what it presents now (when given, it must be `fingerprint`). The caller audits.
   */
  repinTarget?(ctx: ProtocolContext, target: TargetConfig, opts: { fingerprint?: string }): Promise<{ ok: boolean; detail: string; previous: string | null; pinned: string | null }>;
  /** Revoke what the grant left behind when it ends (e.g. rotate a checked-out password). */
  onGrantEnd?(ctx: ProtocolContext, target: TargetConfig, grant: GrantRecord): Promise<void>;
  /**
   * When a grant on this target holds one shared account (SSH checkout): the account's key (targets
   * with the same key share it) and whether a request while someone else holds it is refused or
   * queued. The policy engine then lets one identity hold it at a time. null/absent: not exclusive.
   */
  checkoutAccount?(target: TargetConfig): { key: string; whenHeld: 'refuse' | 'queue' } | null;
  /**
   * Scheduled rotation of admin credentials kept in the vault (proxy/vault-rotation.ts): which
   * fields can rotate, how a new one is made, how it is set on the target (logged in with the
   * current one) and how it is verified (a fresh login with it). Errors say why, never the secret.
   */
  readonly adminRotation?: AdminRotation;
  /**
   * The current password of the checked-out account (after any rotation under way), for its holder's
   * "reveal" (the caller has checked holder, grant, role and MFA, and audits). Never logged.
   */
  revealCheckout?(ctx: ProtocolContext, target: TargetConfig): Promise<Secret>;
  /** Ready-to-paste native client command lines for a connection secret. */
  clientCommands?(info: ClientCommandInfo): Record<string, string>;
  /**
   * The native client `tollgate connect` runs for a fresh secret: argv and extra environment (e.g.
   * PGPASSWORD). askpass: the client reads the secret through SSH_ASKPASS (the CLI provides the helper).
   */
  nativeClient?(info: ClientCommandInfo): NativeClient | null;
  /**
   * Verifiers to store with a new connection secret for this target (e.g. {"scram-sha-256": "..."}),
   * so challenge-response auth works without keeping the secret. Called when a secret is issued.
   */
  secretVerifiers?(ctx: ProtocolContext, target: TargetConfig, secret: Secret): Record<string, string>;
  /** Length of connection secrets for this target when the protocol needs a fixed one (classic VNC auth: 8); undefined = default. */
  secretLength?(target: TargetConfig): number | undefined;
  /**
   * For `tollgate demo`: start a real server of this protocol in `dir` (loopback, free port) and
   * return the targets to configure. Resolve null when the server software is not installed.
   */
  demo?(dir: string, log: Logger): Promise<DemoTargets | null>;
}

export interface AdminRotation {
  /** The credential fields (under credentials) this module can rotate, e.g. ['admin.password']. */
  readonly fields: readonly string[];
  /** A new random credential for the field. */
  generate(target: TargetConfig, field: string): Secret;
  /** Log in as the admin with `current` and make `next` its credential on the target. */
  set(ctx: ProtocolContext, target: TargetConfig, field: string, current: Secret, next: Secret): Promise<void>;
  /** Log in as the admin with `credential` (a new connection); throws when the target refuses it. */
  verify(ctx: ProtocolContext, target: TargetConfig, field: string, credential: Secret): Promise<void>;
}

export interface DemoTargets {
  targets: TargetConfig[];
  /** Stops the servers and removes what they created. */
  stop(): Promise<void>;
}
