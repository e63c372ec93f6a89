/**
 * A real OpenSSH sshd on loopback, set up for the three credential modes (demo and tests):
 *   web01       ephemeral-account (admin: root with a key of its own)
 *   web01-cert  certificate       (TrustedUserCAKeys file the gateway keeps its CA key in)
 *   web01-pw    checkout          (a local account with a starting password)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { DemoTargets, TargetConfig } from '../types.js';
import { freePort } from '../net.js';

export const SSHD = '/usr/sbin/sshd';

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect({ host, port });
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

export interface SshdInstance {
  host: string;
  port: number;
  dir: string;
  configFile: string;
  /** Files the test/demo may need. */
  adminKeyFile: string;
  /** "SHA256:..." of the sshd host key, for options.hostKeyFingerprint. */
  hostKeyFingerprint: string;
  trustedCaFile: string;
  revokedKeysFile: string;
  logs(): string;
  stop(): Promise<void>;
}

/** Start sshd -D on a free loopback port with its own host key and config under dir. */
export async function startSshd(dir: string, opts: { extraConfig?: string } = {}): Promise<SshdInstance> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!existsSync('/run/sshd')) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const adminKey = join(dir, 'admin_ed25519');
  for (const f of [hostKey, adminKey]) {
    if (!existsSync(f)) {
      const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tollgate-demo', '-f', f]);
      if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
    }
  }
  const adminKeys = join(dir, 'admin_authorized_keys');
  writeFileSync(adminKeys, readFileSync(`${adminKey}.pub`), { mode: 0o600 });
  const trusted = join(dir, 'trusted_user_ca_keys');
  if (!existsSync(trusted)) writeFileSync(trusted, '', { mode: 0o644 });
  const revoked = join(dir, 'revoked_keys');
  if (!existsSync(revoked)) writeFileSync(revoked, '', { mode: 0o644 });
  const sftpServer = ['/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server', '/usr/libexec/sftp-server']
    .find((p) => existsSync(p)) ?? 'internal-sftp';
  let lastErr = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const configFile = join(dir, 'sshd_config');
    writeFileSync(configFile, [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'AuthorizedKeysFile .ssh/authorized_keys',
      'PubkeyAuthentication yes',
      'PasswordAuthentication yes',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      'StrictModes no',
      'UsePAM no',
      'UseDNS no',
      `TrustedUserCAKeys ${trusted}`,
      `RevokedKeys ${revoked}`,
      'AcceptEnv LANG LC_*',
      'AllowTcpForwarding yes',
      'X11Forwarding no',
      'PrintMotd no',
      'LogLevel VERBOSE',
      // Each brokered session opens two connections here (admin, then the minted account): the
      // default 10:30:100 drops unauthenticated connections at random under tens of parallel sessions.
      'MaxStartups 200:30:400',
      `Subsystem sftp ${sftpServer}`,
      opts.extraConfig ?? '',
      'Match User root',
      `  AuthorizedKeysFile ${adminKeys}`,
      '',
    ].join('\n'), { mode: 0o600 });
    let logs = '';
    const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d: Buffer) => { logs = (logs + d.toString()).slice(-200_000); });
    let exited = false;
    // If the caller exits without stop(), sshd must not outlive it.
    const onExit = () => { if (!exited) child.kill('SIGTERM'); };
    process.once('exit', onExit);
    child.once('exit', () => { exited = true; process.off('exit', onExit); });
    const deadline = Date.now() + 10_000;
    let up = false;
    while (!exited && Date.now() < deadline) {
      if (await canConnect('127.0.0.1', port)) { up = true; break; }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!up) {
      lastErr = logs;
      if (!exited) child.kill('SIGKILL');
      continue;
    }
    return {
      host: '127.0.0.1', port, dir, configFile,
      adminKeyFile: adminKey, trustedCaFile: trusted, revokedKeysFile: revoked,
      hostKeyFingerprint: fingerprintOfLine(readFileSync(`${hostKey}.pub`, 'utf8')),
      logs: () => logs,
      stop: async () => {
        if (exited) return;
        await new Promise<void>((resolve) => {
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
          setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 2000).unref();
        });
      },
    };
  }
  throw new Error(`sshd did not start: ${lastErr.slice(-500)}`);
}

function fingerprintOfLine(line: string): string {
  const b64 = line.trim().split(/\s+/)[1] ?? '';
  return 'SHA256:' + createHash('sha256').update(Buffer.from(b64, 'base64')).digest('base64').replace(/=+$/, '');
}

