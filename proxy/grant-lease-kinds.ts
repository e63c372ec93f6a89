/**
 * Lease kinds that belong to a grant, not to a session: proxy/grant-leases.ts mints them when a
 * grant starts and revokes them when it ends (expiry, revoke, lock). The session reaper
 * (proxy/sessions.ts) leaves them alone, and they are a standing privilege only once their grant is
 * over. A module of its own so that sessions.ts and grant-leases.ts both depend on it, not on each other.
 */
import type { RoleConfig } from '../protocols/config.js';
import { validDirectoryGroup } from '../protocols/directory-leases.js';
import type { LeaseRecord, GrantRecord } from './store/types.js';

export const GRANT_LEASE_KINDS: ReadonlySet<string> = new Set(['directory-group']);

/** A grant-level lease: no session, and a kind proxy/grant-leases.ts owns. */
export function isGrantLease(l: Pick<LeaseRecord, 'kind' | 'sessionId'>): boolean {
  return l.sessionId === null && GRANT_LEASE_KINDS.has(l.kind);
}

/** Whether the grant a grant-level lease belongs to still runs (then the lease is no standing privilege). */
export function grantRuns(g: Pick<GrantRecord, 'state' | 'expiresAt'> | null, now: number): boolean {
  return !!g && g.state === 'active' && g.expiresAt > now;
}

/** The role's ownAccountGroups (cn or DN of each group); [] when none. */
export function ownAccountGroupsOf(role: RoleConfig | undefined): string[] {
  const v = role?.['ownAccountGroups'];
  return Array.isArray(v) ? v.filter((g): g is string => typeof g === 'string') : [];
}

/** Config check of a role's ownAccountGroups: null when fine, else what is expected. */
export function checkOwnAccountGroups(role: RoleConfig, haveDirectory: boolean): string | null {
  const v = role['ownAccountGroups'];
  if (v === undefined) return null;
  if (!Array.isArray(v) || v.length === 0 || !v.every(validDirectoryGroup)) return 'a list of directory groups (a cn such as domain-admins, or a DN)';
  if (!haveDirectory) return 'a `directory` section (the directory where the person\'s own account lives)';
  return null;
}

