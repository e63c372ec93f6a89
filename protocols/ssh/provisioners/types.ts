import type { ProtocolContext, TargetConfig, RoleConfig, LiveSession } from '../../types.js';
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
  mint(ctx: ProtocolContext, session: LiveSession, target: TargetConfig, role: RoleConfig): Promise<UpstreamCredential>;
  revoke(ctx: ProtocolContext, target: TargetConfig, lease: LeaseRecord): Promise<void>;
}

/** A shell function that retries commands failing on /etc/passwd|shadow|group locks (parallel useradd). */
export const RETRY_SH = `retry() {
  i=0
  while :; do
    if out=$("$@" 2>&1); then return 0; fi
    case "$out" in
      *lock*) i=$((i+1)); if [ "$i" -ge 100 ]; then echo "$out" >&2; return 1; fi; sleep 0.1 ;;
      *) echo "$out" >&2; return 1 ;;
    esac
  done
}`;

/** Single-quote for sh; callers still validate names strictly before this. */
export function shq(v: string): string {
  return `'${v.replace(/'/g, `'\\''`)}'`;
}
