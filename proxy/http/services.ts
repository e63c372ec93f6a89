import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Clock } from '../../policies/clock.js';
import type { JitEngine } from '../../policies/engine.js';
import type { Recorder } from '../../recorder/index.js';
import type { GatewayKey } from '../../auth/keys.js';
import type { ApiTokens, ConnectionSecrets, WebSessions } from '../../auth/credentials.js';
import type { Callers, IdpLinks } from '../../auth/lifecycle.js';
import type { Oidc } from '../../auth/oidc.js';
import type { TotpFactors } from '../../auth/mfa.js';
import type { ProtocolContext, ProtocolModule, TlsMaterial } from '../../protocols/types.js';
import type { TargetConfig } from '../../protocols/config.js';
import type { GatewayConfig } from '../config.js';
import type { Store } from '../store/types.js';
import type { AuditLog } from '../audit.js';
import type { BrowserApprovals } from '../access.js';
import type { SessionManager } from '../sessions.js';
import type { Locks } from '../locks.js';
import type { GrantLeases } from '../grant-leases.js';
import type { SshKeys } from '../keys.js';
import type { KillSwitch } from '../kill.js';
import type { GatewayRoles } from '../roles.js';
import type { HttpFront } from './server.js';
import type { Cluster, Readiness } from '../cluster/index.js';
import type { Notifications } from '../notifications/index.js';
import type { Siem } from '../siem/index.js';
import type { Vault } from '../vault.js';
import type { VaultRotation } from '../vault-rotation.js';

/**
 * The services the HTTP front's routes are built from. Each route module takes only the ones it
 * uses (a Pick of this); the gateway provides them. Values that are known only once the gateway is
 * up (publicUrl, oidc) are read at request time.
 */
export interface ApiServices {
  readonly config: GatewayConfig;
  readonly clock: Clock;
  readonly log: Logger;
  readonly store: Store;
  readonly audit: AuditLog;
  readonly engine: JitEngine<TargetConfig>;
  readonly sessions: SessionManager;
  readonly recorder: Recorder;
  readonly key: GatewayKey;
  readonly tokens: ApiTokens;
  readonly webSessions: WebSessions;
  readonly secrets: ConnectionSecrets;
  /** Authenticator codes the gateway checks itself (MFA at connect time). */
  readonly mfa: TotpFactors;
  readonly links: IdpLinks;
  readonly callers: Callers;
  readonly approvals: BrowserApprovals;
  readonly oidc: Oidc | null;
  readonly http: HttpFront;
  readonly tls: TlsMaterial;
  readonly metrics: Registry;
  readonly modules: ReadonlyMap<string, ProtocolModule>;
  readonly publicUrl: string;
  readonly publicHost: string;
  readonly locks: Locks;
  /** Grant-level leases: refuses a request whose role elevates an own directory account the person does not have. */
  readonly grantLeases?: Pick<GrantLeases, 'refusal'>;
  readonly keys: SshKeys;
  readonly kill: KillSwitch;
  readonly roles: GatewayRoles;
  /** Several nodes: live views of other nodes' sessions (the internal channel). */
  readonly cluster: Cluster;
  /** What /readyz answers. */
  readiness(): Promise<Readiness>;
  readonly notifications: Notifications;
  readonly siem: Siem;
  /** Target admin credentials kept sealed in the store, and their rotation. */
  readonly vault: Vault;
  readonly rotation: VaultRotation;
  /** The protocol context of a module (target checks, connection secret verifiers). */
  ctx(protocol: string): ProtocolContext;
  listenerAddress(name: string): { host: string; port: number } | null;
  /** SHA-256 of the gateway's TLS certificate, as clients pin it. */
  tlsCertSha256(): string;
}
