/**
 * Test support for protocols/mysql: a real MariaDB server (the module's demo) in a temp dir,
 * admin queries against it, and async helpers to run real clients (mariadb CLI, sysbench).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import mysql from 'mysql2/promise';
import { startMariadb, type MariadbServer } from '../../protocols/mysql/demo.js';
import { ensureTlsMaterial } from '../../proxy/tls.js';

export const quietLog = pino({ level: process.env['TG_TEST_LOG'] ?? 'silent' });

interface Teardown { teardown(fn: () => unknown): void }

export interface TestMariadb extends MariadbServer {
  dir: string;
  /** The CA of the server's certificate when started with tls. */
  tlsCa: string | null;
  /** Run a statement as the admin (directly, not through the gateway). */
  admin<T = any>(sql: string, params?: unknown[]): Promise<T>;
  /** Session users (tg_%) that exist right now. */
  sessionUsers(): Promise<string[]>;
  /** Connections of session users right now. */
  sessionConnections(): Promise<number>;
}

export async function startTestMariadb(t: Teardown, opts: { tls?: boolean; extraArgs?: string[] } = {}): Promise<TestMariadb | null> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-my-'));
  let tlsCa: string | null = null;
  const extraArgs: string[] = [...(opts.extraArgs ?? [])];
  if (opts.tls) {
    // A server certificate from a private CA (the gateway's helper, in a directory of its own).
    const m = ensureTlsMaterial(join(dir, 'server-tls'), ['127.0.0.1']);
    tlsCa = m.ca;
    const tlsDir = join(dir, 'server-tls', 'tls');
    extraArgs.push(`--ssl-cert=${join(tlsDir, 'server.pem')}`, `--ssl-key=${join(tlsDir, 'server.key')}`, `--ssl-ca=${join(tlsDir, 'ca.pem')}`);
  }
  const s = await startMariadb(dir, quietLog, { extraArgs });
  if (!s) {
    rmSync(dir, { recursive: true, force: true });
    return null;
  }
  const conn = await mysql.createConnection({ host: '127.0.0.1', port: s.port, user: s.adminUser, password: s.adminPassword, multipleStatements: true });
  t.teardown(async () => {
    await conn.end().catch(() => conn.destroy());
    await s.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const admin = async (sql: string, params?: unknown[]) => (await conn.query(sql, params))[0] as any;
  return {
    ...s,
    dir,
    tlsCa,
    admin,
    async sessionUsers() {
      const rows = await admin("SELECT User AS u FROM mysql.user WHERE User LIKE 'tg\\_%' ORDER BY User");
      return (rows as { u: string }[]).map((r) => r.u);
    },
    async sessionConnections() {
      const rows = await admin("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE USER LIKE 'tg\\_%'");
      return Number((rows as { n: number }[])[0]!.n);
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export interface RunResult { code: number | null; stdout: string; stderr: string }

/** Run a client without blocking the event loop (the gateway runs in this process). */
export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; cwd?: string; env?: Record<string, string>; onSpawn?: (p: ReturnType<typeof spawn>) => void } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], cwd: opts.cwd, env: opts.env ? { ...process.env, ...opts.env } : process.env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    opts.onSpawn?.(p);
    p.stdin!.on('error', () => undefined); // the client may exit before reading its stdin
    if (opts.input !== undefined) p.stdin.end(opts.input);
    else if (!opts.onSpawn) p.stdin.end();
  });
}
