/**
 * A real OpenLDAP server (Debian's slapd) on a free loopback port, configured in a directory of its
 * own: what the `ldap` flavour of the directory is proved against (and what `tollgate demo` could
 * add later). The configuration is a cn=config LDIF loaded with `slapadd -n0` (core, cosine, nis and
 * inetorgperson schemas from /etc/ldap/schema, one mdb database), the base entries with `slapadd
 * -n1`; slapd then listens on ldaps:// only, with a self-signed certificate openssl makes in the
 * directory (its CA is the certificate itself, for clients that verify). The system slapd service is
 * neither used nor touched: nothing here reads /etc/ldap/slapd.d or /var/lib/ldap.
 *
 * Entries: the base (dc=...), ou=people (minted accounts), ou=groups, the root DN (cn=admin, random
 * password, for the tests' own view), and cn=tollgate: the gateway's bind account, an ordinary entry
 * whose userPassword it may change (rotation) and which may write below the base (its ACLs). The
 * cn=config database has its own root DN (cn=admin,cn=config, the same password) so tests can change
 * the ACLs of a running server.
 * Passwords reach the LDAP tools through files (-y), never their command lines.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ssha } from './directory.js';
import { freePort } from './net.js';

export interface SlapdOptions {
  /** e.g. dc=tg,dc=test (the default). */
  baseDn?: string;
  /** Where to configure (emptied first); default a new temp dir. Removed by stop(). */
  dir?: string;
}

export interface Slapd {
  dir: string;
  port: number;
  /** ldaps://127.0.0.1:<port> */
  url: string;
  baseDn: string;
  usersDn: string;
  groupsDn: string;
  /** The server's certificate (self-signed: also the CA clients verify against), PEM, and its file. */
  ca: string;
  caFile: string;
  /** The root DN (cn=admin,<base>) and its random password: the tests' own view of the directory. */
  rootDn: string;
  rootPassword: string;
  /** The gateway's bind account (cn=tollgate,<base>) and its initial password. */
  bindDn: string;
  bindPassword: string;
  /** `ldapwhoami -x -D dn -y <file holding password>` over LDAPS: 0 and the DN when the password works, 49 when refused. */
  whoami(dn: string, password: string): { code: number; out: string };
  /** The values of one attribute of one entry, read as the root DN; null when the entry does not exist. */
  values(dn: string, attr: string): string[] | null;
  /** DNs of the entries below `base` matching `filter` (read as the root DN). */
  find(base: string, filter: string): string[];
  /** ldapadd (or ldapmodify with `modify: true`) of an LDIF as the root DN; throws with the tool's output. */
  ldif(text: string, modify?: boolean): void;
  /** Replace the database's ACLs (olcAccess values, in order) through cn=config; null: the default ones. */
  setAccess(access: string[] | null): void;
  stop(): Promise<void>;
}

const SCHEMA = '/etc/ldap/schema';

/** Why slapd cannot run here (null: it can). */
export function slapdMissing(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const b of ['/usr/sbin/slapd', '/usr/sbin/slapadd', '/usr/bin/ldapwhoami', '/usr/bin/ldapsearch', '/usr/bin/ldapadd', '/usr/bin/openssl', `${SCHEMA}/nis.ldif`, '/usr/lib/ldap/back_mdb.so']) {
    if (!existsSync(b)) return `needs ${b}`;
  }
  return null;
}

function run(cmd: string, args: string[], o: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): { code: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...o.env }, input: o.input, timeout: o.timeoutMs ?? 30_000 });
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** The first RDN's value of a DN such as dc=tg,dc=test (tg). */
const firstValue = (dn: string) => /^[^=]+=([^,]+)/.exec(dn)?.[1] ?? 'tollgate';

/** One LDIF's attribute values (ldapsearch -LLL -o ldif-wrap=no), base64 values decoded. */
function parseValues(ldif: string, attr: string): string[] {
  const out: string[] = [];
  for (const line of ldif.split('\n')) {
    const m = /^([A-Za-z0-9;-]+)(::?) ?(.*)$/.exec(line);
    if (!m || m[1]!.toLowerCase() !== attr.toLowerCase()) continue;
    out.push(m[2] === '::' ? Buffer.from(m[3]!, 'base64').toString('utf8') : m[3]!);
  }
  return out;
}

