/**
 * The directory section and directory-account targets without a DC: config errors name the key
 * path (also for hostile values anywhere in the section), and revocation refuses lease data this
 * gateway would not have written before it talks to any directory.
 */
import t from 'tap';
import pino from 'pino';
import { Secret } from '../../auth/secret.js';
import { ConfigError, validateConfig } from '../../proxy/config.js';
import { moduleMap } from '../../protocols/index.js';
import { directorySchema, openDirectory, passwordModifyRequest } from '../../protocols/directory.js';
import { DIRECTORY_VAULT_TARGET, directoryVaultTarget } from '../../protocols/directory-rotate.js';
import { revokeAccount, revokeMembership } from '../../protocols/directory-leases.js';

const modules = moduleMap();
const directory = () => ({
  url: 'ldaps://dc1.example.com', bind: { dn: 'tollgate@example.com', password: { env: 'TG_DIR_PW' } }, baseDn: 'DC=example,DC=com',
  flavour: 'ad', tls: { verify: true }, timeout: '5s',
});
const target = (extra: Record<string, unknown> = {}) => ({
  name: 'win', protocol: 'rdp', address: '10.0.0.5:3389', credentials: { mode: 'directory-account' },
  roles: [{ name: 'admin', directoryGroups: ['rdp-admins', 'CN=Server Operators,CN=Builtin,DC=example,DC=com'], ...extra }],
});

function outcome(raw: unknown): ConfigError | null {
  try {
    validateConfig(raw, 'gw.yaml', modules);
    return null;
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw new Error(`not a ConfigError: ${(e as Error)?.name}: ${(e as Error)?.message}`);
  }
}

t.test('a valid directory section and directory-account target', async (t) => {
  t.equal(outcome({ directory: directory(), targets: [target()] }), null);
  const cfg = validateConfig({ directory: directory(), targets: [target()] }, 'gw.yaml', modules);
  t.equal(cfg.directory?.personAttribute, 'mail', 'defaults');
});

t.test('errors name the key path', async (t) => {
  t.match(outcome({ targets: [target()] })?.message, /targets\[0\]\.credentials\.mode: a `directory` section/, 'directory-account needs a directory');
  t.match(outcome({ directory: { ...directory(), url: 'http://dc1' }, targets: [] })?.path, 'directory.url');
  t.match(outcome({ directory: { ...directory(), baseDn: 'not a dn' } })?.path, 'directory.baseDn');
  t.match(outcome({ directory: { ...directory(), flavour: 'novell' } })?.path, 'directory.flavour');
  t.match(outcome({ directory: { ...directory(), extra: 1 } })?.message, /unknown key/);
  t.match(outcome({ directory: directory(), targets: [target({ directoryGroups: ['CN=broken\\'] })] })?.path, 'targets[0].roles[0].directoryGroups');
  t.match(outcome({ directory: directory(), targets: [target({ directoryGroups: ['a\nb'] })] })?.path, 'targets[0].roles[0].directoryGroups');
  t.match(outcome({ directory: directory(), targets: [{ ...target(), credentials: { mode: 'domain' } }] })?.path, 'targets[0].credentials.mode');
});

t.test('the bind password in the vault: {vault: true}, rotate only then, at least 1m', async (t) => {
  const vaulted = (rotate?: unknown) => ({ ...directory(), bind: { dn: 'tollgate@example.com', password: { vault: true }, ...(rotate === undefined ? {} : { rotate }) } });
  t.equal(outcome({ directory: vaulted('24h') }), null);
  t.equal(outcome({ directory: vaulted(false) }), null);
  t.equal(outcome({ directory: { ...directory(), bind: { ...directory().bind, rotate: '24h' } } })?.path, 'directory.bind.rotate', 'a config secret does not rotate');
  t.equal(outcome({ directory: vaulted('30s') })?.path, 'directory.bind.rotate');
  t.equal(outcome({ directory: vaulted('soon') })?.path.startsWith('directory.bind'), true);
  const cfg = validateConfig({ directory: vaulted('24h') }, 'gw.yaml', modules);
  t.match(directoryVaultTarget(cfg.directory), { name: DIRECTORY_VAULT_TARGET, credentials: { bind: { password: { vault: true } }, rotate: '24h' } });
  t.equal(directoryVaultTarget(validateConfig({ directory: directory() }, 'gw.yaml', modules).directory), null, 'a config secret is not in the vault');
  const dir = openDirectory(cfg.directory!, () => { throw new Error('not resolved from the config'); });
  await t.rejects(dir.bindCredential(), /kept in the vault/, 'a caller without the vault cannot bind');
});

