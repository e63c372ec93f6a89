/** The admin connection: one ssh2 client with the target's admin credential, commands run over exec. */
import ssh2 from 'ssh2';
import type { ProtocolContext, TargetConfig } from '../types.js';
import { adminOf, parseAddress, hostVerifierFor } from './config.js';

const { Client } = ssh2;

export interface ExecResult { code: number | null; stdout: string; stderr: string }

export function connectOptions(ctx: ProtocolContext, target: TargetConfig): ssh2.ConnectConfig {
  const { host, port } = parseAddress(target.address);
  const admin = adminOf(target);
  const opts: ssh2.ConnectConfig = { host, port, username: admin.username, readyTimeout: 10_000, keepaliveInterval: 0 };
  const verify = hostVerifierFor(target);
  if (verify) opts.hostVerifier = verify;
  if (admin.privateKey) opts.privateKey = ctx.resolveSecret(admin.privateKey, `targets.${target.name}.credentials.admin.privateKey`).reveal();
  if (admin.password) opts.password = ctx.resolveSecret(admin.password, `targets.${target.name}.credentials.admin.password`).reveal();
  return opts;
}

/** Dial with the admin credential. Errors name the target, never the credential. */
export function dialAdmin(ctx: ProtocolContext, target: TargetConfig): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    let done = false;
    c.once('ready', () => { done = true; resolve(c); });
    c.on('error', (e: Error & { level?: string }) => {
      if (done) return;
      done = true;
      c.end();
      const why = e.level === 'client-authentication' ? 'the admin credential was refused'
        : /host key|hostVerifier|Host denied/i.test(e.message) ? 'the target host key does not match options.hostKeyFingerprint' : e.message;
      reject(new Error(`admin connection to ${target.name} (${target.address}) failed: ${why}`));
    });
    try { c.connect(connectOptions(ctx, target)); } catch (e) { done = true; reject(new Error(`admin connection to ${target.name}: ${(e as Error).message}`)); }
  });
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
 * Run a POSIX sh script as the admin (with sudo -n when the admin is not root). The script travels
 * on stdin of `sh -s`, so nothing it holds (a password in a here-document) sits on a command line.
 */
export async function runScript(ctx: ProtocolContext, target: TargetConfig, script: string): Promise<ExecResult> {
  const admin = adminOf(target);
  const sudo = admin.sudo ?? admin.username !== 'root';
  const c = await dialAdmin(ctx, target);
  try {
    return await exec(c, sudo ? 'sudo -n sh -s' : 'sh -s', `${script}\n`, 60_000);
  } finally {
    c.end();
  }
}
