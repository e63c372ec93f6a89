import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import { Registry, Gauge, Counter, collectDefaultMetrics } from 'prom-client';
import type { Clock } from '../policies/clock.js';
import { SystemClock } from '../policies/clock.js';
import { JitEngine, type WindowEvent } from '../policies/engine.js';
import { compileRules } from '../policies/rules.js';
import { parseDuration } from '../policies/config.js';
import { openDirectory, type Directory } from '../protocols/directory.js';
import { DIRECTORY_PROTOCOL, DIRECTORY_VAULT_FIELD, DIRECTORY_VAULT_TARGET, directoryVaultModule, directoryVaultTarget } from '../protocols/directory-rotate.js';
import { GrantLeases, GRANT_LEASE_TRIGGERS } from './grant-leases.js';
import type { TargetConfig } from '../protocols/config.js';
import { createRecorder } from '../recorder/index.js';
import type { Recorder } from '../recorder/index.js';
import { forgetStoredKey, gatewayKey, KeyError, loadGatewayKeyBytes, type GatewayKey } from '../auth/keys.js';
import { ApiTokens, WebSessions, ConnectionSecrets } from '../auth/credentials.js';
import { IdpLinks, Callers } from '../auth/lifecycle.js';
import { TotpFactors } from '../auth/mfa.js';
import type { Secret } from '../auth/secret.js';
import { describeHours } from '../policies/hours.js';
import { startDevIdp, type DevIdp } from '../auth/devidp.js';
import { createOidc, type Oidc } from '../auth/oidc.js';
import type { Principal } from '../auth/types.js';
import type { PreauthLimits, ProtocolContext, ProtocolListener, ProtocolModule, TlsMaterial } from '../protocols/types.js';
import { moduleMap } from '../protocols/index.js';
import type { Store } from './store/types.js';
import { openStore } from './store/index.js';
import { AUDIT_KEY_LABEL, AuditLog } from './audit.js';
import { fromModule } from './audit-events.js';
import { Access, BrowserApprovals } from './access.js';
import { SessionManager, grantEndReason, lockEndReason, type Session } from './sessions.js';
import { ensureCa, ensureTlsMaterial, type CaMaterial } from './tls.js';
import { checkpointFileOf, ConfigError, dataDirOf, gatewayKeySource, recordingsDirOf, resolveSecret, type GatewayConfig } from './config.js';
import { Cluster, type Readiness } from './cluster/index.js';
import { clusterTimings, workerCount } from './cluster/config.js';
import { withTimeout } from './cluster/nodes.js';
import { hostname } from 'node:os';
import { HttpFront, frontTls } from './http/server.js';
import { WebSecurity } from './http/web-security.js';
import { mountApi } from './http/api.js';
import { mountPortal } from './portal/index.js';
import { runNotify } from './notify.js';
import { Locks } from './locks.js';
import { SshKeys } from './keys.js';
import { KillSwitch } from './kill.js';
import { GatewayRoles } from './roles.js';
import { PendingLimit } from './limits.js';
import { DEFAULT_PREAUTH } from '../protocols/net.js';
import { FailSafe, storeUnavailable, watchStore } from './failsafe.js';
import type { RecordingFailure } from '../recorder/index.js';
import type { ListenerConfig } from './config.js';
import { Notifications } from './notifications/index.js';
import { Siem } from './siem/index.js';
import { Vault, credentialRef } from './vault.js';
import { VaultRotation, rotationInterval } from './vault-rotation.js';
import { isVaultRef } from '../auth/secret.js';

export interface GatewayOptions {
  config: GatewayConfig;
  clock?: Clock;
  log?: Logger;
  /** Replace the registry (tests). */
  modules?: Map<string, ProtocolModule>;
  /**
   * Worker processes (gateway.workers, proxy/cluster/workers.ts): worker n's node id is <id>/w<n>;
   * worker 0 runs everything, the others ('listeners') only the protocol listeners, with the public
   * URL worker 0 serves.
   */
  worker?: { index: number; role: 'all' | 'listeners'; publicUrl?: string };
}

export const DEV_CLIENT_SECRET_LABEL = 'dev-idp-client-secret';

/**
 * What a client is told while recordings or the store cannot be written (before sign-in too, so it
 * names no detail of the gateway's state; the audit log and the alert have the cause).
 */
export const FAIL_CLOSED = 'Tollgate: the gateway cannot record or audit sessions right now; new sessions are refused until it can (try again later).';

