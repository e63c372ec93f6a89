/**
 * The directory (Active Directory / Samba AD, or OpenLDAP with posixAccount entries) as the
 * gateway's modules see it: its configuration (the top-level `directory` section) and one bound
 * LDAP connection doing the few things leases need — create, enable, disable and delete an account,
 * set a password, add and remove a group member, find a person's own account. It has no listener:
 * any protocol module (and the gateway, for grant-long group elevation) asks for directory leases
 * through protocols/directory-leases.ts. Every value from outside reaches a DN or a filter only
 * through protocols/ldap-escape.ts.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import type tls from 'node:tls';
import {
  Attribute, BerWriter, Change, Client, InsufficientAccessError, InvalidCredentialsError, NoSuchAttributeError, NoSuchObjectError,
  TypeOrValueExistsError, AlreadyExistsError, UnwillingToPerformError, ConstraintViolationError, ObjectClassViolationError, ProtocolError,
} from 'ldapts';
import { z } from 'zod';
import { isVaultRef, secretRefSchema, Secret } from '../auth/secret.js';
import { durationSchema, parseDuration } from '../policies/config.js';
import { eq, isChildOf, isDn, rdn, sameDn, splitDn } from './ldap-escape.js';

const dnString = z.string().refine(isDn, 'a distinguished name such as CN=Users,DC=example,DC=com');

export const directorySchema = z.object({
  /** ldaps://host[:636], or ldap://host[:389] with startTls: true (AD refuses passwords on plain LDAP). */
  url: z.string().regex(/^ldaps?:\/\/[^/\s]+\/?$/, 'an LDAP URL such as ldaps://dc1.example.com'),
  startTls: z.boolean().default(false),
  /**
   * The account the gateway binds as: a DN, or (AD) a user principal name such as tollgate@example.com.
   * Its password is a secret reference, or {vault: true}: kept in the vault (`tollgate credentials
   * set @directory`) and rotated every `rotate` (default: the top-level credentials.rotate; false: never).
   */
  bind: z.object({
    dn: z.string().min(1).max(1024),
    password: z.union([secretRefSchema, z.object({ vault: z.literal(true) }).strict()]),
    rotate: z.union([durationSchema, z.literal(false)]).optional(),
  }).strict(),
  baseDn: dnString,
  flavour: z.enum(['ad', 'ldap']).default('ad'),
  /** Where minted accounts are created (default CN=Users,<baseDn> for ad, ou=people,<baseDn> for ldap). */
  usersDn: dnString.optional(),
  /** NetBIOS domain name for Windows logins (RDP); default: the first DC= label of baseDn, upper-cased. */
  domain: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,14}$/, 'a NetBIOS domain name').optional(),
  /** userPrincipalName suffix of minted accounts; default: the DC= labels of baseDn (DC=example,DC=com -> example.com). */
  upnSuffix: z.string().regex(/^[A-Za-z0-9.-]+$/).optional(),
  /** The attribute that finds a person's own account for directory-group elevation: their email or UPN. */
  personAttribute: z.enum(['mail', 'userPrincipalName']).default('mail'),
  /** TLS to the directory: the CA that issued its certificate and the name it must carry (default: the URL's host). */
  tls: z.object({ ca: secretRefSchema.optional(), servername: z.string().min(1).optional(), verify: z.boolean().default(true) }).strict().prefault({}),
  /** ldap flavour: gidNumber of minted posixAccounts. */
  gidNumber: z.number().int().min(0).default(100),
  timeout: durationSchema.default('10s'),
}).strict();
export type DirectoryConfig = z.infer<typeof directorySchema>;

export interface DirectoryBind { dn: string; password: Secret }

/** The account a lease mints. */
export interface AccountSpec {
  dn: string;
  sam: string;
  upn: string;
  description: string;
  displayName: string;
  groups: string[];
  /** Epoch ms: AD's accountExpires (the directory's own safety net if the gateway never comes back). */
  expiresAt: number;
}

/** The description every minted account carries: revocation deletes only entries that carry it. */
export function accountMarker(leaseId: string): string {
  return `Tollgate session account (lease ${leaseId})`;
}

/** DC=example,DC=com -> example.com */
function dcLabels(baseDn: string): string[] {
  return (splitDn(baseDn) ?? []).map((r) => /^dc=(.*)$/i.exec(r)?.[1]).filter((x): x is string => !!x);
}

