/**
 * The YAML config validator: YAML parsing (anchors, aliases, tags, merge keys), the composed
 * schemas (gateway, listeners, store, IdP, targets of every protocol, policies, rules, limits)
 * and each protocol module's target validation. A bad file is a ConfigError naming the file and
 * key path — never another exception, never a hang (alias bombs), never unbounded memory.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { moduleMap } from '../../../protocols/index.js';
import { ConfigError, parseConfigText } from '../../../proxy/config.js';
import { invariant, type FuzzTarget } from '../engine.js';

const modules = await moduleMap();
const FILE = '/etc/tollgate/gateway.yaml';

// yaml warns (process.emitWarning) about odd keys in mutated documents: not a finding, and noisy.
process.removeAllListeners('warning');

function parse(input: Buffer): void {
  try {
    parseConfigText(input.toString('utf8'), FILE, modules);
  } catch (e) {
    if (e instanceof ConfigError) {
      invariant(e.message.startsWith(`${FILE}: `), `a config error that does not name the file: ${e.message.slice(0, 200)}`);
      return;
    }
    throw e;
  }
}

/**
 * The yaml library builds an Error (with a stack trace) for every problem it finds; mutated
 * documents have many. Traces are cut short while fuzzing, and taken in full for a failure.
 */
function run(input: Buffer): void {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 1;
  try {
    parse(input);
  } catch {
    Error.stackTraceLimit = limit;
    parse(input);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** The README's configuration reference, the example every operator starts from. */
function readmeExample(): Buffer[] {
  const md = readFileSync(join(import.meta.dirname, '..', '..', '..', 'README.md'), 'utf8');
  const at = md.indexOf('## Configuration reference');
  const start = md.indexOf('```yaml\n', at);
  const end = md.indexOf('```\n', start + 8);
  if (start < 0 || end < start) return [];
  const whole = md.slice(start + 8, end);
  // Each top-level section on its own too: mutations of small documents run many times faster.
  const sections = whole.split(/\n(?=[a-z])/).map((s) => Buffer.from(`${s}\n`));
  return [Buffer.from(whole), ...sections];
}

const TARGETS = [
  { name: 'web01', protocol: 'ssh', address: '10.0.0.5:22', risk: 'low', roles: [{ name: 'user' }, { name: 'admin', groups: ['sudo'] }], credentials: { mode: 'ephemeral-account', admin: { username: 'root', privateKey: { file: 'k' } } } },
  { name: 'prod-db', protocol: 'postgres', address: '10.0.0.6:5432', risk: 'high', roles: [{ name: 'read', grants: ['pg_read_all_data'] }], credentials: { admin: { user: 'postgres', password: { env: 'PGPW' } } }, options: { database: 'app' } },
  { name: 'app-db', protocol: 'mysql', address: '10.0.0.7:3306', risk: 'medium', roles: [{ name: 'read', grants: ['SELECT ON app.*'] }], credentials: { admin: { user: 'root', password: { value: 'x' } } } },
  { name: 'wiki', protocol: 'http', address: 'http://10.0.0.8:3000', risk: 'low', roles: [{ name: 'viewer' }], credentials: { mode: 'none' } },
  { name: 'desk', protocol: 'vnc', address: '10.0.0.9:5900', risk: 'low', roles: [{ name: 'user' }], credentials: { mode: 'static', password: { value: 'pw' } } },
  { name: 'rdp', protocol: 'rdp', address: '10.0.0.10:3389', risk: 'low', roles: [{ name: 'user' }], credentials: { mode: 'linux-account', admin: { username: 'root', privateKey: { file: 'k' } } } },
];

export const targets: FuzzTarget[] = [
  {
    name: 'config.yaml',
    covers: 'YAML parsing (anchors, aliases, merge keys, tags) and the whole config schema with every protocol module\'s target validation',
    expected: (e) => e instanceof ConfigError,
    run,
    maxLength: 2 * 1024,
    arbitrary: (fcl) => fcl.tuple(
      fcl.subarray(TARGETS, { maxLength: 4 }),
      fcl.array(fcl.record({ name: fcl.string({ maxLength: 8 }), targets: fcl.array(fcl.constantFrom('*', 'web*', 'prod-db'), { maxLength: 2 }), requesters: fcl.array(fcl.string({ maxLength: 6 }), { maxLength: 2 }), maxDuration: fcl.constantFrom('8h', '1d', 'x', '0s', '99999999h') }), { maxLength: 2 }),
      fcl.record({ port: fcl.integer({ min: -1, max: 70000 }), loginTimeout: fcl.constantFrom('30s', '1ms', 'forever', '0') }),
      fcl.dictionary(fcl.string({ maxLength: 6 }), fcl.oneof(fcl.string({ maxLength: 6 }), fcl.integer(), fcl.boolean(), fcl.constant(null)), { maxKeys: 3 }),
    ).map(([ts, ps, l, extra]) => new Uint8Array(Buffer.from(stringify({ gateway: { dataDir: '/var/lib/tollgate', ...extra }, listeners: { http: { port: l.port, loginTimeout: l.loginTimeout } }, targets: ts, policies: ps })))),
    seeds: () => [
      ...readmeExample(),
      Buffer.from('gateway: {dataDir: /tmp/x}\nlisteners: {http: {host: 127.0.0.1, port: 8080}, ssh: {port: 2222}}\n'),
      Buffer.from('a: &a [*a]\n'),
      Buffer.from('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'),
      Buffer.from('targets:\n  - &t {name: a, protocol: ssh, address: "h:22", risk: low, roles: [{name: u}], credentials: {}}\n  - <<: *t\n    name: b\n'),
      Buffer.from('gateway: !!binary aGVsbG8=\ntargets: !!set {a, b}\npolicies: !!omap [a: 1]\n'),
    ],
  },
];