export class Gateway {
  readonly config: GatewayConfig;
  readonly clock: Clock;
  readonly log: Logger;
  readonly modules: Map<string, ProtocolModule>;
  readonly dataDir: string;
  store!: Store;
  audit!: AuditLog;
  engine!: JitEngine<TargetConfig>;
  recorder!: Recorder;
  sessions!: SessionManager;
  access!: Access;
  approvals!: BrowserApprovals;
  /** Services the API, the portal and the CLI (through the API) share. */
  locks!: Locks;
  /** Grant-level leases (directory-group membership of the person's own account for the grant). */
  grantLeases!: GrantLeases;
  keys!: SshKeys;
  kill!: KillSwitch;
  roles!: GatewayRoles;
  key!: GatewayKey;
  tokens!: ApiTokens;
  webSessions!: WebSessions;
  secrets!: ConnectionSecrets;
  /** Authenticator codes the gateway checks itself (MFA at connect time). */
  mfa!: TotpFactors;
  /** IdP re-validation of sign-ins (auth/lifecycle.ts) and who is calling over HTTP. */
  links!: IdpLinks;
  callers!: Callers;
  oidc: Oidc | null = null;
  devIdp: DevIdp | null = null;
  tls!: TlsMaterial;
  http!: HttpFront;
  publicUrl = '';
  publicHost = '127.0.0.1';
  readonly metrics = new Registry();
  /** Webhooks and email for the workflow's events (proxy/notifications) and the audit stream to SIEMs (proxy/siem). */
  notifications!: Notifications;
  siem!: Siem;
  /** Target admin credentials kept in the store, sealed (proxy/vault.ts), and their scheduled rotation. */
  vault!: Vault;
  rotation!: VaultRotation;
  /** Device sign-ins and browser approvals waiting for a person (gateway.maxPendingSignIns). */
  pendingSignIns!: PendingLimit;
  /** This process in the node registry, on its sessions and audit events: gateway.id (worker n: <id>/w<n>). */
  readonly nodeId: string;
  /** Several nodes and workers: control bus, node registry, internal channel, drain. */
  cluster!: Cluster;
  private readonly worker: GatewayOptions['worker'];
  /** Aborted when the gateway drains: the protocol listeners stop accepting. */
  private readonly drainSignal = new AbortController();
  private started = false;
  private ca!: CaMaterial;
  /** Fail-closed guards: session recordings (recordings.onFailure) and the store. */
  recordingGuard!: FailSafe;
  storeGuard!: FailSafe;
  private listeners = new Map<string, ProtocolListener>();
  private ctxCache = new Map<string, ProtocolContext>();
  private reaperTimer: NodeJS.Timeout | null = null;
  private checkpointTimer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(opts: GatewayOptions) {
    this.config = opts.config;
    this.clock = opts.clock ?? new SystemClock();
    this.log = opts.log ?? pino({ level: this.config.gateway.logLevel, redact: { paths: ['*.password', '*.secret', '*.token', '*.privateKey', 'req.headers.cookie', 'req.headers.authorization'], censor: '<secret>' } });
    this.modules = opts.modules ?? moduleMap();
    this.dataDir = dataDirOf(this.config);
    this.worker = opts.worker;
    this.nodeId = opts.worker ? `${this.config.gateway.id}/w${opts.worker.index}` : this.config.gateway.id;
  }

  /** Whether this process runs the HTTP front, the IdP, the policy timers (not a listeners-only worker). */
  private get front(): boolean { return this.worker?.role !== 'listeners'; }

  listenerAddress(name: string): { host: string; port: number } | null {
    if (name === 'http') return this.http ? { host: this.config.listeners.http?.host ?? '127.0.0.1', port: this.http.port } : null;
    const l = this.listeners.get(name);
    return l ? { host: l.host, port: l.port } : null;
  }