export function usersDnOf(c: DirectoryConfig): string {
  return c.usersDn ?? (c.flavour === 'ad' ? `CN=Users,${c.baseDn}` : `ou=people,${c.baseDn}`);
}
export function domainOf(c: DirectoryConfig): string {
  return c.domain ?? (dcLabels(c.baseDn)[0] ?? 'WORKGROUP').toUpperCase();
}
export function upnSuffixOf(c: DirectoryConfig): string {
  return c.upnSuffix ?? dcLabels(c.baseDn).join('.');
}

/** A random password every AD complexity policy accepts (upper, lower, digit, symbol; 36 characters). */
export function randomPassword(): string {
  const pick = (set: string) => set[randomInt(set.length)]!;
  const core = randomBytes(24).toString('base64url');
  return core + pick('ABCDEFGHJKLMNPQRSTUVWXYZ') + pick('abcdefghijkmnopqrstuvwxyz') + pick('23456789') + pick('!#%+=.,');
}

/** AD's FILETIME: 100 ns ticks since 1601-01-01. */
export function fileTime(ms: number): string {
  return ((BigInt(Math.floor(ms)) + 11_644_473_600_000n) * 10_000n).toString();
}

const unicodePwd = (pw: string) => Buffer.from(`"${pw}"`, 'utf16le');

/** {SSHA} for OpenLDAP's userPassword. */
export function ssha(pw: string): string {
  const salt = randomBytes(8);
  return `{SSHA}${Buffer.concat([createHash('sha1').update(pw).update(salt).digest(), salt]).toString('base64')}`;
}

/** RFC 3062's Password Modify extended operation. */
export const PASSWORD_MODIFY_OID = '1.3.6.1.4.1.4203.1.11.1';

/** Its request value: SEQUENCE { userIdentity [0], newPasswd [2] } (no oldPasswd: the bound account has the right to reset). */
export function passwordModifyRequest(dn: string, next: string): Buffer {
  const w = new BerWriter();
  w.startSequence();
  w.writeString(dn, 0x80);
  w.writeString(next, 0x82);
  w.endSequence();
  return w.buffer;
}

const list = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : v === undefined ? [] : [String(v)]);

const one = (v: unknown): string | undefined => (Array.isArray(v) ? (v[0] === undefined ? undefined : String(v[0])) : v === undefined ? undefined : String(v));

/** A directory error as a sentence (the LDAP result, never a password). */
export function ldapMessage(e: unknown): string {
  const err = e as { code?: number; message?: string };
  return `${err.message ?? String(e)}${typeof err.code === 'number' ? ` (LDAP ${err.code})` : ''}`;
}

export class Directory {
  readonly usersDn: string;
  readonly domain: string;
  readonly upnSuffix: string;
  constructor(
    readonly config: DirectoryConfig,
    /** The bind credential now (the configured secret reference, resolved at each bind). */
    readonly bindCredential: () => Promise<DirectoryBind>,
    private readonly tlsOptions: tls.ConnectionOptions,
    private readonly timeoutMs: number,
  ) {
    this.usersDn = usersDnOf(config);
    this.domain = domainOf(config);
    this.upnSuffix = upnSuffixOf(config);
  }

  /** Where a minted account of this name lives: CN=<name> (uid=<name> for ldap) below usersDn. */
  accountDn(sam: string): string {
    return `${rdn(this.config.flavour === 'ad' ? 'CN' : 'uid', sam)},${this.usersDn}`;
  }

  private client(): Client {
    return new Client({ url: this.config.url, timeout: this.timeoutMs, connectTimeout: this.timeoutMs, tlsOptions: this.tlsOptions });
  }

  /** A connection bound with `bind` (default: the gateway's bind credential). Errors never carry the password. */
  async connect(bind?: DirectoryBind): Promise<DirectoryConnection> {
    const b = bind ?? await this.bindCredential();
    const c = this.client();
    try {
      if (this.config.startTls) await c.startTLS(this.tlsOptions);
      await c.bind(b.dn, b.password.reveal());
    } catch (e) {
      await c.unbind().catch(() => undefined);
      if (e instanceof InvalidCredentialsError) throw new Error(`the directory refused the bind credential of ${b.dn}`);
      throw new Error(`cannot bind to the directory ${this.config.url}: ${ldapMessage(e)}`);
    }
    return new DirectoryConnection(this, c);
  }

  /** Run fn on a bound connection, closed afterwards. */
  async with<T>(fn: (c: DirectoryConnection) => Promise<T>, bind?: DirectoryBind): Promise<T> {
    const c = await this.connect(bind);
    try { return await fn(c); } finally { await c.close(); }
  }

