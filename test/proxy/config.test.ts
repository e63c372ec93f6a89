/**
 * Configuration errors: every malformed value is a ConfigError naming the file and the key path
 * (never a TypeError/ReferenceError with a stack), including values of the wrong type where a
 * string is expected and YAML aliases that resolve to nothing; a seeded fuzz over the validator.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { ConfigError, loadConfigFile, validateConfig } from '../../proxy/config.js';
import { moduleMap } from '../../protocols/index.js';

const modules = moduleMap();
const dir = mkdtempSync(join(tmpdir(), 'tg-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const ref = { value: 'x' };
/** A config touching every section and every protocol's target section. */
const base = () => ({
  gateway: { publicUrl: 'https://tg.example.com', dataDir: '/var/lib/tg', id: 'gw1', logLevel: 'info', expiryWarning: '60s', socGroups: ['soc'], tls: { cert: ref, key: ref } },
  listeners: { http: { host: '127.0.0.1', port: 8080 }, ssh: { port: 2222 } },
  store: { kind: 'sqlite', path: 'tg.db' },
  idp: { clientId: 'tollgate', scopes: ['openid'], dev: { port: 0, users: [{ name: 'alice', email: 'a@x', password: ref, groups: ['engineers'], totp: ref }] } },
  recordings: { dir: 'rec' },
  targets: [
    { name: 'web', protocol: 'ssh', address: '127.0.0.1:22', risk: 'low', roles: [{ name: 'user', groups: ['adm'], allowPortForwarding: true }],
      credentials: { mode: 'ephemeral-account', admin: { username: 'root', privateKey: ref }, prefix: 'tg-' }, options: { hostKeyFingerprint: `SHA256:${'A'.repeat(43)}` } },
    { name: 'web-cert', protocol: 'ssh', address: '127.0.0.1:22', roles: [{ name: 'user', principals: ['deploy'] }],
      credentials: { mode: 'certificate', admin: { username: 'root', password: ref }, trustedCaFile: '/etc/ssh/ca.pub' } },
    { name: 'web-pw', protocol: 'ssh', address: '127.0.0.1:22', roles: [{ name: 'user' }],
      credentials: { mode: 'checkout', admin: { username: 'root', password: ref }, account: 'svc', password: ref } },
    { name: 'db', protocol: 'postgres', address: '127.0.0.1:5432', roles: [{ name: 'read', grants: ['pg_read_all_data'] }],
      credentials: { admin: { user: 'postgres', password: ref }, database: 'app' }, options: { clientAuth: 'scram-sha-256', connectTimeout: 5 } },
    { name: 'my', protocol: 'mysql', address: '127.0.0.1:3306', roles: [{ name: 'read', grants: ['SELECT ON shop.*'], roles: ['reader'], database: 'shop' }],
      credentials: { admin: { user: 'root', password: ref }, userHost: '%' }, options: { tls: true } },
    { name: 'desk', protocol: 'vnc', address: '127.0.0.1:5900', roles: [{ name: 'op', clipboard: 'both', viewOnly: false }],
      credentials: { passwordFile: '/srv/vnc/passwd' }, options: { classicAuth: false, keyframeInterval: 10 } },
    { name: 'rdp', protocol: 'rdp', address: '127.0.0.1:3389', roles: [{ name: 'user', groups: ['adm'], channels: ['cliprdr'] }],
      credentials: { mode: 'sam-file', path: '/etc/winpr/SAM', user: 'svc', domain: '' }, options: { nla: true, connectTimeout: 5 } },
    { name: 'wiki', protocol: 'http', address: 'http://127.0.0.1:3000', roles: [{ name: 'user' }],
      credentials: { mode: 'basic', username: 'svc', password: ref }, options: { idleTimeout: '15m', connections: 8 } },
  ],
  policies: [{ name: 'p', targets: ['*'], roles: ['*'], requesters: ['engineers'], approvers: ['approvers'], stages: [{ groups: ['a'], count: 1 }],
    maxDuration: '8h', hours: { days: ['mon'], from: '08:00', to: '18:00', tz: 'UTC' }, rules: [{ pattern: 'rm', action: 'deny', kinds: ['DROP'] }] }],
  breakGlass: { groups: ['oncall'], maxDuration: '1h', alertCommand: ['/bin/true'] },
  notify: { command: ['/bin/true'] },
  limits: { sessionBufferBytes: '64MiB' },
});