  async start(): Promise<this> {
    mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
    const cfg = this.config;
    const rawStore = await openStore(cfg, { dataDir: this.dataDir, log: this.log.child({ c: 'store' }) });
    this.store = watchStore(rawStore, (code, message) => this.storeGuard?.failed(code, message));
    this.setupFailSafes(rawStore);
    await this.openKeyAndAudit();

    const httpCfg = cfg.listeners.http ?? { host: '127.0.0.1', port: 8080 };
    this.publicHost = cfg.gateway.publicHost ?? (httpCfg.host === '0.0.0.0' || httpCfg.host === '::' ? '127.0.0.1' : httpCfg.host);
    this.ca = ensureCa(this.dataDir, cfg.gateway.ca ? {
      cert: resolveSecret(cfg.gateway.ca.cert, cfg, 'gateway.ca.cert').reveal(), key: resolveSecret(cfg.gateway.ca.key, cfg, 'gateway.ca.key'),
    } : undefined);
    this.tls = cfg.gateway.tls
      ? {
        cert: resolveSecret(cfg.gateway.tls.cert, cfg, 'gateway.tls.cert').reveal(),
        key: resolveSecret(cfg.gateway.tls.key, cfg, 'gateway.tls.key'),
        ca: cfg.gateway.tls.ca ? resolveSecret(cfg.gateway.tls.ca, cfg, 'gateway.tls.ca').reveal() : '',
      }
      : ensureTlsMaterial(this.dataDir, [this.publicHost], cfg.gateway.ca ? this.ca : undefined);

    this.tokens = new ApiTokens(this.store, this.clock, parseDuration(cfg.gateway.maxTokenTtl));
    this.webSessions = new WebSessions(this.store, this.clock);
    this.secrets = new ConnectionSecrets(this.store, this.clock);
    const totpSecrets = new Map<string, Secret>();
    cfg.idp.dev?.users.forEach((u, i) => { if (u.totp) totpSecrets.set(u.name, resolveSecret(u.totp, cfg, `idp.dev.users[${i}].totp`)); });
    this.mfa = new TotpFactors(this.store, this.clock, totpSecrets);

    this.setupMetrics();
    const auditAs = (action: string, subject: string | null, data: Record<string, unknown>) => this.audit.append('system', fromModule(action), subject, data).then(() => undefined);
    this.notifications = new Notifications({
      store: this.store, clock: this.clock, log: this.log.child({ c: 'notifications' }), gatewayId: this.nodeId, config: cfg.notifications, configFile: cfg.file,
      publicUrl: () => this.publicUrl, socGroups: cfg.gateway.socGroups, breakGlassReviewers: cfg.breakGlass.reviewers,
      resolveSecret: (ref, path) => resolveSecret(ref, cfg, path), audit: auditAs,
    });
    this.siem = new Siem({
      store: this.store, clock: this.clock, log: this.log.child({ c: 'siem' }), gatewayId: this.nodeId, config: cfg.siem,
      resolveSecret: (ref, path) => resolveSecret(ref, cfg, path), audit: auditAs,
    });
    if (this.siem.enabled) this.audit.onEvent(() => this.siem.wake());
    this.recorder = createRecorder({
      store: this.store, dir: recordingsDirOf(cfg, this.dataDir), clock: this.clock,
      log: this.log.child({ c: 'recorder' }), onFailure: (f) => this.recordingFailed(f),
    });

    this.engine = new JitEngine({
      store: this.store,
      clock: this.clock,
      // Break-glass reviews are closed by the SOC or the configured reviewer groups.
      config: {
        targets: cfg.targets, policies: cfg.policies, breakGlass: { ...cfg.breakGlass, reviewers: [...cfg.breakGlass.reviewers, ...cfg.gateway.socGroups] }, idp: cfg.idp,
        reviews: cfg.reviews, socGroups: cfg.gateway.socGroups,
      },
      audit: async (actor, action, subject, data) => { await this.audit.append(actor, fromModule(action), subject, data); },
      notify: (e) => this.notify(e),
      sweepMs: parseDuration(cfg.gateway.timerSweep),
      expiryWarningMs: parseDuration(cfg.gateway.expiryWarning),
      checkoutAccount: (name) => {
        const t = cfg.targets.find((x) => x.name === name);
        return (t && this.modules.get(t.protocol)?.checkoutAccount?.(t)) ?? null;
      },
      onGrantExtended: (grant) => { this.sessions.grantExtended(grant); },
      onWindow: (e) => this.windowEvent(e),
      onGrantEnded: (grant, why) => {
        // Every node's sessions under the grant end (the control bus); here at once.
        void this.cluster.end({ grant: grant.id }, grantEndReason(grant, why)).catch((e: Error) => this.log.error({ err: e.message, grant: grant.id }, 'ending the sessions of a grant on the other nodes failed'));
        const target = cfg.targets.find((t) => t.name === grant.target);
        const mod = target && this.modules.get(target.protocol);
        if (target && mod?.onGrantEnd) {
          mod.onGrantEnd(this.ctx(mod.name), target, grant).catch((e) => this.log.error({ err: e, grant: grant.id }, 'grant-end hook failed'));
        }
      },
      log: this.log.child({ c: 'policies' }),
    });

    const ruleCache = new Map<string, ReturnType<typeof compileRules>>();
    this.sessions = new SessionManager({
      store: this.store, clock: this.clock, log: this.log.child({ c: 'sessions' }), audit: this.audit, gatewayId: this.nodeId, limits: cfg.limits,
      admit: () => this.cluster?.admit() ?? null,
      storeLost: () => this.cluster?.registry.storeLost ?? false,
      expiryWarningMs: parseDuration(cfg.gateway.expiryWarning),
      openRecording: (id, meta) => this.recorder.open(id, meta),
      live: this.recorder.live,
      rules: (target, role) => {
        const k = `${target}\u0000${role}`;
        let r = ruleCache.get(k);
        if (!r) { r = compileRules(this.engine.rulesFor(target, role), role, { strict: this.engine.strictRulesFor(target, role) }); ruleCache.set(k, r); }
        return r;
      },
      module: (p) => this.modules.get(p),
      ctx: (p) => this.ctx(p),
      target: (n) => cfg.targets.find((t) => t.name === n),
      notify: (e) => this.notify(e),
      metrics: {
        started: (p) => { this.sessionsActive.inc({ protocol: p }); this.sessionsTotal.inc({ protocol: p }); },
        ended: (p) => { this.sessionsActive.dec({ protocol: p }); },
      },
      admission: () => this.admission(),
    });
    this.links = new IdpLinks({
      store: this.store, clock: this.clock, key: this.key, oidc: () => this.oidc, intervalMs: parseDuration(cfg.idp.revalidate),
      audit: (actor, action, subject, data) => this.audit.append(actor, fromModule(action), subject, data).then(() => undefined),
      log: this.log.child({ c: 'lifecycle' }),
      onFailed: async (link) => {
        // Sessions opened through the failed sign-in end; with a refusal, so do those opened with a registered key.
        const refused = link.failKind === 'refused' && (await this.links.refusal(link.identity)) !== null;
        await this.cluster.end(
          { link: link.id, ...(refused ? { keyIdentity: link.identity } : {}) },
          { code: 'revoked', message: `Tollgate: the sign-in of ${link.identity} ended (${link.failReason ?? 'refused by the identity provider'}); the session is closed.` },
        );
      },
    });
    this.callers = new Callers(this.store, this.tokens, this.webSessions, this.links);
    this.access = new Access({
      store: this.store, clock: this.clock, audit: this.audit, secrets: this.secrets,
      idpRefusal: (sub) => this.links.refusal(sub),
      credentialEnded: async (c) => {
        if (c.linkId) {
          const link = await this.links.get(c.linkId);
          if (!link || link.state !== 'ok') return link?.failReason ?? 'the sign-in is unknown';
        }
        if (c.kind === 'token') {
          const token = await this.store.getApiToken(c.id);
          if (!token || token.revokedAt !== null) return 'the API token was revoked';
        }
        return null;
      },
      target: (n) => cfg.targets.find((t) => t.name === n),
      withinHours: (t, r, at, grant) => this.engine.withinHours(t, r, at, grant),
      connectMfa: {
        needed: (grant) => this.engine.connectMfaNeeded(grant),
        fresh: (p) => this.engine.hasFreshMfa(p),
        verify: (sub, code) => this.mfa.verify(sub, code),
      },
      activeGrant: (sub, t, r) => this.engine.activeGrant(sub, t, r),
      throttle: {
        maxFailures: cfg.gateway.maxFailures,
        windowMs: parseDuration(cfg.gateway.failureWindow),
        cooldownMs: parseDuration(cfg.gateway.failureCooldown),
      },
      notify: (e) => this.notify(e),
    });
    this.approvals = new BrowserApprovals(this.clock, () => this.publicUrl, this.access);
    // Locks and kills reach every node's sessions (the control bus); the lock itself is in the store.
    this.locks = new Locks({ store: this.store, clock: this.clock, audit: this.audit, sessions: { applyLock: (lock) => this.cluster.end({ lock }, lockEndReason(lock)) } });
    this.grantLeases = new GrantLeases({
      store: this.store, clock: this.clock, log: this.log.child({ c: 'grant-leases' }), audit: this.audit,
      target: (n) => cfg.targets.find((t) => t.name === n), directory: () => this.directory(), notify: (e) => this.notify(e),
    });
    this.keys = new SshKeys({ store: this.store, clock: this.clock, audit: this.audit, key: this.key });
    // The vault also keeps the directory's bind password ({vault: true}): as the pseudo-target
    // @directory, rotated by a pseudo-module only the vault sees (protocols/directory-rotate.ts).
    const vaultModules = new Map(this.modules);
    if (!vaultModules.has(DIRECTORY_PROTOCOL)) vaultModules.set(DIRECTORY_PROTOCOL, directoryVaultModule(() => this.directory()));
    const vaultTargets = () => { const d = directoryVaultTarget(this.config.directory); return d ? [...this.config.targets, d] : this.config.targets; };
    const interval = (t: TargetConfig, field: string) => rotationInterval(this.config, vaultModules, t, field);
    this.vault = new Vault({ store: this.store, key: this.key, clock: this.clock, audit: this.audit, targets: vaultTargets, rotationInterval: interval });
    this.rotation = new VaultRotation({
      vault: this.vault, store: this.store, clock: this.clock, audit: this.audit, log: this.log.child({ c: 'vault' }), modules: vaultModules,
      ctx: (p) => this.ctx(p), targets: vaultTargets, alert: (e) => this.notify(e), interval,
      sweepMs: parseDuration(cfg.gateway.timerSweep), retryMs: parseDuration(cfg.credentials.retry), retryMaxMs: parseDuration(cfg.credentials.retryMax),
    });
    this.kill = new KillSwitch({
      store: this.store, audit: this.audit, sessions: this.sessions,
      end: (select, reason) => this.cluster.end(select, reason),
      killRemote: (rec, reason) => this.cluster.killRemote(rec, reason),
    });
    this.roles = new GatewayRoles(cfg.gateway.socGroups, this.engine);
    this.pendingSignIns = new PendingLimit('sign-ins waiting for approval', cfg.gateway.maxPendingSignIns, cfg.gateway.maxPendingSignInsPerSource);

    this.cluster = new Cluster({
      nodeId: this.nodeId, store: this.store, sessions: this.sessions, recorder: this.recorder, audit: this.audit, clock: this.clock,
      log: this.log.child({ c: 'cluster' }), timings: clusterTimings(cfg.gateway), dataDir: this.dataDir, ca: this.ca,
      internal: this.internalListener(), notify: (e) => this.notify(e),
    });

    let port = 0;
    if (this.front) {
      // HTTP front first (/healthz answers, /readyz says not yet): its port is the public URL unless configured.
      const webSecurity = new WebSecurity(() => this.publicUrl, cfg.gateway.secureCookies, this.key.deriveKey('web-csrf'));
      this.http = new HttpFront(this.log.child({ c: 'http' }), (e) => ({ status: 500, body: { error: 'internal', message: (e as Error).message } }),
        webSecurity, frontTls(cfg, this.tls, this.dataDir));
      this.http.bodyTimeoutMs = preauthOf(httpCfg).loginTimeoutMs;
      mountApi(this);
      mountPortal(this);
      for (const mod of this.modules.values()) mod.mountHttp?.(this.ctx(mod.name), this.http.mount(cfg.gateway.appsDomain ?? null));
      port = await this.http.start(httpCfg.host, httpCfg.port);
      const scheme = this.http.tls ? 'https' : 'http';
      this.publicUrl = (cfg.gateway.publicUrl ?? `${scheme}://${this.publicHost.includes(':') ? `[${this.publicHost}]` : this.publicHost}:${port}`).replace(/\/$/, '');
      await this.startIdp();
      this.links.start();
      await this.engine.start();
      // Scheduled rotations (and rotations a crash interrupted): claimed in the store, so once cluster-wide.
      this.rotation.start();
    } else {
      // A listeners-only worker: worker 0 serves the HTTP front, the IdP and the policy timers.
      this.publicUrl = this.worker?.publicUrl ?? cfg.gateway.publicUrl ?? '';
    }
    // Every process (each worker too) runs the delivery queue and the SIEM stream: both claim their work in the store.
    await this.notifications.start();
    await this.siem.start();
    const reaped = await this.sessions.reap();
    if (reaped.leases || reaped.sessions || reaped.failed) this.log.warn(reaped, 'reaper cleaned up after an earlier run');
    if (this.front) {
      // Grant-level leases: what runs gets its membership, what ended (also while this gateway was down) loses it.
      this.audit.onEvent((e) => { if (GRANT_LEASE_TRIGGERS.has(e.action)) this.grantLeases.kick(); });
      await this.grantLeases.reconcile();
    }
    // Recordings a crash left open are sealed (what was flushed, at most the last second is lost).
    const orphans = await this.recorder.sealOrphans((id) => this.liveAnywhere(id), { cut: 'gateway_crash' });
    if (orphans.sealed || orphans.missing) this.log.warn(orphans, 'sealed recordings left open by an earlier run');
    // In the registry before the first session: survivors then know whose sessions are whose.
    await this.cluster.start();
    this.reaperTimer = setInterval(() => {
      this.sessions.reap().catch((e) => this.log.error({ err: e }, 'reaper failed'));
      if (this.front) void this.grantLeases.reconcile();
      this.cluster.sweep().catch((e) => this.log.error({ err: e }, 'reaping lost nodes failed'));
    }, parseDuration(cfg.gateway.reaperInterval));
    this.reaperTimer.unref();
    if (this.front) {
      this.checkpointTimer = setInterval(() => {
        this.audit.checkpoint().catch((e) => this.log.error({ err: e }, 'audit checkpoint failed'));
      }, parseDuration(cfg.audit.checkpointInterval));
      this.checkpointTimer.unref();
    }

    for (const [name, addr] of Object.entries(cfg.listeners)) {
      if (name === 'http') continue;
      const mod = this.modules.get(name);
      if (!mod?.listen) throw new Error(`${cfg.file}: listeners.${name}: no protocol module "${name}" can listen (known: ${[...this.modules.keys()].join(', ')})`);
      // The module's refuse goes with the address: its front door refuses every connection it will not serve with it.
      const refuse = mod.refuse ? mod.refuse.bind(mod) : undefined;
      this.listeners.set(name, await mod.listen(this.ctx(name), { host: addr.host, port: addr.port, preauth: preauthOf(addr), refuse, drain: this.drainSignal.signal }));
    }
    await this.audit.append('system', 'gateway.started', this.nodeId, {
      listeners: Object.fromEntries([...this.listeners].map(([n, l]) => [n, `${l.host}:${l.port}`]).concat(this.front ? [['http', `${httpCfg.host}:${port}`]] : [])),
      targets: cfg.targets.map((t) => t.name),
      ...(this.cluster.internalPort !== null ? { internal: `${this.config.gateway.internal?.host ?? '127.0.0.1'}:${this.cluster.internalPort}` } : {}),
    });
    this.started = true;
    this.log.info({ url: this.publicUrl, node: this.nodeId }, 'gateway started');
    return this;
  }