  /** Whether `dn` + `password` bind (false: refused; other errors are thrown). */
  async canBind(dn: string, password: Secret): Promise<boolean> {
    try {
      await (await this.connect({ dn, password })).close();
      return true;
    } catch (e) {
      if (/refused the bind credential/.test((e as Error).message)) return false;
      throw e;
    }
  }
}

export class DirectoryConnection {
  constructor(private readonly dir: Directory, private readonly c: Client) {}

  close(): Promise<void> { return this.c.unbind().catch(() => undefined); }

  private get ad(): boolean { return this.dir.config.flavour === 'ad'; }

  /** One entry's attributes, or null when it does not exist. */
  async entry(dn: string, attributes: string[]): Promise<Record<string, unknown> | null> {
    try {
      const r = await this.c.search(dn, { scope: 'base', filter: '(objectClass=*)', attributes });
      return (r.searchEntries[0] as Record<string, unknown> | undefined) ?? null;
    } catch (e) {
      if (e instanceof NoSuchObjectError) return null;
      throw e;
    }
  }

  /** The DN of the one entry below the base DN matching `filter` (built with ldap-escape); null for none, an error for several. */
  async findOne(filter: string, what: string): Promise<string | null> {
    const r = await this.c.search(this.dir.config.baseDn, { scope: 'sub', filter, attributes: ['dn'], sizeLimit: 2 }).catch((e) => {
      if (/size limit/i.test((e as Error).message)) throw new Error(`more than one directory entry matches ${what}`);
      throw e;
    });
    if (r.searchEntries.length > 1) throw new Error(`more than one directory entry matches ${what}`);
    return r.searchEntries[0]?.dn ?? null;
  }

  /** A person's own account, by the configured attribute (their email or UPN). */
  async findPerson(value: string): Promise<string | null> {
    const attr = this.dir.config.personAttribute;
    const cls = this.ad ? '(objectCategory=person)(objectClass=user)' : '(objectClass=person)';
    return this.findOne(`(&${cls}${eq(attr, value)})`, `${attr} ${JSON.stringify(value)}`);
  }

  /** A group given as a DN (checked to exist) or as its cn. */
  async resolveGroup(ref: string): Promise<string> {
    if (isDn(ref) && ref.includes('=')) {
      if (!await this.entry(ref, ['objectClass'])) throw new Error(`the directory group ${ref} does not exist`);
      return ref;
    }
    const cls = this.ad ? '(objectClass=group)' : '(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))';
    const dn = await this.findOne(`(&${cls}${eq('cn', ref)})`, `group ${JSON.stringify(ref)}`);
    if (!dn) throw new Error(`no directory group named ${JSON.stringify(ref)}`);
    return dn;
  }

  /**
   * Create a disabled account, set its password, add it to its groups, enable it. Each step is
   * safe to undo with deleteAccount (which the caller's lease runs if this throws).
   */
  async createAccount(a: AccountSpec, password: Secret): Promise<void> {
    if (!isChildOf(a.dn, this.dir.usersDn)) throw new Error(`refusing to create ${a.dn} outside ${this.dir.usersDn}`);
    if (this.ad) {
      await this.c.add(a.dn, {
        objectClass: ['top', 'person', 'organizationalPerson', 'user'],
        cn: a.sam, sAMAccountName: a.sam, userPrincipalName: a.upn, displayName: a.displayName, description: a.description,
        userAccountControl: '514', accountExpires: fileTime(a.expiresAt),
      });
      await this.c.modify(a.dn, new Change({ operation: 'replace', modification: new Attribute({ type: 'unicodePwd', values: [unicodePwd(password.reveal())] }) }));
      for (const g of a.groups) await this.addMember(g, a.dn);
      await this.c.modify(a.dn, new Change({ operation: 'replace', modification: new Attribute({ type: 'userAccountControl', values: ['512'] }) }));
    } else {
      // No userPassword yet: the entry cannot bind until the last step.
      await this.c.add(a.dn, {
        objectClass: ['top', 'person', 'organizationalPerson', 'inetOrgPerson', 'posixAccount'],
        cn: a.sam, sn: a.sam, uid: a.sam, displayName: a.displayName, description: a.description,
        uidNumber: String(randomInt(1_000_000, 2_000_000_000)), gidNumber: String(this.dir.config.gidNumber),
        homeDirectory: `/home/${a.sam}`, loginShell: '/bin/bash',
      });
      for (const g of a.groups) await this.addMember(g, a.dn, a.sam);
      await this.setLdapPassword(a.dn, password);
    }
  }

