import type { ProtocolContext, TargetConfig, RoleConfig, LiveSession, Revoked } from '../../types.js';
import type { LeaseRecord } from '../../../proxy/store/types.js';
import type { Secret } from '../../../auth/secret.js';
import type { CertAgent } from '../cert-agent.js';
import type { HostKeyCheck } from '../hostkeys.js';

/** What the upstream dial needs: never stored, never logged. */
export interface UpstreamCredential {
  username: string;
  password?: Secret;
  privateKey?: Secret;
  agent?: CertAgent;
  /** Installs ssh2's certificate-aware publickey step on the upstream connection. */
  certificate?: boolean;
  /** The host key the session connection must see (never trust-on-first-use; see hostkeys.ts). */
  hostKey: HostKeyCheck;
}

export interface Provisioner {
  kind: string;
  /** What its lease holds (ProtocolModule.leaseKinds). */
  holds: string;
  mint(ctx: ProtocolContext, session: LiveSession, target: TargetConfig, role: RoleConfig): Promise<UpstreamCredential>;
  revoke(ctx: ProtocolContext, target: TargetConfig, lease: LeaseRecord): Promise<Revoked>;
}
