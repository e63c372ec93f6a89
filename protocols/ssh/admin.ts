/** The admin connection: one ssh2 client with the target's admin credential, commands run over exec. */
import ssh2 from 'ssh2';
import type { Secret } from '../../auth/secret.js';
import type { ProtocolContext, TargetConfig } from '../types.js';
import { adminOf, DEFAULT_PORT } from './config.js';
import { expectedHostKey, hostKeyCheck, HostKeyCheck } from './hostkeys.js';
import { parseAddress } from '../net.js';
import { RETRY_SH } from '../linux-accounts.js';
import { adminConnections } from '../bounded.js';

const { Client } = ssh2;

export interface ExecResult { code: number | null; stdout: string; stderr: string }

/**
 * One admin credential to log in with instead of the target's own (a rotation's current or new one):
 * only that credential is offered, so a login proves exactly it.
 */
export interface AdminAuth { field: 'admin.password' | 'admin.privateKey'; secret: Secret }

/** The ssh2 options of an admin login: the target's admin credential (config or vault), or `auth`. */
export async function connectOptions(ctx: ProtocolContext, target: TargetConfig, check: HostKeyCheck, auth?: AdminAuth): Promise<ssh2.ConnectConfig> {
  const { host, port } = parseAddress(target.address, DEFAULT_PORT);
  const admin = adminOf(target);
  const opts: ssh2.ConnectConfig = { host, port, username: admin.username, readyTimeout: 10_000, keepaliveInterval: 0, hostVerifier: check.verifier };
  if (auth) {
    if (auth.field === 'admin.privateKey') opts.privateKey = auth.secret.reveal();
    else opts.password = auth.secret.reveal();
    return opts;
  }
  if (admin.privateKey) opts.privateKey = (await ctx.config.credential(target, 'admin.privateKey')).reveal();
  if (admin.password) opts.password = (await ctx.config.credential(target, 'admin.password')).reveal();
  return opts;
}

/** Log in with the admin credential (or `auth`) under a host key check. Errors name the target, never the credential. */
export async function connectAdmin(ctx: ProtocolContext, target: TargetConfig, check: HostKeyCheck, auth?: AdminAuth): Promise<ssh2.Client> {
  let opts: ssh2.ConnectConfig;
  try { opts = await connectOptions(ctx, target, check, auth); } catch (e) { throw new Error(`admin connection to ${target.name}: ${(e as Error).message}`); }
  return new Promise((resolve, reject) => {
    const c = new Client();
    let done = false;
    c.once('ready', () => { done = true; resolve(c); });
    c.on('error', (e: Error & { level?: string }) => {
      if (done) return;
      done = true;
      c.end();
      void check.refused().then((hk) => {
        const why = hk ? hk.message : e.level === 'client-authentication' ? 'the admin credential was refused' : e.message;
        reject(hk ?? new Error(`admin connection to ${target.name} (${target.address}) failed: ${why}`));
      });
    });
    try { c.connect(opts); } catch (e) { done = true; reject(new Error(`admin connection to ${target.name}: ${(e as Error).message}`)); }
  });
}

/** Dial with the admin credential (or `auth`); the target's host key must match its pin (pinned now when it has none). */
export async function dialAdmin(ctx: ProtocolContext, target: TargetConfig, auth?: AdminAuth): Promise<ssh2.Client> {
  const check = await hostKeyCheck(ctx, target, { tofu: true, via: 'admin connection' });
  const c = await connectAdmin(ctx, target, check, auth);
  try {
    await check.afterLogin();
  } catch (e) {
    c.end();
    throw e;
  }
  return c;
}

/**
 * The host key check for a session connection: the configured or pinned key, pinned first through
 * an admin connection when the target has none (session connections never trust a new key).
 */
export async function sessionHostKey(ctx: ProtocolContext, target: TargetConfig): Promise<HostKeyCheck> {
  let expected = await expectedHostKey(ctx, target);
  if (!expected) {
    (await dialAdmin(ctx, target)).end();
    expected = await expectedHostKey(ctx, target);
  }
  return new HostKeyCheck(ctx, target, expected, false, 'session connection');
}

export function exec(c: ssh2.Client, command: string, stdin?: string, timeoutMs = 30_000): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    c.exec(command, (err, stream) => {
      if (err) return reject(err);
      let stdout = '';
      let stderr = '';
      let code: number | null = null;
      const t = setTimeout(() => { stream.close(); reject(new Error('admin command timed out')); }, timeoutMs);
      stream.on('data', (d: Buffer) => { stdout += d.toString(); });
      stream.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      stream.on('exit', (c2: number | null) => { code = c2; });
      stream.on('close', () => { clearTimeout(t); resolve({ code, stdout, stderr }); });
      stream.end(stdin ?? '');
    });
  });
}

/**
 * Run a POSIX sh script as the admin (with sudo -n when the admin is not root), on `conn` when given. The script travels
 * on stdin of `sh -s`, so nothing it holds (a password in a here-document) sits on a command line.
 */
export async function runScript(ctx: ProtocolContext, target: TargetConfig, script: string, conn?: ssh2.Client): Promise<ExecResult> {
  const admin = adminOf(target);
  const sudo = admin.sudo ?? admin.username !== 'root';
  const command = sudo ? 'sudo -n sh -s' : 'sh -s';
  if (conn) return exec(conn, command, `${script}\n`, 60_000);
  // A connection of its own: at most ADMIN_CONNECTIONS_PER_TARGET of these at once per target (sshd's
  // MaxStartups drops the handshakes of a burst, e.g. 1,000 sessions ending together).
  return adminConnections.run(target.name, async () => {
    const c = await dialAdmin(ctx, target);
    try {
      return await exec(c, command, `${script}\n`, 60_000);
    } finally {
      c.end();
    }
  });
}

/** The sh lines that set `account`'s password with chpasswd: the password travels in a here-document (stdin), never on a command line. */
export function chpasswdScript(account: string, password: Secret): string {
  return [RETRY_SH, `retry chpasswd <<'TOLLGATE_EOF'`, `${account}:${password.reveal()}`, 'TOLLGATE_EOF'].join('\n');
}
