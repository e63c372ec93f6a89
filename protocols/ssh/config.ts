/** The ssh target section: credentials.mode and what each mode needs. */
import { isVaultRef } from '../../auth/secret.js';
import type { TargetConfig, RoleConfig } from '../types.js';
import { LINUX_NAME_RE } from '../linux-accounts.js';
import { parseAddress } from '../net.js';

export type SshMode = 'ephemeral-account' | 'certificate' | 'checkout';
export const MODES: SshMode[] = ['ephemeral-account', 'certificate', 'checkout'];

/** Linux user and group names we put into commands: strict, so no quoting can go wrong. */
export const NAME_RE = LINUX_NAME_RE;
/** Absolute paths we put into admin commands (trustedCaFile, revokedKeysFile). */
export const PATH_RE = /^\/[A-Za-z0-9_./-]{1,255}$/;

export interface AdminCredential {
  username: string;
  privateKey?: unknown;
  password?: unknown;
  /** Prefix admin commands with `sudo -n` (default: when the admin is not root). */
  sudo?: boolean;
}

export const DEFAULT_PORT = 22;

export function modeOf(target: TargetConfig): SshMode {
  return target.credentials.mode as SshMode;
}

export function adminOf(target: TargetConfig): AdminCredential {
  return target.credentials.admin as AdminCredential;
}

export function roleGroups(role: RoleConfig): string[] {
  const g = role.groups;
  return Array.isArray(g) ? g.map(String) : [];
}

/** The login a certificate is valid for: role.principals, else role.login. */
export function rolePrincipals(role: RoleConfig): string[] {
  if (Array.isArray(role.principals) && role.principals.length) return role.principals.map(String);
  if (typeof role.login === 'string') return [role.login];
  return [];
}

function isRef(v: unknown): boolean {
  return !!v && typeof v === 'object' && Object.keys(v).length === 1 && ['env', 'file', 'value'].includes(Object.keys(v)[0]!);
}

export function validateSshTarget(t: TargetConfig): { path: string; expected: string } | null {
  try { parseAddress(t.address, DEFAULT_PORT); } catch { return { path: 'address', expected: 'host:port' }; }
  const c = t.credentials;
  if (!MODES.includes(c.mode as SshMode)) return { path: 'credentials.mode', expected: `one of ${MODES.join(', ')}` };
  const admin = c.admin as AdminCredential | undefined;
  if (!admin || typeof admin !== 'object') return { path: 'credentials.admin', expected: 'an admin credential {username, privateKey or password}' };
  if (typeof admin.username !== 'string' || !NAME_RE.test(admin.username)) return { path: 'credentials.admin.username', expected: 'a Linux user name' };
  // The admin credential may be kept in the vault ({vault: true}; rotated by ./rotate.ts).
  const adminRef = (v: unknown) => isRef(v) || isVaultRef(v);
  if (!adminRef(admin.privateKey) && !adminRef(admin.password)) return { path: 'credentials.admin', expected: 'privateKey or password as a secret reference, or {vault: true}' };
  for (const k of ['privateKey', 'password'] as const) {
    if (admin[k] !== undefined && !adminRef(admin[k])) return { path: `credentials.admin.${k}`, expected: 'a secret reference or {vault: true}' };
  }
  if (c.prefix !== undefined && (typeof c.prefix !== 'string' || !/^[a-z][a-z0-9]{0,7}-$/.test(c.prefix))) {
    return { path: 'credentials.prefix', expected: 'a short prefix like "tg-"' };
  }
  for (const k of ['trustedCaFile', 'revokedKeysFile']) {
    if (c[k] !== undefined && (typeof c[k] !== 'string' || !PATH_RE.test(c[k] as string))) return { path: `credentials.${k}`, expected: 'an absolute path' };
  }
  const fp = t.options.hostKeyFingerprint;
  if (fp !== undefined && (typeof fp !== 'string' || !/^SHA256:[A-Za-z0-9+/]{43}$/.test(fp))) {
    return { path: 'options.hostKeyFingerprint', expected: 'the target host key fingerprint as "SHA256:..." (ssh-keygen -lf)' };
  }
  for (const [i, r] of t.roles.entries()) {
    for (const k of ['groups', 'principals'] as const) {
      const v = r[k];
      if (v !== undefined && !(Array.isArray(v) && v.every((x) => typeof x === 'string'))) return { path: `roles[${i}].${k}`, expected: k === 'groups' ? 'a list of Linux group names' : 'a list of Linux user names' };
    }
    if (r.login !== undefined && typeof r.login !== 'string') return { path: `roles[${i}].login`, expected: 'a Linux user name' };
    if (r.reveal !== undefined && (r.reveal !== true && r.reveal !== false)) return { path: `roles[${i}].reveal`, expected: 'true or false' };
    if (r.reveal === true && c.mode !== 'checkout') return { path: `roles[${i}].reveal`, expected: 'only with credentials.mode checkout (the password the holder may reveal)' };
    for (const g of roleGroups(r)) if (!NAME_RE.test(g)) return { path: `roles[${i}].groups`, expected: 'Linux group names' };
    if (c.mode === 'certificate') {
      const ps = rolePrincipals(r);
      if (!ps.length) return { path: `roles[${i}]`, expected: 'a login or principals for certificate mode' };
      if (ps.some((p) => !NAME_RE.test(p))) return { path: `roles[${i}].principals`, expected: 'Linux user names' };
    }
  }
  if (c.mode === 'checkout') {
    if (typeof c.account !== 'string' || !NAME_RE.test(c.account)) return { path: 'credentials.account', expected: 'a Linux user name' };
    if (!isRef(c.password)) return { path: 'credentials.password', expected: 'a secret reference (the starting password)' };
    if (c.whenHeld !== undefined && c.whenHeld !== 'refuse' && c.whenHeld !== 'queue') return { path: 'credentials.whenHeld', expected: 'one of "refuse", "queue"' };
  } else if (c.whenHeld !== undefined) {
    return { path: 'credentials.whenHeld', expected: 'nothing: only checkout accounts are held by one identity at a time' };
  }
  const o = t.options;
  if (o.keepHome !== undefined) {
    if (typeof o.keepHome !== 'boolean') return { path: 'options.keepHome', expected: 'true or false' };
    if (o.keepHome && c.mode !== 'ephemeral-account') return { path: 'options.keepHome', expected: 'only with credentials.mode ephemeral-account (the other modes log in to an existing account)' };
  }
  if (o.keepHomeDir !== undefined && (typeof o.keepHomeDir !== 'string' || !PATH_RE.test(o.keepHomeDir) || /(^|\/)\.\.?(\/|$)/.test(o.keepHomeDir) || o.keepHomeDir === '/')) {
    return { path: 'options.keepHomeDir', expected: 'an absolute directory path such as /home/tollgate' };
  }
  if (o.keepHomeUidBase !== undefined && !(Number.isInteger(o.keepHomeUidBase) && (o.keepHomeUidBase as number) >= 1000 && (o.keepHomeUidBase as number) <= 2_000_000_000)) {
    return { path: 'options.keepHomeUidBase', expected: 'a whole number between 1000 and 2000000000 (the first uid for kept homes)' };
  }
  return null;
}

/** The account a checkout target's grants hold alone, and what a second request meets. */
export function checkoutAccountOf(t: TargetConfig): { key: string; whenHeld: 'refuse' | 'queue' } | null {
  if (t.credentials.mode !== 'checkout' || typeof t.credentials.account !== 'string') return null;
  return { key: `ssh:${t.address}:${t.credentials.account}`, whenHeld: t.credentials.whenHeld === 'queue' ? 'queue' : 'refuse' };
}
