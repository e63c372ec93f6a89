/**
 * `tollgate demo` (and the tests): a throw-away MariaDB server in a directory, on a free loopback
 * port, with an admin user and a small `shop` database. Target `app-db`, roles `read` and `admin`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, openSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import mysql from 'mysql2/promise';
import type { DemoTargets, TargetConfig } from '../types.js';
import { quoteLiteral } from './provisioner.js';
import { freePort } from '../net.js';

const SEARCH = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/usr/libexec'];

function findBinary(names: string[]): string | null {
  for (const dir of SEARCH) for (const n of names) if (existsSync(join(dir, n))) return join(dir, n);
  return null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface MariadbServer {
  port: number;
  socket: string;
  adminUser: string;
  adminPassword: string;
  target: TargetConfig;
  stop(): Promise<void>;
}

const SHOP_SQL = [
  'CREATE DATABASE shop',
  'CREATE TABLE shop.customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, email VARCHAR(200) NOT NULL)',
  'CREATE TABLE shop.products (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, price DECIMAL(10,2) NOT NULL)',
  'CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, product_id INT NOT NULL, qty INT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)',
  "INSERT INTO shop.customers (name, email) VALUES ('Ada Lovelace','ada@example.com'),('Alan Turing','alan@example.com'),('Grace Hopper','grace@example.com')",
  "INSERT INTO shop.products (name, price) VALUES ('keyboard', 49.90), ('mouse', 19.50), ('monitor', 229.00)",
  'INSERT INTO shop.orders (customer_id, product_id, qty) VALUES (1,1,1),(1,2,2),(2,3,1),(3,1,5)',
  'CREATE ROLE shop_reader',
  'GRANT SELECT ON shop.* TO shop_reader',
];

/** Start MariaDB in dir; resolves null when the server software is not installed. */
export async function startMariadb(dir: string, log: Logger, opts: { name?: string; extraArgs?: string[] } = {}): Promise<MariadbServer | null> {
  const mariadbd = findBinary(['mariadbd', 'mysqld']);
  const installDb = findBinary(['mariadb-install-db', 'mysql_install_db']);
  if (!mariadbd || !installDb) {
    log.warn('MariaDB is not installed (mariadbd / mariadb-install-db); skipping the MySQL demo target');
    return null;
  }
  const base = join(dir, 'mariadb');
  const datadir = join(base, 'data');
  mkdirSync(datadir, { recursive: true });
  const socket = join(base, 'mysqld.sock');
  const errLog = join(base, 'error.log');
  const asRoot = process.getuid?.() === 0;
  const userArgs = asRoot ? ['--user=root'] : [];
  const inst = spawnSync(installDb, [
    '--no-defaults', `--datadir=${datadir}`, '--auth-root-authentication-method=normal', '--skip-test-db', ...userArgs,
  ], { encoding: 'utf8', timeout: 120_000 });
  if (inst.status !== 0) throw new Error(`mariadb-install-db failed: ${(inst.stderr || inst.stdout || '').slice(-800)}`);

  const port = await freePort();
  const fd = openSync(errLog, 'a');
  // setpriv --pdeathsig: the server stops when this process dies without calling stop() (crash, SIGKILL).
  const setpriv = findBinary(['setpriv']);
  const [cmd, pre] = setpriv ? [setpriv, ['--pdeathsig', 'TERM', mariadbd]] : [mariadbd, []];
  const child: ChildProcess = spawn(cmd, [...pre,
    '--no-defaults', `--datadir=${datadir}`, `--socket=${socket}`, `--port=${port}`, '--bind-address=127.0.0.1',
    `--pid-file=${join(base, 'mysqld.pid')}`, '--skip-name-resolve', '--skip-log-bin', '--innodb-buffer-pool-size=32M',
    '--innodb-log-file-size=16M', '--max-connections=300', '--local-infile=1', '--max-allowed-packet=64M', ...userArgs, ...(opts.extraArgs ?? []),
  ], { stdio: ['ignore', fd, fd], detached: false });
  closeSync(fd);
  let exited = false;
  child.on('exit', () => { exited = true; });

  const adminUser = 'tollgate_admin';
  const adminPassword = randomBytes(18).toString('base64url');
  let root: mysql.Connection | null = null;
  const deadline = Date.now() + 60_000;
  while (!root) {
    if (exited) throw new Error(`mariadbd exited: ${readFileSync(errLog, 'utf8').slice(-800)}`);
    try {
      root = await mysql.createConnection({ socketPath: socket, user: 'root', password: '' });
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`mariadbd did not start: ${readFileSync(errLog, 'utf8').slice(-800)}`);
      }
      await sleep(100);
    }
  }
  try {
    const admin = `${quoteLiteral(adminUser)}@'127.0.0.1'`;
    await root.query(`CREATE USER ${admin} IDENTIFIED BY ${quoteLiteral(adminPassword)}`);
    await root.query(`GRANT ALL PRIVILEGES ON *.* TO ${admin} WITH GRANT OPTION`);
    for (const s of SHOP_SQL) await root.query(s);
    await root.query(`GRANT shop_reader TO ${admin} WITH ADMIN OPTION`);
  } finally {
    await root.end();
  }

  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      for (let i = 0; i < 150 && !exited; i++) await sleep(100);
      if (!exited) child.kill('SIGKILL');
      for (let i = 0; i < 20 && !exited; i++) await sleep(50);
    }
    rmSync(base, { recursive: true, force: true });
  };
  const target: TargetConfig = {
    name: opts.name ?? 'app-db',
    protocol: 'mysql',
    address: `127.0.0.1:${port}`,
    risk: 'medium',
    description: 'Demo MariaDB with the shop database',
    credentials: { admin: { user: adminUser, password: { value: adminPassword } } },
    options: {},
    roles: [
      { name: 'read', description: 'SELECT on shop', grants: ['SELECT ON shop.*'], database: 'shop' },
      { name: 'admin', description: 'everything on shop', grants: ['ALL PRIVILEGES ON shop.*'], database: 'shop' },
    ],
  };
  log.info({ port }, 'demo MariaDB ready');
  return { port, socket, adminUser, adminPassword, target, stop };
}

export async function startMariadbDemo(dir: string, log: Logger): Promise<DemoTargets | null> {
  const s = await startMariadb(dir, log);
  if (!s) return null;
  return { targets: [s.target], stop: s.stop };
}
