/**
 * The two directory lease kinds, as plain functions any protocol module (or the gateway) can use:
 * `create*(ctx, data)` does the work for data that is already stored in the lease, `revoke*(ctx,
 * lease)` undoes it from the stored data alone (teardown, a failed mint, the reaper after a crash).
 *
 * - `directory-account`: an account `tg-<identity>-<random>` (AD's 20-character sAMAccountName
 *   limit) below the directory's usersDn, with a random password (AD: unicodePwd over LDAPS;
 *   OpenLDAP: a posixAccount whose password the Password Modify extended operation sets), in the
 *   role's groups, enabled; AD's accountExpires is the grant's end. At the end it is disabled,
 *   taken out of its groups and deleted — only if its description still names the lease.
 * - `directory-group`: the person's own account (found by `mail` or `userPrincipalName`) joins
 *   privileged groups while a grant is active and leaves them when it ends.
 */
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { Secret, noteIssued } from '../auth/secret.js';
import type { LeaseRecord } from '../proxy/store/types.js';
import { accountMarker, randomPassword, type Directory } from './directory.js';
import { isDn, sameDn, splitDn } from './ldap-escape.js';

export const ACCOUNT_KIND = 'directory-account';
export const GROUP_KIND = 'directory-group';

/** What the directory lease functions need from their caller's context. */
export interface DirectoryLeaseContext {
  readonly state: { readonly directory: Directory | null };
  readonly log: Logger;
}

/** A minted name: tg-<up to 11 letters/digits of the identity>-<5 random>, at most 20 characters. */
export const MINTED_NAME_RE = /^tg-[a-z0-9]{1,11}-[a-z0-9]{5}$/;

export function accountName(identity: string): string {
  const who = identity.toLowerCase().replace(/@.*$/, '').replace(/[^a-z0-9]/g, '').slice(0, 11) || 'user';
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let suffix = '';
  for (let i = 0; i < 5; i++) suffix += alphabet[randomInt(alphabet.length)];
  return `tg-${who}-${suffix}`;
}

/** A group reference a role may name: a DN that parses, or a cn (no control characters, at most 256). */
export function validDirectoryGroup(g: unknown): g is string {
  if (typeof g !== 'string' || g.length === 0 || g.length > 256 || /[\u0000-\u001f\u007f]/.test(g)) return false;
  return g.includes('=') ? isDn(g) : true;
}

function directoryOf(ctx: DirectoryLeaseContext): Directory {
  if (!ctx.state.directory) throw new Error('no directory is configured (the `directory` section)');
  return ctx.state.directory;
}

export interface AccountLeaseData {
  dn: string;
  sam: string;
  upn: string;
  /** Group DNs, resolved before the lease was stored. */
  groups: string[];
  identity: string;
  expiresAt: number;
}

export interface DirectoryAccountCredential {
  /** sAMAccountName (ldap: uid). */
  username: string;
  password: Secret;
  /** NetBIOS domain for Windows logins. */
  domain: string;
  upn: string;
  dn: string;
}

/** The data of a new account lease: its name and DN, its groups as DNs. Reads the directory, creates nothing. */
export async function planAccount(ctx: DirectoryLeaseContext, identity: string, groupRefs: string[], expiresAt: number): Promise<AccountLeaseData> {
  const dir = directoryOf(ctx);
  const sam = accountName(identity);
  const groups = groupRefs.length ? await dir.with(async (c) => Promise.all(groupRefs.map((g) => c.resolveGroup(g)))) : [];
  return { dn: dir.accountDn(sam), sam, upn: `${sam}@${dir.upnSuffix}`, groups, identity, expiresAt };
}

/** Create the account of a stored lease (see the file comment). */
export async function createAccount(ctx: DirectoryLeaseContext, leaseId: string, data: AccountLeaseData): Promise<DirectoryAccountCredential> {
  const dir = directoryOf(ctx);
  checkAccountData(dir, data, leaseId);
  const password = noteIssued('directory_password', new Secret(randomPassword()));
  await dir.with((c) => c.createAccount({
    dn: data.dn, sam: data.sam, upn: data.upn, groups: data.groups, expiresAt: data.expiresAt,
    description: accountMarker(leaseId), displayName: `Tollgate: ${data.identity}`.slice(0, 256),
  }, password));
  ctx.log.info({ account: data.sam, groups: data.groups.length }, 'directory: session account created');
  return { username: data.sam, password, domain: dir.domain, upn: data.upn, dn: data.dn };
}

/** Refuse lease data the gateway would not have written (a tampered store must not delete other accounts). */
function checkAccountData(dir: Directory, d: Partial<AccountLeaseData>, leaseId: string): asserts d is AccountLeaseData {
  if (typeof d.sam !== 'string' || !MINTED_NAME_RE.test(d.sam)) throw new Error(`lease ${leaseId}: refusing an account name this gateway did not mint`);
  if (typeof d.dn !== 'string' || !sameDn(d.dn, dir.accountDn(d.sam))) throw new Error(`lease ${leaseId}: refusing a DN outside ${dir.usersDn}`);
  if (!Array.isArray(d.groups) || !d.groups.every((g) => typeof g === 'string' && isDn(g))) throw new Error(`lease ${leaseId}: bad group list`);
}