  /**
   * The internal listener other nodes watch this node's sessions through: configured, or by default
   * on loopback wherever there can be another node (a PostgreSQL store, worker processes).
   */
  private internalListener(): { host: string; port: number; advertise: string } | null {
    const g = this.config.gateway;
    if (!g.internal && this.config.store.kind !== 'postgres' && workerCount(g.workers) <= 1) return null;
    const host = g.internal?.host ?? '127.0.0.1';
    const base = g.internal?.port ?? 0;
    const port = base && this.worker ? base + this.worker.index : base;
    return { host, port, advertise: g.internal?.advertise ?? (host === '0.0.0.0' || host === '::' ? hostname() : host) };
  }

  /**
   * Ready for traffic (GET /readyz, a load balancer's health check): started, the store answers
   * (and was not lost), the IdP is wired in when one is configured, every listener (of every worker)
   * is up, and the gateway is not draining. /healthz answers earlier.
   */
  async readiness(): Promise<Readiness> {
    const idpWanted = !!(this.config.idp.dev || this.config.idp.issuer);
    const store = this.started && !this.cluster.registry.storeLost
      && await withTimeout(this.store.getKv('health'), 2_000).then(() => true, () => false);
    const checks = {
      store,
      idp: this.started && (!idpWanted || this.oidc !== null),
      listeners: this.started && this.cluster.peersReady,
      draining: this.cluster?.draining ?? false,
    };
    return { ready: checks.store && checks.idp && checks.listeners && !checks.draining, checks };
  }