/** The database's ACLs: the bind account writes everything (and its own password), people read, and change their own password. */
function defaultAccess(bindDn: string): string[] {
  return [
    `{0}to attrs=userPassword by dn.exact="${bindDn}" write by self write by anonymous auth by * none`,
    `{1}to * by dn.exact="${bindDn}" write by users read by anonymous auth by * none`,
  ];
}

function config(dir: string, baseDn: string, rootDn: string, rootPassword: string, bindDn: string): string {
  return `dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: ${dir}/slapd.pid
olcArgsFile: ${dir}/slapd.args
olcLogLevel: none
olcTLSCertificateFile: ${dir}/server.crt
olcTLSCertificateKeyFile: ${dir}/server.key

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file://${SCHEMA}/core.ldif

include: file://${SCHEMA}/cosine.ldif

include: file://${SCHEMA}/nis.ldif

include: file://${SCHEMA}/inetorgperson.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcAccess: {0}to dn.exact="" by * read
olcAccess: {1}to dn.base="cn=Subschema" by * read

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcRootDN: cn=admin,cn=config
olcRootPW: ${ssha(rootPassword)}
olcAccess: {0}to * by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcDbDirectory: ${dir}/db
olcDbMaxSize: 67108864
olcSuffix: ${baseDn}
olcRootDN: ${rootDn}
olcRootPW: ${ssha(rootPassword)}
olcDbIndex: objectClass eq
olcDbIndex: uid,mail,cn,member,memberUid eq
${defaultAccess(bindDn).map((a) => `olcAccess: ${a}`).join('\n')}
`;
}

function baseEntries(baseDn: string, bindDn: string, bindPassword: string): string {
  return `dn: ${baseDn}
objectClass: dcObject
objectClass: organization
dc: ${firstValue(baseDn)}
o: ${firstValue(baseDn)}

dn: ou=people,${baseDn}
objectClass: organizationalUnit
ou: people

dn: ou=groups,${baseDn}
objectClass: organizationalUnit
ou: groups

dn: ${bindDn}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: tollgate
description: the Tollgate gateway's bind account
userPassword: ${ssha(bindPassword)}
`;
}

