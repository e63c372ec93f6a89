#!/usr/bin/env node
// Installs what `npm start` (demo) or `npm test` needs on a fresh Debian 12 + Node 20 machine:
// npm packages when node_modules is missing or stale, Debian packages through apt-get when missing.
// Uses Node built-ins only, so it runs before `npm install`.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const mode = process.argv[2] ?? 'demo';

// Debian packages per use. Tests need the real servers and real clients.
const DEMO = ['openssh-server', 'openssh-client', 'postgresql', 'mariadb-server', 'mariadb-client', 'xvfb', 'x11vnc', 'xterm', 'procps'];
const TEST = [
  ...DEMO, 'sshpass', 'sudo', 'chromium', 'postgresql-client', 'sysbench', 'tigervnc-standalone-server', 'tigervnc-viewer', 'xdotool', 'x11-apps', 'nginx', 'wrk', 'asciinema', 'openssl', 'xrdp', 'xorgxrdp', 'freerdp2-x11', 'imagemagick', 'tigervnc-tools', 'vncsnapshot', 'pgbouncer', 'freerdp2-shadow-x11', 'winpr-utils',
  // several gateways: a real load balancer in front of two nodes (test/cluster)
  'haproxy',
  // database wire fidelity: MariaDB's own mysql-test suite, and real drivers (Python, JDBC)
  'mariadb-test', 'python3-psycopg2', 'python3-pymysql', 'default-jdk-headless', 'libpostgresql-jdbc-java', 'libmariadb-java',
  // SQL Server (TDS) clients: FreeTDS tsql and pymssql
  'freetds-bin', 'python3-pymssql',
  // desktop clipboard tests: the X clipboard on both sides of a VNC / RDP session
  'xclip',
  // SIEM push: Debian's rsyslog (with its TLS driver) receives the audit stream in tests
  'rsyslog',
  'rsyslog-gnutls',
  // directory accounts: a Samba AD domain controller and LDAP/SMB clients for the tests
  'samba', 'samba-ad-dc', 'samba-ad-provision', 'winbind', 'ldap-utils', 'smbclient', 'krb5-user',
  // the OpenLDAP flavour of the directory: a slapd per test in a temp dir (protocols/directory-slapd.ts)
  'slapd',
  // store faults: an ext4 image on a loop device the kernel turns read-only (mkfs.ext4, e2fsck, findmnt)
  'e2fsprogs', 'util-linux',
];
const BENCH = [...TEST, 'nginx', 'wrk', 'pgbouncer'];
const wanted = { demo: DEMO, test: TEST, bench: BENCH }[mode] ?? DEMO;

function log(msg) { process.stderr.write(`[ensure-deps] ${msg}\n`); }

function missingDebs(pkgs) {
  const out = spawnSync('dpkg-query', ['-W', '-f=${Package} ${Status}\n', ...pkgs], { encoding: 'utf8' });
  const ok = new Set(out.stdout.split('\n').filter((l) => l.endsWith('install ok installed')).map((l) => l.split(' ')[0]));
  return pkgs.filter((p) => !ok.has(p));
}

// Debian packages and npm packages install side by side (they do not depend on each other).
function run(cmd, args, opts) {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', opts.quiet ? 'ignore' : 'inherit', 'inherit'], ...opts });
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}`))));
  });
}

async function debian() {
  const missing = existsSync('/usr/bin/dpkg-query') ? missingDebs(wanted) : [];
  if (!missing.length) return;
  if (process.getuid?.() !== 0) {
    log(`missing Debian packages (run as root to install): ${missing.join(' ')}`);
    return;
  }
  log(`installing Debian packages: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // slapd: no default database of its own (the tests configure theirs in temp dirs).
  if (missing.includes('slapd')) spawnSync('debconf-set-selections', [], { input: 'slapd slapd/no_configuration boolean true\n', stdio: ['pipe', 'ignore', 'ignore'] });
  await run('apt-get', ['update', '-q'], { env, quiet: true });
  await run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], { env, quiet: true });
  // Debian starts these services on install; Tollgate runs its own instances in temp dirs.
  for (const svc of [
    'ssh', 'postgresql', 'mariadb', 'nginx', 'pgbouncer', 'xrdp', 'xrdp-sesman',
    'rsyslog',
    'haproxy',
    'samba-ad-dc', 'smbd', 'nmbd', 'winbind',
    'slapd',
  ]) {
    spawnSync('systemctl', ['disable', '--now', svc], { stdio: 'ignore' });
    spawnSync('service', [svc, 'stop'], { stdio: 'ignore' });
  }
}

// npm packages: install when node_modules is missing or was installed from another lock file.
async function npmPackages() {
  const lock = join(root, 'package-lock.json');
  const stamp = join(root, 'node_modules', '.tollgate-installed');
  const lockHash = existsSync(lock) ? createHash('sha256').update(readFileSync(lock)).digest('hex') : 'no-lock';
  const installed = existsSync(stamp) ? readFileSync(stamp, 'utf8').trim() : '';
  if (installed === lockHash && existsSync(join(root, 'node_modules', '.bin', 'tsc'))) return;
  log('installing npm packages (npm ci)');
  await run('npm', [existsSync(lock) ? 'ci' : 'install', '--no-audit', '--no-fund'], { cwd: root });
  writeFileSync(stamp, `${lockHash}\n`);
}

// --only npm|debian: one half (npm start installs npm packages first and Debian packages while the gateway starts).
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : null;
try {
  await Promise.all([only === 'npm' ? null : debian(), only === 'debian' ? null : npmPackages()]);
} catch (e) {
  log(e.message);
  process.exit(1);
}
// A quick sanity check that native modules load on this Node.
try {
  const pkg = JSON.parse(readFileSync(join(root, 'node_modules', 'better-sqlite3', 'package.json'), 'utf8'));
  if (!pkg.version) throw new Error('no better-sqlite3');
} catch (e) {
  log(`npm packages look broken: ${e.message}`);
  process.exit(1);
}