  /**
   * Drain (SIGTERM): /readyz fails, the protocol listeners stop accepting, live sessions get a
   * warning like the expiry warning and gateway.drainTimeout to finish; stop() ends the rest as
   * gateway_shutdown. Resolves when no session is left or the time is up.
   */
  async drain(): Promise<void> {
    if (!this.cluster) return;
    this.drainSignal.abort();
    const left = await this.cluster.drain(clusterTimings(this.config.gateway).drainTimeoutMs);
    this.log.info({ sessionsLeft: left }, 'drained');
  }

  /**
   * The gateway key comes from outside the store (gateway.key, or <dataDir>/gateway.key made on first
   * start); a key an older version kept in the store is moved out once, after keying its audit events.
   */
  private async openKeyAndAudit(): Promise<void> {
    const cfg = this.config;
    const checkpointFile = checkpointFileOf(cfg, this.dataDir);
    let k: Awaited<ReturnType<typeof loadGatewayKeyBytes>>;
    try {
      if (checkpointFile && !existsSync(dirname(checkpointFile))) {
        throw new ConfigError(cfg.file, 'audit.checkpoints.file', `a file in an existing directory (${dirname(checkpointFile)} does not exist)`);
      }
      if (parseDuration(cfg.audit.checkpointInterval) < 100) throw new ConfigError(cfg.file, 'audit.checkpointInterval', 'a duration of at least 100ms');
      k = await loadGatewayKeyBytes(this.store, gatewayKeySource(cfg, this.dataDir), { write: true });
    } catch (e) {
      await this.store.close();
      throw e instanceof KeyError ? new ConfigError(cfg.file, 'gateway.key', e.message) : e;
    }
    this.key = gatewayKey(k.raw, this.clock);
    this.audit = new AuditLog(this.store, this.clock, {
      key: this.key.deriveKey(AUDIT_KEY_LABEL),
      onError: (e) => this.log.error({ err: e }, 'audit append failed'),
      // Events written while the store is unavailable are held and written when it is back.
      retainOn: (e) => storeUnavailable(e) !== null,
      checkpoints: { file: checkpointFile, command: cfg.audit.checkpoints.command, gatewayId: this.nodeId, log: this.log.child({ c: 'audit' }) },
    });
    if (k.created) {
      this.log.info({ keyFile: k.from }, 'created the gateway key file; keep it (and a backup) apart from copies of the store');
      await this.audit.append('system', 'gateway.key.created', cfg.gateway.id, { file: k.from });
    }
    if (k.inStore) {
      const adopted = await this.audit.adoptUnkeyed();
      if ('broken' in adopted) this.log.error({ detail: adopted.broken }, 'the audit chain of this store was already broken; its older events stay unkeyed');
      await forgetStoredKey(this.store);
      this.log.warn({ keyFile: k.from }, 'moved the gateway key out of the store');
      await this.audit.append('system', 'gateway.key.moved', cfg.gateway.id, { to: k.from, keyedEvents: adopted.keyed, ...('broken' in adopted ? { chainBroken: adopted.broken } : {}) });
    }
  }