t.test('the Password Modify request value (RFC 3062): userIdentity [0], newPasswd [2]', async (t) => {
  t.equal(passwordModifyRequest('a', 'b').toString('hex'), '3006800161820162');
});

t.test('hostile values anywhere in the section are config errors, never a crash', async (t) => {
  const hostile: unknown[] = [null, 0, -1, 1e308, Number.NaN, true, '', 'x'.repeat(5000), [], {}, { toString: 'x' }, Object.create(null), [[[]]]];
  const paths = (v: unknown, at: string[] = []): string[][] =>
    v && typeof v === 'object' ? Object.entries(v).flatMap(([k, x]) => [[...at, k], ...paths(x, [...at, k])]) : [];
  let n = 0;
  for (const p of paths(directory())) {
    for (const h of hostile) {
      const d = directory() as Record<string, unknown>;
      let o = d;
      for (const k of p.slice(0, -1)) o = o[k] as Record<string, unknown>;
      o[p.at(-1)!] = h;
      const r = outcome({ directory: d });
      if (r) { t.ok(r.path.startsWith('directory'), `${p.join('.')}: ${r.path}`); n++; }
    }
  }
  t.ok(n > 50, `${n} hostile values refused`);
});

t.test('revocation refuses tampered lease data before it contacts the directory', async (t) => {
  // Port 9 (discard) on loopback: nothing answers; a refusal must come before any connection attempt.
  const cfg = directorySchema.parse({ ...directory(), url: 'ldaps://127.0.0.1:9', timeout: '2s' });
  let binds = 0;
  const dir = openDirectory(cfg, () => { binds++; return new Secret('x'); });
  const ctx = { state: { directory: dir }, log: pino({ level: 'silent' }) };
  const good = { dn: 'CN=tg-alice-abcde,CN=Users,DC=example,DC=com', sam: 'tg-alice-abcde', upn: 'tg-alice-abcde@example.com', groups: [], identity: 'alice', expiresAt: 0 };
  for (const [what, data, re] of [
    ['an account name the gateway did not mint', { ...good, sam: 'Administrator', dn: 'CN=Administrator,CN=Users,DC=example,DC=com' }, /did not mint/],
    ['a DN outside usersDn', { ...good, dn: 'CN=tg-alice-abcde,OU=Admins,DC=example,DC=com' }, /outside/],
    ['a DN that names another entry', { ...good, dn: 'CN=krbtgt,CN=Users,DC=example,DC=com' }, /outside/],
    ['a bad group list', { ...good, groups: ['not a dn'] }, /bad group list/],
    ['no data', {}, /did not mint/],
  ] as const) {
    await t.rejects(revokeAccount(ctx, { id: 'l1', data: data as Record<string, unknown> }), re, what);
  }
  await t.rejects(revokeMembership(ctx, { id: 'l2', data: { person: 'a@example.com', groups: ['CN=Domain Admins,CN=Users,DC=example,DC=com'] } }, ['CN=rdp-admins,CN=Users,DC=example,DC=com']), /not a group the configuration elevates to/);
  t.equal(binds, 0, 'no bind was attempted');
  await t.rejects(revokeAccount({ state: { directory: null }, log: ctx.log }, { id: 'l3', data: good }), /no directory is configured/);
});