  /** Disable (AD) or remove the password (ldap) of an account; false when it does not exist. */
  async disableAccount(dn: string): Promise<boolean> {
    try {
      if (this.ad) await this.c.modify(dn, new Change({ operation: 'replace', modification: new Attribute({ type: 'userAccountControl', values: ['514'] }) }));
      else await this.c.modify(dn, new Change({ operation: 'delete', modification: new Attribute({ type: 'userPassword', values: [] }) }));
      return true;
    } catch (e) {
      if (e instanceof NoSuchObjectError) return false;
      if (e instanceof NoSuchAttributeError) return true;
      throw e;
    }
  }

  /** Delete an entry; false when it was already gone. */
  async deleteEntry(dn: string): Promise<boolean> {
    try {
      await this.c.del(dn);
      return true;
    } catch (e) {
      if (e instanceof NoSuchObjectError) return false;
      throw e;
    }
  }

  private readonly memberAttrs = new Map<string, string>();

  /**
   * The attribute a group lists its members in: AD `member`; ldap by the group's class —
   * groupOfNames `member` (DNs), groupOfUniqueNames `uniqueMember` (DNs), posixGroup `memberUid` (uids).
   */
  private async memberAttr(groupDn: string): Promise<string> {
    if (this.ad) return 'member';
    const key = groupDn.toLowerCase();
    const known = this.memberAttrs.get(key);
    if (known) return known;
    const e = await this.entry(groupDn, ['objectClass']);
    const cls = list(e?.['objectClass']).map((c) => c.toLowerCase());
    const attr = cls.includes('groupofnames') ? 'member' : cls.includes('groupofuniquenames') ? 'uniqueMember' : cls.includes('posixgroup') ? 'memberUid' : 'member';
    if (e) this.memberAttrs.set(key, attr);
    return attr;
  }

  /** The value naming `memberDn` in `attr`: the DN, or (memberUid) the account's uid — `uid` when given, else read from the entry. */
  private async memberValue(attr: string, memberDn: string, uid?: string): Promise<string> {
    if (attr !== 'memberUid') return memberDn;
    if (uid) return uid;
    const v = one((await this.entry(memberDn, ['uid']))?.['uid']);
    if (!v) throw new Error(`${memberDn} has no uid to list in a posixGroup`);
    return v;
  }

  /** Add a member to a group; already a member is fine. `uid`: the member's uid (posixGroup), when known. */
  async addMember(groupDn: string, memberDn: string, uid?: string): Promise<void> {
    const attr = await this.memberAttr(groupDn);
    const value = await this.memberValue(attr, memberDn, uid);
    try {
      await this.c.modify(groupDn, new Change({ operation: 'add', modification: new Attribute({ type: attr, values: [value] }) }));
    } catch (e) {
      if (e instanceof TypeOrValueExistsError || e instanceof AlreadyExistsError) return;
      // Samba answers ENTRY_EXISTS-like errors for an existing member as unwillingToPerform in some versions.
      if (e instanceof UnwillingToPerformError && await this.isMember(groupDn, memberDn, uid)) return;
      throw e;
    }
  }

  /** Remove a member from a group; not a member (or no such group any more) is fine. */
  async removeMember(groupDn: string, memberDn: string, uid?: string): Promise<void> {
    const attr = await this.memberAttr(groupDn);
    const value = await this.memberValue(attr, memberDn, uid);
    try {
      await this.c.modify(groupDn, new Change({ operation: 'delete', modification: new Attribute({ type: attr, values: [value] }) }));
    } catch (e) {
      if (e instanceof NoSuchAttributeError || e instanceof NoSuchObjectError) return;
      if ((e instanceof UnwillingToPerformError || e instanceof ConstraintViolationError) && !await this.isMember(groupDn, memberDn, uid)) return;
      if (e instanceof ObjectClassViolationError) throw new Error(`${memberDn} is the last member of ${groupDn}, which must keep one (a groupOfNames): give the group a placeholder member`);
      throw e;
    }
  }

  async isMember(groupDn: string, memberDn: string, uid?: string): Promise<boolean> {
    const attr = await this.memberAttr(groupDn);
    const g = await this.entry(groupDn, [attr]);
    if (!g) return false;
    const values = list(g[attr]);
    if (attr === 'memberUid') {
      const value = await this.memberValue(attr, memberDn, uid).catch(() => null);
      return value !== null && values.includes(value);
    }
    return values.some((m) => sameDn(m, memberDn));
  }