  private async startIdp(): Promise<void> {
    const idp = this.config.idp;
    let issuer = idp.issuer;
    let clientSecret = idp.clientSecret ? resolveSecret(idp.clientSecret, this.config, 'idp.clientSecret') : undefined;
    const redirectUri = `${this.publicUrl}/auth/callback`;
    if (idp.dev) {
      const secret = clientSecret ?? new (await import('../auth/secret.js')).Secret(this.key.deriveKey(DEV_CLIENT_SECRET_LABEL).toString('base64url'));
      clientSecret = secret;
      this.devIdp = await startDevIdp({
        host: idp.dev.host,
        port: idp.dev.port,
        users: idp.dev.users.map((u, i) => ({
          name: u.name, email: u.email, groups: u.groups,
          password: resolveSecret(u.password, this.config, `idp.dev.users[${i}].password`),
          totp: u.totp ? resolveSecret(u.totp, this.config, `idp.dev.users[${i}].totp`) : undefined,
        })),
        clients: [{
          client_id: idp.clientId, client_secret: secret.reveal(), redirect_uris: [redirectUri],
          grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        }],
        log: this.log.child({ c: 'dev-idp' }),
      });
      issuer = this.devIdp.issuer;
    }
    if (!issuer) {
      this.log.warn('no IdP configured: browser and CLI sign-in are off; API tokens still work');
      return;
    }
    this.oidc = await createOidc({
      issuer, clientId: idp.clientId, clientSecret, redirectUri, scopes: idp.scopes, groupsClaim: idp.groupsClaim,
      mfaAcr: idp.mfaAcr, log: this.log.child({ c: 'oidc' }), clock: this.clock, key: this.key,
      maxPendingDevices: this.config.gateway.maxPendingSignIns, maxPendingDevicesPerSource: this.config.gateway.maxPendingSignInsPerSource,
    });
  }

  /** Whether a session runs here, or on another gateway of the same store. */
  private async liveAnywhere(id: string): Promise<boolean> {
    if (this.sessions.get(id)) return true;
    const s = await this.store.getSession(id);
    return !!s && s.state === 'active' && s.gatewayId !== this.config.gateway.id;
  }

  private setupFailSafes(rawStore: Store): void {
    const log = this.log.child({ c: 'failsafe' });
    const now = () => this.clock.now();
    const mode = this.config.recordings.onFailure;
    this.recordingGuard = new FailSafe({
      name: 'recordings', retryMs: 1000, now, log,
      probe: () => this.recorder.probe(),
      onFail: async (st) => {
        this.failing?.set({ guard: 'recordings' }, 1);
        void this.audit.append('system', 'recording.failing', this.nodeId, { code: st.code, message: st.message, onFailure: mode }).catch(() => undefined);
        this.notify({ kind: 'recording_failed', code: st.code, message: st.message, onFailure: mode });
        if (mode === 'terminate') {
          await this.sessions.terminateWhere(() => true, { code: 'recording_failed', message: `Tollgate: session recordings cannot be written (${st.code}); every session was ended (recordings.onFailure: terminate).` });
        }
      },
      onRecover: async (downMs) => {
        this.failing?.set({ guard: 'recordings' }, 0);
        void this.audit.append('system', 'recording.recovered', this.nodeId, { downMs }).catch(() => undefined);
        this.notify({ kind: 'recording_recovered', downMs });
      },
    });
    this.storeGuard = new FailSafe({
      name: 'store', retryMs: 1000, now, log,
      probe: async () => {
        try {
          await rawStore.setKv(`gateway:${this.config.gateway.id}:store-probe`, String(now()));
          return { ok: true };
        } catch (e) {
          const u = storeUnavailable(e);
          return { ok: false, code: u?.code ?? 'EIO', message: u?.message ?? (e as Error).message };
        }
      },
      onFail: async (st) => {
        this.failing?.set({ guard: 'store' }, 1);
        void this.audit?.append('system', 'store.failing', this.nodeId, { code: st.code, message: st.message }).catch(() => undefined);
        this.notify({ kind: 'store_failed', code: st.code, message: st.message });
        // What happens now cannot be audited: end every session (their leases are revoked on the targets).
        await this.sessions?.terminateWhere(() => true, { code: 'store_unavailable', message: `Tollgate: the gateway cannot write its audit store (${st.code}); the session was ended (fail-closed).` });
      },
      onRecover: async (downMs) => {
        this.failing?.set({ guard: 'store' }, 0);
        // In order: the audit events held meanwhile, session ends and seals that could not be written, then the reaper.
        await this.audit.resume();
        await this.sessions.flushUnrecorded();
        await this.recorder.reindex();
        const reaped = await this.sessions.reap();
        const sealed = await this.recorder.sealOrphans((id) => this.liveAnywhere(id));
        await this.audit.append('system', 'store.recovered', this.nodeId, { downMs, reaped, sealed }).catch(() => undefined);
        this.notify({ kind: 'store_recovered', downMs });
      },
    });
  }

