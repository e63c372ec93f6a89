/**
 * A real Samba AD domain controller on loopback, provisioned in a directory of its own: what
 * `tollgate demo` adds as its directory (when Debian's samba is installed) and what the directory
 * tests run against. It needs the standard ports (389, 636, 88, 445), so one DC runs at a time on
 * the machine: startSambaDc() takes /tmp/tollgate-samba-dc.lock (a file holding the owner's pid; a
 * dead owner's lock is taken over) and waits for it up to lockTimeoutMs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const LOCK = '/tmp/tollgate-samba-dc.lock';

export interface SambaDcOptions {
  /** e.g. TG.TEST; the base DN is its labels (DC=tg,DC=test). */
  realm: string;
  /** NetBIOS domain, e.g. TG. */
  domain: string;
  /** Where to provision (emptied first); default a new temp dir. Removed by stop(). */
  dir?: string;
  /** How long to wait for another DC's lock (default 15 min). */
  lockTimeoutMs?: number;
  /** Password complexity off (the demo's "<name>-demo" passwords). */
  simplePasswords?: boolean;
  /** More smb.conf settings for the DC, e.g. 'old password allowed period = 0'. */
  smbOptions?: string[];
}

export interface SambaDc {
  dir: string;
  realm: string;
  baseDn: string;
  /** Administrator@<realm> */
  admin: string;
  adminPassword: string;
  /**
   * A simple bind over LDAPS as user@realm (ldapsearch of the base entry; Samba does not
   * implement ldapwhoami's Who-am-I extended operation): 0 when the password works, 49 when refused.
   */
  bind(user: string, password: string): { code: number; out: string };
  /** smbclient (NTLM, as a Windows logon would) listing the DC's shares as DOMAIN\user: 0 when the logon works. */
  smb(user: string, password: string): { code: number; out: string };
  /** samba-tool against the running DC as Administrator (throws with its output when it fails). */
  tool(args: string[]): string;
  stop(): Promise<void>;
}

/** Why a DC cannot run here (null: it can). */
export function sambaMissing(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const b of ['/usr/sbin/samba', '/usr/bin/samba-tool', '/usr/bin/ldapsearch', '/usr/bin/smbclient']) if (!existsSync(b)) return `needs ${b}`;
  return null;
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