/** Disable, take out of its groups, delete. Idempotent; an entry that does not carry this lease's marker is left alone (an error). */
export async function revokeAccount(ctx: DirectoryLeaseContext, lease: Pick<LeaseRecord, 'id' | 'data'>): Promise<{ revoked: true; detail: string }> {
  const dir = directoryOf(ctx);
  const d = lease.data as Partial<AccountLeaseData>;
  checkAccountData(dir, d, lease.id);
  let gone = false;
  await dir.with(async (c) => {
    const desc = await c.description(d.dn);
    if (desc === null) {
      gone = true;
      // OpenLDAP keeps a deleted entry's DN (or uid) in its groups (AD drops linked members itself):
      // a crash between the delete and the lease's end must not leave them behind.
      if (dir.config.flavour === 'ldap') for (const g of d.groups) await c.removeMember(g, d.dn, d.sam);
      return;
    }
    if (desc !== accountMarker(lease.id)) throw new Error(`lease ${lease.id}: ${d.dn} is not the account this lease created (its description differs); not deleted`);
    await c.disableAccount(d.dn);
    for (const g of d.groups) await c.removeMember(g, d.dn, d.sam);
    await c.deleteEntry(d.dn);
  });
  ctx.log.info({ account: d.sam }, 'directory: session account deleted');
  return { revoked: true, detail: gone ? `directory account ${d.sam} already gone` : `directory account ${d.sam} deleted` };
}

/** Whether `dn` lies somewhere below `base` (or is it). */
function isBelow(dn: string, base: string): boolean {
  const x = splitDn(dn);
  const b = splitDn(base);
  if (!x || !b || x.length < b.length) return false;
  return sameDn(x.slice(x.length - b.length).join(','), b.join(','));
}

export interface GroupLeaseData {
  /** The person's value of the directory's personAttribute (email or UPN). */
  person: string;
  /** Group DNs. */
  groups: string[];
  /** The person's account, once found (revocation finds it again when a crash came first). */
  memberDn?: string;
}

/** Find the person's own account and add it to the groups; returns the data to merge into the lease. */
export async function createMembership(ctx: DirectoryLeaseContext, data: GroupLeaseData): Promise<{ memberDn: string }> {
  const dir = directoryOf(ctx);
  return dir.with(async (c) => {
    const memberDn = await c.findPerson(data.person);
    if (!memberDn) throw new Error(`no directory account has ${dir.config.personAttribute} ${JSON.stringify(data.person)}`);
    for (const g of data.groups) await c.addMember(g, memberDn);
    ctx.log.info({ member: memberDn, groups: data.groups.length }, 'directory: group membership added');
    return { memberDn };
  });
}

/**
 * Take the person out of the lease's groups. `allowed`: the group DNs the configuration elevates
 * to now — a stored group outside it is refused (a tampered lease must not remove other memberships).
 */
export async function revokeMembership(ctx: DirectoryLeaseContext, lease: Pick<LeaseRecord, 'id' | 'data'>, allowed?: string[]): Promise<void> {
  const dir = directoryOf(ctx);
  const d = lease.data as Partial<GroupLeaseData>;
  if (!Array.isArray(d.groups) || !d.groups.every((g) => typeof g === 'string' && isDn(g))) throw new Error(`lease ${lease.id}: bad group list`);
  if (allowed) {
    const bad = d.groups.find((g) => !allowed.some((a) => sameDn(a, g)));
    if (bad) throw new Error(`lease ${lease.id}: ${bad} is not a group the configuration elevates to; not changed`);
  }
  if (d.memberDn !== undefined && (typeof d.memberDn !== 'string' || !isDn(d.memberDn) || !isBelow(d.memberDn, dir.config.baseDn))) {
    throw new Error(`lease ${lease.id}: refusing a member DN outside ${dir.config.baseDn}`);
  }
  if (typeof d.person !== 'string' || !d.person) throw new Error(`lease ${lease.id}: no person in the stored lease`);
  await dir.with(async (c) => {
    // The account the person's attribute finds now; a stored DN naming another entry is refused (a tampered store).
    const found = await c.findPerson(d.person!);
    if (found && d.memberDn && !sameDn(found, d.memberDn)) {
      throw new Error(`lease ${lease.id}: the stored member ${d.memberDn} is not the account of ${dir.config.personAttribute} ${JSON.stringify(d.person)}; not changed`);
    }
    const memberDn = d.memberDn ?? found;
    if (!memberDn) return;
    for (const g of d.groups!) await c.removeMember(g, memberDn);
    ctx.log.info({ member: memberDn, groups: d.groups!.length }, 'directory: group membership removed');
  });
}