  /** A recording file failed: audit it, and unless recordings.onFailure is continue, end that session and refuse new ones. */
  private recordingFailed(f: RecordingFailure): void {
    const mode = this.config.recordings.onFailure;
    void this.audit.append('system', 'recording.write_failed', f.sessionId, { recording: f.recordingId, kind: f.kind, code: f.code, message: f.message, onFailure: mode }).catch(() => undefined);
    this.recordingGuard.failed(f.code, f.message);
    if (mode === 'continue') return;
    // Not from inside the write that failed (a relay's data handler): end the session right after.
    setImmediate(() => this.sessions.get(f.sessionId)?.terminate({
      code: 'recording_failed', message: `Tollgate: this session's recording cannot be written (${f.code}); the session was ended (recordings.onFailure: ${mode}).`,
    }));
  }

  /** Null when new sessions may open; else the refusal every protocol shows. */
  async admission(): Promise<string | null> {
    if (!(await this.storeGuard.check()).ok) return FAIL_CLOSED;
    if (this.config.recordings.onFailure !== 'continue' && !(await this.recordingGuard.check()).ok) return FAIL_CLOSED;
    return null;
  }

  private sessionsActive!: Gauge;
  private failing!: Gauge;
  private sessionsTotal!: Counter;
  accessRefused!: Counter;
  httpRequests!: Counter;

  private setupMetrics(): void {
    collectDefaultMetrics({ register: this.metrics, prefix: 'tollgate_' });
    this.sessionsActive = new Gauge({ name: 'tollgate_sessions_active', help: 'Live proxied sessions', labelNames: ['protocol'], registers: [this.metrics] });
    this.sessionsTotal = new Counter({ name: 'tollgate_sessions_total', help: 'Sessions started', labelNames: ['protocol'], registers: [this.metrics] });
    this.accessRefused = new Counter({ name: 'tollgate_access_refused_total', help: 'Refused connection attempts', labelNames: ['protocol', 'code'], registers: [this.metrics] });
    this.httpRequests = new Counter({ name: 'tollgate_api_requests_total', help: 'API requests', labelNames: ['status'], registers: [this.metrics] });
    this.failing = new Gauge({ name: 'tollgate_failing', help: 'A fail-closed guard is failing (1): new sessions are refused', labelNames: ['guard'], registers: [this.metrics] });
  }

  /** A policy's working hours close: warn its live sessions, then end them (break-glass sessions go on). */
  private windowEvent(e: WindowEvent): void {
    const pol = this.config.policies.find((p) => p.name === e.policy);
    const under = (s: Session) => !s.grant.breakGlass && this.engine.hoursPolicy(s.target.name, s.role.name)?.name === e.policy;
    const hours = pol?.hours ? describeHours(pol.hours) : e.policy;
    if (e.phase === 'closing') {
      const ms = Math.max(0, e.closesAt - this.clock.now());
      this.sessions.warnWhere(under, (s) => `Tollgate: the working hours for ${s.target.name} (${hours}) end in ${Math.max(1, Math.round(ms / 1000))} seconds; the session will be closed then.`, ms);
      return;
    }
    void this.sessions.terminateWhere(under, { code: 'expired', message: `Tollgate: the working hours for this access (${hours}) are over; the session is closed.` }).then((n) => {
      if (n) return this.audit.append('system', 'policy.hours_closed', e.policy, { policy: e.policy, sessionsEnded: n, closesAt: e.closesAt });
      return undefined;
    }).catch((err) => this.log.error({ err, policy: e.policy }, 'ending sessions at the close of working hours failed'));
  }

  notify(event: Record<string, unknown>): void {
    void this.audit.append('system', 'notify', null, event);
    const cmd = event['kind'] === 'breakglass' && this.config.breakGlass.alertCommand ? this.config.breakGlass.alertCommand : this.config.notify.command;
    if (cmd?.length) runNotify(cmd, event, this.log);
    this.notifications?.publish(event);
  }

  private directoryCache: { config: GatewayConfig['directory']; dir: Directory | null } | null = null;
  /** The Directory of the current `directory` section (rebuilt when a config reload changes it). */
  directory(): Directory | null {
    const c = this.config.directory;
    const cached = this.directoryCache;
    if (cached && cached.config === c) return cached.dir;
    const dir = c ? openDirectory(c, (ref, path) => resolveSecret(ref as never, this.config, path), () => this.vault.current(DIRECTORY_VAULT_TARGET, DIRECTORY_VAULT_FIELD)) : null;
    this.directoryCache = { config: c, dir };
    return dir;
  }