async function lock(timeoutMs: number): Promise<() => void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fd = openSync(LOCK, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => { try { if (readFileSync(LOCK, 'utf8') === String(process.pid)) unlinkSync(LOCK); } catch { /* gone */ } };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = Number(readFileSync(LOCK, 'utf8') || 0);
      if (!owner || !alive(owner)) { try { unlinkSync(LOCK); } catch { /* raced */ } continue; }
      if (Date.now() > deadline) throw new Error(`another Samba DC on this machine holds its lock (pid ${owner})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); res(true); });
    s.on('error', () => res(false));
  });
}

function run(cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): { code: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: timeoutMs });
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

export async function startSambaDc(o: SambaDcOptions): Promise<SambaDc> {
  const release = await lock(o.lockTimeoutMs ?? 15 * 60_000);
  let dir: string;
  if (o.dir) { rmSync(o.dir, { recursive: true, force: true }); mkdirSync(o.dir, { recursive: true, mode: 0o700 }); dir = o.dir; } else dir = mkdtempSync(join(tmpdir(), 'tg-samba-'));
  const realm = o.realm.toUpperCase();
  const baseDn = realm.toLowerCase().split('.').map((l) => `DC=${l}`).join(',');
  const admin = `Administrator@${realm.toLowerCase()}`;
  const bind = (upn: string, password: string) =>
    run('ldapsearch', ['-x', '-H', 'ldaps://127.0.0.1', '-D', upn, '-w', password, '-b', baseDn, '-s', 'base', 'dn'], { LDAPTLS_REQCERT: 'never' });
  let proc: ChildProcess | null = null;
  const adminPassword = `Adm1n-${Math.random().toString(36).slice(2, 10)}!`;
  const cleanup = async () => {
    if (proc && proc.exitCode === null) {
      try { process.kill(-proc.pid!, 'SIGTERM'); } catch { /* gone */ }
      const exited = new Promise((r) => proc!.once('exit', r));
      const timer = setTimeout(() => { try { process.kill(-proc!.pid!, 'SIGKILL'); } catch { /* gone */ } }, 5000);
      await exited;
      clearTimeout(timer);
    }
    // samba starts helpers (samba-dcerpcd, rpcd_*) in their own process groups: end those of this DC (its unique dir) too.
    const helpers = run('pgrep', ['-f', `${dir}/etc/smb.conf`]).out.split('\n').map(Number).filter((p) => p > 0 && p !== process.pid);
    for (const pid of helpers) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    for (let i = 0; i < 50 && await portOpen(636); i++) await new Promise((r) => setTimeout(r, 100));
    rmSync(dir, { recursive: true, force: true });
    release();
  };
  const tool = (args: string[]) => {
    // The domain named explicitly: without it samba-tool takes the workgroup of /etc/samba/smb.conf
    // (WORKGROUP on Debian), and the DC may refuse that login (LDAP 49, data 51f: no logon servers).
    const r = run('samba-tool', [...args, '-H', 'ldap://127.0.0.1', '-U', `${o.domain}\\Administrator%${adminPassword}`]);
    if (r.code !== 0) throw new Error(`samba-tool ${args.join(' ')} failed:\n${r.out}`);
    return r.out;
  };
  try {
    for (const p of [389, 636]) if (await portOpen(p)) throw new Error(`port ${p} is in use (stop Debian's samba-ad-dc service)`);
    const prov = run('samba-tool', ['domain', 'provision', `--targetdir=${dir}`, `--realm=${realm}`, `--domain=${o.domain}`, '--server-role=dc',
      '--dns-backend=NONE', `--adminpass=${adminPassword}`, '--use-rfc2307', '--option=interfaces=lo', '--option=bind interfaces only=yes'], {}, 10 * 60_000); // 4 s idle, minutes on a busy machine (the schema step)
    if (prov.code !== 0) throw new Error(`samba-tool domain provision failed:\n${prov.out}`);
    if (o.smbOptions?.length) {
      // Into [global] of the provisioned smb.conf (provision keeps only some --option values).
      const conf = join(dir, 'etc', 'smb.conf');
      writeFileSync(conf, readFileSync(conf, 'utf8').replace(/^\[global\]\s*$/m, (g) => `${g}\n${o.smbOptions!.map((x) => `\t${x}`).join('\n')}`));
    }
    proc = spawn('samba', ['-s', join(dir, 'etc', 'smb.conf'), '-i', '-M', 'single'], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => { if (err.length < 20_000) err += d.toString(); });
    const deadline = Date.now() + 3 * 60_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`samba exited with ${proc.exitCode}:\n${err}`);
      if (bind(admin, adminPassword).code === 0) break;
      if (Date.now() > deadline) throw new Error(`samba did not answer LDAPS in time:\n${err}`);
      await new Promise((r) => setTimeout(r, 300));
    }
    // LDAPS simple binds can answer before the NTLM login samba-tool uses does (seen on a freshly
    // provisioned DC of a fresh machine): wait until samba-tool itself gets in.
    for (;;) {
      const r = run('samba-tool', ['user', 'list', '-H', 'ldap://127.0.0.1', '-U', `${o.domain}\\Administrator%${adminPassword}`]);
      if (r.code === 0) break;
      if (proc.exitCode !== null) throw new Error(`samba exited with ${proc.exitCode}:\n${err}`);
      if (Date.now() > deadline) throw new Error(`samba-tool could not log in to the new DC in time:\n${r.out}`);
      await new Promise((res) => setTimeout(res, 500));
    }
    if (o.simplePasswords) tool(['domain', 'passwordsettings', 'set', '--complexity=off', '--min-pwd-length=6']);
  } catch (e) {
    await cleanup();
    throw e;
  }
  return {
    dir, realm, baseDn, admin, adminPassword,
    bind: (user, password) => bind(`${user}@${realm.toLowerCase()}`, password),
    // The share list needs an authenticated session (no guest mapping on a DC), not file access to the temp dir.
    smb: (user, password) => run('smbclient', ['-L', '//127.0.0.1', '-U', `${o.domain}\\${user}%${password}`]),
    tool,
    stop: cleanup,
  };
}