function run(cmd: string, args: string[], input?: string): void {
  for (let i = 0; i < 30; i++) {
    const r = spawnSync(cmd, args, { input, encoding: 'utf8' });
    if (r.status === 0) return;
    // Parallel useradd/userdel runs contend for /etc/passwd's lock: retry those.
    if (!/lock/i.test(r.stderr ?? '')) throw new Error(`${cmd} failed: ${(r.stderr ?? '').trim()}`);
    spawnSync('sleep', ['0.1']);
  }
  throw new Error(`${cmd}: /etc/passwd stayed locked`);
}

export interface DemoAccounts { certLogin: string; checkoutAccount: string; checkoutPassword: string }

/** Local accounts the certificate and checkout targets log into (root only). */
export function createDemoAccounts(): DemoAccounts {
  const tag = randomBytes(3).toString('hex');
  const certLogin = `tgdemo-cert-${tag}`;
  const checkoutAccount = `tgdemo-pw-${tag}`;
  const checkoutPassword = randomBytes(12).toString('base64url');
  run('useradd', ['-m', '-U', '-s', '/bin/bash', '-c', 'tollgate demo (certificate)', certLogin]);
  run('usermod', ['-p', '*', certLogin]);
  run('useradd', ['-m', '-U', '-s', '/bin/bash', '-c', 'tollgate demo (checkout)', checkoutAccount]);
  run('chpasswd', [], `${checkoutAccount}:${checkoutPassword}\n`);
  return { certLogin, checkoutAccount, checkoutPassword };
}

export function removeDemoAccounts(a: DemoAccounts): void {
  for (const u of [a.certLogin, a.checkoutAccount]) {
    spawnSync('pkill', ['-KILL', '-u', u]);
    if (spawnSync('id', ['-u', u]).status === 0) {
      try { run('userdel', ['-r', '-f', u]); } catch { /* reported by the caller's checks */ }
    }
  }
}

/** The three demo targets against one sshd. */
export function demoTargets(sshd: SshdInstance, accounts: DemoAccounts, names = { eph: 'web01', cert: 'web01-cert', pw: 'web01-pw' }): TargetConfig[] {
  const admin = { username: 'root', privateKey: { file: sshd.adminKeyFile } };
  const address = `${sshd.host}:${sshd.port}`;
  const options = { hostKeyFingerprint: sshd.hostKeyFingerprint };
  return [
    {
      name: names.eph, protocol: 'ssh', address, risk: 'medium', description: 'Demo sshd: an account minted per session',
      roles: [
        { name: 'user', description: 'a plain account' },
        { name: 'admin', description: 'an account in the sudo group', groups: ['sudo'] },
      ],
      credentials: { mode: 'ephemeral-account', admin }, options,
    },
    {
      name: names.cert, protocol: 'ssh', address, risk: 'medium', description: 'Demo sshd: a certificate signed per session',
      roles: [{ name: 'ops', login: accounts.certLogin }],
      credentials: { mode: 'certificate', admin, trustedCaFile: sshd.trustedCaFile, revokedKeysFile: sshd.revokedKeysFile }, options,
    },
    {
      name: names.pw, protocol: 'ssh', address, risk: 'medium', description: 'Demo sshd: a checked-out password rotated after use',
      roles: [{ name: 'shared' }],
      credentials: { mode: 'checkout', admin, account: accounts.checkoutAccount, password: { value: accounts.checkoutPassword } }, options,
    },
  ];
}

export async function sshDemo(dir: string, log: Logger): Promise<DemoTargets | null> {
  if (!existsSync(SSHD)) { log.warn('ssh demo: /usr/sbin/sshd is not installed (apt-get install openssh-server)'); return null; }
  if (process.getuid?.() !== 0) { log.warn('ssh demo: needs root to run sshd for several accounts'); return null; }
  const sshd = await startSshd(join(dir, 'sshd'));
  let accounts: DemoAccounts;
  try { accounts = createDemoAccounts(); } catch (e) { await sshd.stop(); throw e; }
  writeFileSync(join(dir, 'sshd', 'accounts.json'), JSON.stringify({ certLogin: accounts.certLogin, checkoutAccount: accounts.checkoutAccount }) + '\n');
  // The accounts go with the process even if the caller never calls stop() (spawnSync works in 'exit').
  const onExit = () => removeDemoAccounts(accounts);
  process.once('exit', onExit);
  log.info({ port: sshd.port }, 'ssh demo: sshd listening');
  return {
    targets: demoTargets(sshd, accounts),
    stop: async () => {
      process.off('exit', onExit);
      await sshd.stop();
      removeDemoAccounts(accounts);
      rmSync(join(dir, 'sshd'), { recursive: true, force: true });
    },
  };
}