  /** The protocol context for one module (cached). */
  ctx(protocol: string): ProtocolContext {
    let c = this.ctxCache.get(protocol);
    if (c) return c;
    const gw = this;
    const dataDir = join(this.dataDir, protocol);
    c = {
      log: this.log.child({ protocol }),
      clock: this.clock,
      config: {
        get tls() { return gw.tls; },
        dataDir,
        get publicHost() { return gw.publicHost; },
        get publicUrl() { return gw.publicUrl; },
        target: (n) => this.config.targets.find((t) => t.name === n),
        targets: () => this.config.targets,
        resolveSecret: (ref, path) => resolveSecret(ref as never, this.config, path),
        credential: async (target, field) => {
          const ref = credentialRef(target, field);
          if (isVaultRef(ref)) return this.vault.current(target.name, field);
          return resolveSecret(ref as never, this.config, `targets.${target.name}.credentials.${field}`);
        },
      },
      access: {
        pendingSecrets: async (u, p, addr) => {
          // Draining or without the store: none (authenticate then refuses with the reason, in the client's protocol).
          if (this.cluster?.admit()) return [];
          try {
            return await this.access.pendingSecrets(u, p, addr);
          } catch (e) {
            if (!storeUnavailable(e)) throw e;
            return [];
          }
        },
        authenticate: async (req) => {
          // Draining or without the store: refused before any secret is looked at (so none is spent).
          const unavailable = this.cluster?.admit();
          if (unavailable) {
            this.accessRefused.inc({ protocol: req.protocol, code: 'unavailable' });
            return { ok: false, code: 'denied', reason: unavailable };
          }
          // Fail closed before a secret is consumed: nothing can be recorded or audited now.
          const refused = await this.admission();
          let out: Awaited<ReturnType<Access['authenticate']>>;
          if (refused) out = { ok: false, code: 'denied', reason: refused };
          else {
            try {
              out = await this.access.authenticate(req);
            } catch (e) {
              if (!storeUnavailable(e)) throw e;
              out = { ok: false, code: 'denied', reason: FAIL_CLOSED };
            }
          }
          if (!out.ok) this.accessRefused.inc({ protocol: req.protocol, code: out.code });
          return out;
        },
        beginBrowserApproval: (req) => {
          const release = this.pendingSignIns.acquire(req.clientAddr); // throws TooManyPending
          const a = this.approvals.begin(req);
          return { url: a.url, wait: (ms) => a.wait(ms).finally(release), cancel: () => { a.cancel(); release(); } };
        },
        webPrincipal: async (cookie) => {
          const r = await this.callers.fromCookie(cookie);
          return r.ok ? r.principal : null;
        },
      },
      crypto: {
        seal: (value, ttlMs) => this.key.seal(value, ttlMs),
        unseal: (sealed) => this.key.unseal(sealed),
        deriveKey: (label) => this.key.deriveKey(`protocol:${protocol}:${label}`),
      },
      sessions: {
        open: (auth, meta) => this.sessions.open(auth, meta),
        withSession: (auth, meta, fn) => this.sessions.withSession(auth, meta, fn),
      },
      state: {
        kv: {
          get: (key) => this.store.getKv(`protocol:${protocol}:${key}`),
          set: (key, value) => this.store.setKv(`protocol:${protocol}:${key}`, value),
        },
        audit: async (action, subject, data, opts) => {
          await this.audit.append('system', fromModule(action), subject, data);
          if (opts?.alert) this.notify({ kind: 'alert', action, subject, protocol, ...data });
        },
        get directory() { return gw.directory(); },
      },
    };
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    this.ctxCache.set(protocol, c);
    return c;
  }

  private certSha256: { pem: string; sha256: string } | null = null;
  /** SHA-256 of the gateway's TLS certificate (the leaf, first in tls.cert) as lower-case hex pairs joined by ':' (clients pin it). */
  tlsCertSha256(): string {
    if (this.certSha256?.pem !== this.tls.cert) this.certSha256 = { pem: this.tls.cert, sha256: new X509Certificate(this.tls.cert).fingerprint256.toLowerCase() };
    return this.certSha256.sha256;
  }

  /** Principal for an identity sub from the store (system actions, tests). */
  async principalOf(sub: string, via: Principal['via'], mfaAt: number | null = null): Promise<Principal | null> {
    const id = await this.store.getIdentity(sub);
    return id ? { sub: id.sub, email: id.email, name: id.name, groups: id.groups, mfaAt, via } : null;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.reaperTimer) clearInterval(this.reaperTimer);
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.recordingGuard?.stop();
    this.storeGuard?.stop();
    this.engine?.stop();
    await this.rotation?.stop().catch(() => undefined);
    this.links?.stop();
    this.sessions?.stop();
    await this.grantLeases?.stop();
    await this.links?.idle();
    await this.sessions?.terminateWhere(() => true, { code: 'gateway_shutdown', message: 'Tollgate: the gateway is shutting down.' });
    for (const l of this.listeners.values()) await l.close().catch(() => undefined);
    await this.cluster?.stop().catch(() => undefined);
    await this.recorder?.closeAll().catch(() => undefined);
    this.http?.close();
    await this.devIdp?.close().catch(() => undefined);
    await this.audit?.append('system', 'gateway.stopped', this.nodeId, {}).catch(() => undefined);
    await this.notifications?.stop().catch((e) => this.log.error({ err: e }, 'notifications did not stop cleanly'));
    // The stream sends what is left, up to gateway.stopped, for a few seconds; the rest goes after the next start.
    await this.siem?.stop().catch((e) => this.log.error({ err: e }, 'SIEM stream did not stop cleanly'));
    await this.audit?.checkpoint().catch((e) => this.log.error({ err: e }, 'audit checkpoint failed'));
    await this.audit?.close();
    await this.store?.close();
  }
}

/** A listener's pre-authentication bounds from its config (defaults for what it does not set). */
export function preauthOf(l: Pick<ListenerConfig, 'loginTimeout' | 'maxStartups' | 'maxStartupsPerSource'>): PreauthLimits {
  return {
    loginTimeoutMs: l.loginTimeout !== undefined ? parseDuration(l.loginTimeout) : DEFAULT_PREAUTH.loginTimeoutMs,
    maxStartups: l.maxStartups ?? DEFAULT_PREAUTH.maxStartups,
    maxStartupsPerSource: l.maxStartupsPerSource ?? DEFAULT_PREAUTH.maxStartupsPerSource,
  };
}