/** Only a ConfigError naming the file may come out; returns it (or null when the config is valid). */
function outcome(raw: unknown, file = 'gw.yaml'): ConfigError | null {
  try {
    validateConfig(raw, file, modules);
    return null;
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw new Error(`not a ConfigError: ${(e as Error)?.name}: ${(e as Error)?.message}`);
  }
}

t.test('the base config is valid', async (t) => {
  t.equal(outcome(base()), null);
  const cfg = validateConfig(base(), 'gw.yaml', modules);
  t.equal(cfg.limits.sessionBufferBytes, 64 * 1024 * 1024, 'sizes are parsed');
  t.equal(validateConfig({}, 'gw.yaml', modules).limits.sessionBufferBytes, 128 * 1024 * 1024, 'default budget');
});

const hostile: unknown[] = [
  { toString: 'x' }, { valueOf: 'x' }, { toString: { a: 1 } }, [{ toString: 'x' }], Object.create(null),
  JSON.parse('{"__proto__": {"polluted": true}}'), [Object.create(null)], [{ valueOf: 'x' }], null, 0, -1, 1.5, 1e308, Number.NaN, true, '', 'x'.repeat(5000), [], {}, [[[]]],
];

/** Every path (as keys) to a value in v. */
function paths(v: unknown, at: PropertyKey[] = []): PropertyKey[][] {
  const out: PropertyKey[][] = [at];
  if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, Array.isArray(v) ? Number(k) : k]));
  return out;
}

function setAt(root: any, path: PropertyKey[], value: unknown): any {
  if (!path.length) return value;
  let o = root;
  for (const k of path.slice(0, -1)) o = o[k as never];
  o[path[path.length - 1] as never] = value;
  return root;
}

