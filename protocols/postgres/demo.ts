/**
 * A real PostgreSQL cluster for `tollgate demo` and the tests: initdb in a directory
 * (scram-sha-256, loopback only, a free port), an admin role for Tollgate, a sample database.
 * initdb refuses to run as root, so as root the cluster belongs to the 'postgres' OS user.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync, mkdirSync, mkdtempSync, chownSync, chmodSync, rmSync, statSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import type { DemoTargets, TargetConfig } from '../types.js';
import { freePort } from '../net.js';

export function findPgBin(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = join(root, v, 'bin');
    if (existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'pg_ctl'))) return bin;
  }
  return null;
}

function run(cmd: string, args: string[], asPostgres: boolean): Promise<void> {
  const [file, argv] = asPostgres ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  return new Promise((resolve, reject) => {
    const p = spawn(file, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => { if (err.length < 4000) err += d.toString(); });
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}: ${err.trim().slice(0, 1000)}`))));
  });
}

export interface DemoCluster {
  host: string;
  port: number;
  superuser: { user: string; password: string };
  admin: { user: string; password: string; passwordFile: string };
  dataDir: string;
  stop(): Promise<void>;
}

/** Start a cluster in dir; null when PostgreSQL is not installed. */
export async function startCluster(dir: string, log: Logger): Promise<DemoCluster | null> {
  const bin = findPgBin();
  if (!bin) return null;
  const root = process.getuid?.() === 0;
  mkdirSync(dir, { recursive: true });
  let owner = { uid: userInfo().uid, gid: userInfo().gid };
  let base = join(dir, 'postgres');
  if (root) {
    const id = idOf('postgres');
    if (!id) throw new Error('running as root needs the "postgres" OS user (apt-get install postgresql)');
    owner = id;
    chmodSync(dir, 0o711);
    if (!traversable(dir, owner)) {
      // An ancestor of dir is closed to the postgres user: keep the cluster in a temp dir of its own.
      base = mkdtempSync(join(tmpdir(), 'tollgate-pg-'));
      log.info({ dir, base }, 'demo PostgreSQL cluster placed outside dir (not reachable by the postgres user)');
    }
  }
  const data = join(base, 'data');
  const sockDir = join(base, 'sock');
  mkdirSync(sockDir, { recursive: true });
  if (root) {
    chownSync(base, owner.uid, owner.gid);
    chownSync(sockDir, owner.uid, owner.gid);
  }
  const superPassword = randomBytes(18).toString('base64url');
  const pwfile = join(base, 'superuser.pw');
  writeFileSync(pwfile, superPassword + '\n', { mode: 0o600 });
  if (root) chownSync(pwfile, owner.uid, owner.gid);
  await run(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C', '--no-instructions'], root);
  rmSync(pwfile, { force: true });
  const logFile = join(base, 'server.log');
  const pgCtl = join(bin, 'pg_ctl');
  // The free port may be taken between probing and binding (tests run side by side): retry.
  let port = 0;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await run(pgCtl, ['-D', data, '-l', logFile, '-w', '-t', '60', '-o', `-p ${port} -k ${sockDir} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off`, 'start'], root);
      break;
    } catch (e) {
      const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-1500) : '';
      if (attempt < 3 && /could not bind|Address already in use/i.test(tail)) continue;
      throw new Error(`${(e as Error).message}\n${tail}`);
    }
  }
  const stop = async () => {
    await run(pgCtl, ['-D', data, '-m', 'immediate', '-w', 'stop'], root).catch((e) => log.warn({ err: (e as Error).message }, 'pg_ctl stop failed'));
    rmSync(base, { recursive: true, force: true });
  };
  try {
    const adminPassword = randomBytes(18).toString('base64url');
    const passwordFile = join(dir, 'tollgate_admin.pw');
    writeFileSync(passwordFile, adminPassword + '\n', { mode: 0o600 });
    const su = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: superPassword, database: 'postgres' });
    await su.connect();
    try {
      await su.query(`CREATE ROLE tollgate_admin LOGIN SUPERUSER PASSWORD ${pg.escapeLiteral(adminPassword)}`);
      await su.query('CREATE ROLE app_owner NOLOGIN');
      await su.query('CREATE DATABASE app OWNER app_owner');
    } finally {
      await su.end();
    }
    const app = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: superPassword, database: 'app' });
    await app.connect();
    try {
      await app.query('SET ROLE app_owner');
      await app.query(`CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL, balance numeric(12,2) NOT NULL DEFAULT 0)`);
      await app.query(`INSERT INTO accounts (name, balance) VALUES ('alice', 120.50), ('bob', 80), ('carol', 1000)`);
    } finally {
      await app.end();
    }
    log.info({ port, dataDir: data }, 'demo PostgreSQL cluster started');
    return {
      host: '127.0.0.1', port, dataDir: data,
      superuser: { user: 'postgres', password: superPassword },
      admin: { user: 'tollgate_admin', password: adminPassword, passwordFile },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Can this user reach dir (search permission on every ancestor)? */
function traversable(dir: string, who: { uid: number; gid: number }): boolean {
  let p = resolve(dir);
  for (;;) {
    const st = statSync(p);
    const ok = (st.mode & 0o001) || (st.uid === who.uid && st.mode & 0o100) || (st.gid === who.gid && st.mode & 0o010);
    if (!ok) return false;
    const up = dirname(p);
    if (up === p) return true;
    p = up;
  }
}

function idOf(user: string): { uid: number; gid: number } | null {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${user}:`));
  if (!line) return null;
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** The demo target for a cluster: prod-db with roles read and admin. */
export function demoTarget(c: DemoCluster, name = 'prod-db'): TargetConfig {
  return {
    name,
    protocol: 'postgres',
    address: `${c.host}:${c.port}`,
    risk: 'high',
    description: 'Demo PostgreSQL cluster (database "app", table accounts)',
    roles: [
      { name: 'read', description: 'Read all data', grants: ['pg_read_all_data'] },
      { name: 'admin', description: 'Own and change the app schema', grants: ['app_owner', 'pg_read_all_data', 'pg_write_all_data', 'pg_signal_backend'] },
    ],
    credentials: { admin: { user: c.admin.user, password: { file: c.admin.passwordFile } }, database: 'app', onEnd: 'drop' },
    options: { allowPlain: false },
  };
}

export async function demo(dir: string, log: Logger): Promise<DemoTargets | null> {
  const c = await startCluster(dir, log);
  if (!c) return null;
  return { targets: [demoTarget(c)], stop: c.stop };
}