export async function startSlapd(o: SlapdOptions = {}): Promise<Slapd> {
  const missing = slapdMissing();
  if (missing) throw new Error(`slapd cannot run here: ${missing}`);
  let dir: string;
  if (o.dir) { rmSync(o.dir, { recursive: true, force: true }); mkdirSync(o.dir, { recursive: true, mode: 0o700 }); dir = o.dir; } else dir = mkdtempSync(join(tmpdir(), 'tg-slapd-'));
  const baseDn = o.baseDn ?? 'dc=tg,dc=test';
  const rootDn = `cn=admin,${baseDn}`;
  const bindDn = `cn=tollgate,${baseDn}`;
  const rootPassword = randomBytes(18).toString('base64url');
  const bindPassword = randomBytes(18).toString('base64url');
  const caFile = join(dir, 'server.crt');
  let proc: ChildProcess | null = null;
  let port = 0;
  let n = 0;
  /** A password in a file of its own (-y): not on a command line. */
  const withPassword = <T>(password: string, fn: (file: string) => T): T => {
    const file = join(dir, `pw-${process.pid}-${n++}`);
    writeFileSync(file, password, { mode: 0o600 });
    try { return fn(file); } finally { try { unlinkSync(file); } catch { /* gone */ } }
  };
  const env = { LDAPTLS_CACERT: caFile, LDAPTLS_REQCERT: 'demand', LDAPCONF: '/dev/null', LDAPRC: '/dev/null' };
  const url = () => `ldaps://127.0.0.1:${port}`;
  const whoami = (dn: string, password: string) => withPassword(password, (f) => run('ldapwhoami', ['-x', '-H', url(), '-D', dn, '-y', f], { env }));
  const asRoot = (tool: string, args: string[], input?: string) => withPassword(rootPassword, (f) => run(tool, ['-x', '-H', url(), '-D', rootDn, '-y', f, ...args], { env, ...(input === undefined ? {} : { input }) }));
  const stop = async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc!.once('exit', r));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc?.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    mkdirSync(join(dir, 'slapd.d'), { mode: 0o700 });
    mkdirSync(join(dir, 'db'), { mode: 0o700 });
    const cert = run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', join(dir, 'server.key'), '-out', caFile]);
    if (cert.code !== 0) throw new Error(`openssl could not make the slapd certificate:\n${cert.out}`);
    writeFileSync(join(dir, 'config.ldif'), config(dir, baseDn, rootDn, rootPassword, bindDn), { mode: 0o600 });
    writeFileSync(join(dir, 'base.ldif'), baseEntries(baseDn, bindDn, bindPassword), { mode: 0o600 });
    const c0 = run('slapadd', ['-n0', '-F', join(dir, 'slapd.d'), '-l', join(dir, 'config.ldif')]);
    if (c0.code !== 0) throw new Error(`slapadd -n0 (the configuration) failed:\n${c0.out}`);
    const c1 = run('slapadd', ['-n1', '-F', join(dir, 'slapd.d'), '-l', join(dir, 'base.ldif')]);
    if (c1.code !== 0) throw new Error(`slapadd -n1 (the base entries) failed:\n${c1.out}`);
    rmSync(join(dir, 'base.ldif'));
    rmSync(join(dir, 'config.ldif'));
    // A free port can be taken between the pick and slapd's bind: a few tries.
    for (let attempt = 0; ; attempt++) {
      port = await freePort();
      let err = '';
      const p = spawn('slapd', ['-h', `${url()}/`, '-F', join(dir, 'slapd.d'), '-d', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
      proc = p;
      p.stderr!.on('data', (d: Buffer) => { if (err.length < 20_000) err += d.toString(); });
      const deadline = Date.now() + 30_000;
      let up = false;
      while (!up) {
        if (p.exitCode !== null || p.signalCode !== null) break;
        if (whoami(rootDn, rootPassword).code === 0) { up = true; break; }
        if (Date.now() > deadline) throw new Error(`slapd did not answer on ${url()} in time:\n${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      if (up) break;
      if (attempt >= 2 || !/bind|address already in use/i.test(err)) throw new Error(`slapd exited with ${p.exitCode ?? p.signalCode}:\n${err}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    dir, port, url: url(), baseDn, usersDn: `ou=people,${baseDn}`, groupsDn: `ou=groups,${baseDn}`, ca: readFileSync(caFile, 'utf8'), caFile,
    rootDn, rootPassword, bindDn, bindPassword, whoami,
    values(dn, attr) {
      const r = asRoot('ldapsearch', ['-LLL', '-o', 'ldif-wrap=no', '-b', dn, '-s', 'base', '(objectClass=*)', attr]);
      if (r.code === 32) return null;
      if (r.code !== 0) throw new Error(`ldapsearch of ${dn} failed (${r.code}):\n${r.out}`);
      return parseValues(r.out, attr);
    },
    find(base, filter) {
      const r = asRoot('ldapsearch', ['-LLL', '-o', 'ldif-wrap=no', '-b', base, filter, '1.1']);
      if (r.code === 32) return [];
      if (r.code !== 0) throw new Error(`ldapsearch below ${base} failed (${r.code}):\n${r.out}`);
      return parseValues(r.out, 'dn');
    },
    ldif(text, modify = false) {
      const r = asRoot(modify ? 'ldapmodify' : 'ldapadd', [], text);
      if (r.code !== 0) throw new Error(`${modify ? 'ldapmodify' : 'ldapadd'} failed (${r.code}):\n${r.out}`);
    },
    setAccess(access) {
      const lines = (access ?? defaultAccess(bindDn)).map((a) => `olcAccess: ${a}`).join('\n');
      const r = withPassword(rootPassword, (f) => run('ldapmodify', ['-x', '-H', url(), '-D', 'cn=admin,cn=config', '-y', f], {
        env, input: `dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcAccess\n${lines}\n`,
      }));
      if (r.code !== 0) throw new Error(`ldapmodify of the ACLs failed (${r.code}):\n${r.out}`);
    },
    stop,
  };
}
