/** RDP target configuration: address, how the session credential is minted, options, per-role channels. */
import net from 'node:net';
import type tls from 'node:tls';
import type { RoleConfig, TargetConfig } from '../types.js';
import { parseAddress } from '../net.js';

export const NAME_RE = /^[a-z_][a-z0-9_-]{0,30}$/;
export const KNOWN_CHANNELS = ['cliprdr', 'rdpdr', 'rdpsnd', 'drdynvc', 'rail', 'rail_wi', 'rail_ri', 'encomsp', 'remdesk'] as const;

export interface RdpOptions {
  /** Seconds to wait for the target to answer. */
  connectTimeout: number;
  /** Verify the target's TLS certificate against this CA (PEM), and that it names the host of `address`; without it the target's certificate is not verified. */
  ca: string | null;
  /** Offer NLA (CredSSP/NTLMv2) to the target besides TLS (default true); the target picks. */
  nla: boolean;
}

/**
 * 'local-account': an ephemeral Linux account on this host (xrdp on the gateway's machine or a shared host).
 * 'sam-file': an existing account whose NT hash lives in a winpr SAM file (FreeRDP servers): a
 * password is minted for the session and replaced by an unknown one afterwards (rotation).
 */
export type RdpCredentials =
  | { mode: 'local-account'; prefix: string }
  | { mode: 'sam-file'; path: string; user: string; domain: string };

/** Account and domain names that fit a SAM file line (no ':' or line breaks). */
export const SAM_NAME_RE = /^[A-Za-z0-9._$-]{1,64}$/;

export const DEFAULT_PORT = 3389;

export function credentialsOf(target: TargetConfig): RdpCredentials {
  const c = target.credentials as Record<string, unknown>;
  if (c.mode === 'sam-file') {
    return { mode: 'sam-file', path: String(c.path ?? ''), user: String(c.user ?? ''), domain: typeof c.domain === 'string' ? c.domain : '' };
  }
  const prefix = typeof c.prefix === 'string' ? c.prefix : 'tg-';
  return { mode: 'local-account', prefix };
}

export function optionsOf(target: TargetConfig): RdpOptions {
  const o = target.options as Record<string, unknown>;
  return {
    connectTimeout: typeof o.connectTimeout === 'number' ? o.connectTimeout : 10,
    ca: typeof o.ca === 'string' ? o.ca : null,
    nla: o.nla !== false,
  };
}

/** TLS towards the target (session and check alike): with a CA the chain and the host name are checked. */
export function targetTlsOptions(host: string, ca: string | null): tls.ConnectionOptions {
  return { host, servername: net.isIP(host) ? undefined : host, rejectUnauthorized: ca !== null, ...(ca ? { ca } : {}) };
}

/** Linux groups the session account joins for this role (group elevation per role). */
export function roleGroups(role: RoleConfig): string[] {
  return Array.isArray(role.groups) ? role.groups.filter((g): g is string => typeof g === 'string') : [];
}

/** Virtual channels this role may use; default: all but drive redirection. */
export function roleChannels(role: RoleConfig): Set<string> {
  if (Array.isArray(role.channels)) return new Set(role.channels.filter((c): c is string => typeof c === 'string').map((c) => c.toLowerCase()));
  return new Set(['cliprdr', 'rdpsnd', 'drdynvc']);
}

export function validateTarget(target: TargetConfig): { path: string; expected: string } | null {
  try { parseAddress(target.address, DEFAULT_PORT); } catch { return { path: 'address', expected: 'host:port of the RDP server' }; }
  const c = target.credentials as Record<string, unknown>;
  if (c.mode !== undefined && c.mode !== 'local-account' && c.mode !== 'sam-file') return { path: 'credentials.mode', expected: '"local-account" or "sam-file"' };
  if (c.mode === 'sam-file') {
    if (typeof c.path !== 'string' || !c.path.startsWith('/') || /[\0\n]/.test(c.path)) return { path: 'credentials.path', expected: 'the absolute path of the winpr SAM file' };
    if (typeof c.user !== 'string' || !SAM_NAME_RE.test(c.user)) return { path: 'credentials.user', expected: 'the account name in the SAM file (letters, digits, . _ $ -)' };
    if (c.domain !== undefined && (typeof c.domain !== 'string' || (c.domain !== '' && !SAM_NAME_RE.test(c.domain)))) return { path: 'credentials.domain', expected: 'a domain name (letters, digits, . _ $ -) or empty' };
  }
  if (c.prefix !== undefined && (typeof c.prefix !== 'string' || !/^[a-z][a-z0-9-]{0,8}$/.test(c.prefix))) {
    return { path: 'credentials.prefix', expected: 'a short prefix of lowercase letters, digits and - (at most 9 characters)' };
  }
  const o = target.options as Record<string, unknown>;
  if (o.connectTimeout !== undefined && (typeof o.connectTimeout !== 'number' || o.connectTimeout <= 0)) return { path: 'options.connectTimeout', expected: 'seconds (a positive number)' };
  if (o.ca !== undefined && typeof o.ca !== 'string') return { path: 'options.ca', expected: 'a PEM certificate' };
  if (o.nla !== undefined && typeof o.nla !== 'boolean') return { path: 'options.nla', expected: 'true or false' };
  for (const [i, r] of target.roles.entries()) {
    if (r.groups !== undefined && (!Array.isArray(r.groups) || !r.groups.every((g) => typeof g === 'string' && NAME_RE.test(g)))) {
      return { path: `roles[${i}].groups`, expected: 'a list of Linux group names' };
    }
    if (r.channels !== undefined && (!Array.isArray(r.channels) || !r.channels.every((ch) => typeof ch === 'string' && /^[a-z_]{1,7}$/i.test(ch)))) {
      return { path: `roles[${i}].channels`, expected: `a list of virtual channel names such as ${KNOWN_CHANNELS.join(', ')}` };
    }
  }
  return null;
}