t.test('fuzz: a hostile value anywhere is a config error, never a crash (fixed seed)', async (t) => {
  const all = paths(base());
  const extraKeys = ['groups', 'principals', 'login', 'grants', 'roles', 'channels', 'clipboard', 'viewOnly', 'database', 'allowLoadDataLocal', 'allowAgentForwarding', 'mode', 'admin', 'tls', 'host'];
  let errors = 0;
  const netted: string[] = [];
  const holders = (cfg: any) => cfg.targets.flatMap((x: any) => [x.roles[0], x.credentials ??= {}, x.options ??= {}]);
  const slots = holders(base()).length;
  fc.assert(fc.property(
    fc.constantFrom(...all), fc.constantFrom(...hostile), fc.constantFrom(...extraKeys), fc.option(fc.nat(slots - 1)),
    (path, value, extra, slot) => {
      const cfg = base();
      // Either replace any value of the config, or add a key under a role, credentials or options
      // (unknown keys there reach the protocol module's own validator).
      if (slot === null) setAt(cfg, path, value);
      else holders(cfg)[slot][extra] = value;
      const e = outcome(cfg);
      if (e) {
        errors++;
        if (/: a valid \w+ target \(/.test(e.message)) netted.push(e.message);
        if (!e.message.startsWith('gw.yaml: ')) throw new Error(`no file name: ${e.message}`);
        if (/\n\s+at /.test(e.message)) throw new Error(`a stack in the message: ${e.message}`);
      }
    },
  ), { seed: 25, numRuns: 3000 });
  t.same([...new Set(netted)], [], 'each protocol module names the exact key itself (none fell through to the safety net)');
  t.ok(errors > 1000, `most hostile values are refused (${errors} of 3000)`);
});

function yamlFile(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

function loadError(file: string): ConfigError {
  try {
    loadConfigFile(file, modules);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw new Error(`not a ConfigError: ${(e as Error)?.name}: ${(e as Error)?.message}`);
  }
  throw new Error('the config was accepted');
}

const sshTarget = 'name: web\n    protocol: ssh\n    address: 127.0.0.1:22\n    credentials: {mode: ephemeral-account, admin: {username: root, password: {value: x}}}';

t.test('objects where strings are expected name the key path (the issue\'s repro)', async (t) => {
  const f = yamlFile('groups.yaml', `targets:\n  - ${sshTarget}\n    roles:\n      - name: u\n        groups: [{toString: x}]\n`);
  t.equal(loadError(f).message, `${f}: targets[0].roles[0].groups: a list of Linux group names`);
  const f2 = yamlFile('principals.yaml', `targets:\n  - ${sshTarget.replace('ephemeral-account', 'certificate')}\n    roles:\n      - name: u\n        principals: [{toString: x}]\n`);
  t.equal(loadError(f2).message, `${f2}: targets[0].roles[0].principals: a list of Linux user names`);
  const f3 = yamlFile('users.yaml', 'idp:\n  dev:\n    users:\n      - name: alice\n        password: {value: x}\n        groups: [{toString: x}]\n');
  t.equal(loadError(f3).message, `${f3}: idp.dev.users[0].groups[0]: expected string`);
});

t.test('YAML aliases: unresolved, self-containing or exploding ones are config errors', async (t) => {
  const f = yamlFile('alias.yaml', `targets:\n  - ${sshTarget}\n    roles: [{name: u}]\n  - *later\n`);
  t.equal(loadError(f).message, `${f}: targets[1]: an alias to an anchor defined before it (*later has no &later earlier in the file)`);
  const f2 = yamlFile('alias-deep.yaml', 'policies:\n  - name: p\n    requesters: [a, *nobody]\n');
  t.match(loadError(f2).message, `${f2}: policies[0].requesters[1]: an alias to an anchor defined before it`);
  const f3 = yamlFile('self.yaml', 'gateway: &g\n  id: *g\n');
  t.equal(loadError(f3).message, `${f3}: gateway.id: a value that does not contain itself (an alias inside its own anchor)`);
  const laughs = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 10; i++) laughs.push(`l${i}: &l${i} [${Array(10).fill(i === 1 ? '*a' : `*l${i - 1}`).join(', ')}]`);
  const f4 = yamlFile('laughs.yaml', `${laughs.join('\n')}\ngateway: *l9\n`);
  t.match(loadError(f4).message, `${f4}: (top level): valid YAML (Excessive alias count`);
  const f5 = yamlFile('deep.yaml', `targets: ${'['.repeat(20_000)}${']'.repeat(20_000)}\n`);
  t.match(loadError(f5).message, new RegExp(`^${f5.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: line 1: valid YAML`));
  // Shared (not self-containing) aliases are fine.
  const ok = yamlFile('shared.yaml', 'policies:\n  - name: a\n    requesters: &who [engineers]\n  - name: b\n    requesters: *who\n');
  t.same(loadConfigFile(ok, modules).policies.map((p) => p.requesters), [['engineers'], ['engineers']]);
});

t.test('limits: sizes in bytes or with a unit; anything else names limits.sessionBufferBytes', async (t) => {
  t.equal(validateConfig({ limits: { sessionBufferBytes: 1024 } }, 'gw.yaml', modules).limits.sessionBufferBytes, 1024);
  t.equal(validateConfig({ limits: { sessionBufferBytes: '512KiB' } }, 'gw.yaml', modules).limits.sessionBufferBytes, 512 * 1024);
  t.equal(validateConfig({ limits: { sessionBufferBytes: '2 GiB' } }, 'gw.yaml', modules).limits.sessionBufferBytes, 2 * 1024 ** 3);
  for (const bad of [0, -5, 1.5, '64 megs', { toString: 'x' }]) {
    t.match(outcome({ limits: { sessionBufferBytes: bad } })?.message, /^gw\.yaml: limits\.sessionBufferBytes: /, `refused: ${JSON.stringify(bad)}`);
  }
  t.match(outcome({ limits: { nope: 1 } })?.message, 'gw.yaml: limits: unknown key(s) nope');
  t.match(outcome({ '\u0000': 1 })?.message, 'gw.yaml: (top level): unknown key(s) "\\u0000"', 'odd keys are quoted');
});