  /**
   * ldap: set a password with the Password Modify extended operation (the server hashes it with its
   * own scheme; the clear value travels only inside TLS). A server without the operation gets a
   * salted SHA-1 userPassword instead.
   */
  private async setLdapPassword(dn: string, next: Secret): Promise<void> {
    try {
      await this.c.exop(PASSWORD_MODIFY_OID, passwordModifyRequest(dn, next.reveal()));
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw new Error(`the directory refused the new password of ${dn}: ${ldapMessage(e)}`);
      await this.c.modify(dn, new Change({ operation: 'replace', modification: new Attribute({ type: 'userPassword', values: [ssha(next.reveal())] }) }));
    }
  }

  /** The DN of the bind account (the configured DN, or the entry a UPN names). */
  async bindDn(name: string): Promise<string> {
    if (isDn(name) && name.includes('=')) return name;
    const dn = await this.findOne(eq('userPrincipalName', name), `userPrincipalName ${JSON.stringify(name)}`);
    if (!dn) throw new Error(`no directory account with userPrincipalName ${name}`);
    return dn;
  }

  /**
   * Set an account's password: as a reset (AD: replace unicodePwd, which needs the reset-password
   * right), else — an account changing its own — as a change that proves the old one.
   */
  async setPassword(dn: string, next: Secret, old?: Secret): Promise<void> {
    if (!this.ad) return this.setLdapPassword(dn, next);
    try {
      await this.c.modify(dn, new Change({ operation: 'replace', modification: new Attribute({ type: 'unicodePwd', values: [unicodePwd(next.reveal())] }) }));
    } catch (e) {
      if (!(e instanceof InsufficientAccessError) || !old) throw new Error(`the directory refused the new password of ${dn}: ${ldapMessage(e)}`);
      await this.c.modify(dn, [
        new Change({ operation: 'delete', modification: new Attribute({ type: 'unicodePwd', values: [unicodePwd(old.reveal())] }) }),
        new Change({ operation: 'add', modification: new Attribute({ type: 'unicodePwd', values: [unicodePwd(next.reveal())] }) }),
      ]).catch((e2) => { throw new Error(`the directory refused the new password of ${dn}: ${ldapMessage(e2)}`); });
    }
  }

  /** Minted entries below usersDn whose description says Tollgate made them (cleanup checks, tests). */
  async mintedAccounts(): Promise<{ dn: string; sam: string; description: string }[]> {
    const nameAttr = this.ad ? 'sAMAccountName' : 'uid';
    const r = await this.c.search(this.dir.usersDn, { scope: 'one', filter: `(&(objectClass=person)(description=Tollgate session account*))`, attributes: [nameAttr, 'description'] });
    return r.searchEntries.map((e) => ({ dn: e.dn, sam: one(e[nameAttr]) ?? '', description: one(e['description']) ?? '' }));
  }

  /** The description of an account (null: no such entry). */
  async description(dn: string): Promise<string | null> {
    const e = await this.entry(dn, ['description']);
    return e ? one(e['description']) ?? '' : null;
  }

  /** Whether an account is enabled (AD: userAccountControl without ACCOUNTDISABLE; ldap: has a password). */
  async enabled(dn: string): Promise<boolean | null> {
    const e = await this.entry(dn, this.ad ? ['userAccountControl'] : ['userPassword']);
    if (!e) return null;
    if (this.ad) return (Number(one(e['userAccountControl']) ?? 2) & 2) === 0;
    return one(e['userPassword']) !== undefined;
  }

}

/**
 * The Directory of a `directory` section. `resolve` turns a secret reference into its value (the
 * gateway's resolveSecret); the bind password is resolved at each bind, so a changed file or
 * environment variable is picked up without a restart. `vaultPassword`: the vault's current bind
 * password, when the section says {vault: true} (a rotation takes effect at the next bind).
 */
export function openDirectory(c: DirectoryConfig, resolve: (ref: unknown, path: string) => Secret, vaultPassword?: () => Promise<Secret>): Directory {
  const host = /^ldaps?:\/\/\[?([^\]/:]+)/.exec(c.url)?.[1] ?? '';
  const tlsOptions: tls.ConnectionOptions = {
    rejectUnauthorized: c.tls.verify,
    servername: c.tls.servername ?? (/^[\d.]+$|:/.test(host) ? undefined : host),
    ...(c.tls.ca ? { ca: resolve(c.tls.ca, 'directory.tls.ca').reveal() } : {}),
  };
  const password = async () => {
    if (!isVaultRef(c.bind.password)) return resolve(c.bind.password, 'directory.bind.password');
    if (!vaultPassword) throw new Error('directory.bind.password is kept in the vault, which this caller has not opened');
    return vaultPassword();
  };
  return new Directory(c, async () => ({ dn: c.bind.dn, password: await password() }), tlsOptions, parseDuration(c.timeout));
}
