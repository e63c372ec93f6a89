/**
 * The MySQL/MariaDB half of the fidelity suite: one real MariaDB, one real gateway in front of it,
 * and the same work run twice - directly, and through the gateway with a connection secret (the
 * gateway mints a user for the session) - then compared after normalising what legitimately
 * differs per session.
 *
 * Direct runs log in as `fd_alice_000000`, an account made like a minted one: the same grants,
 * the same host part and a name of the same length as `tg_alice_xxxxxx`. Each run starts from a
 * fresh `test` database (what mysql-test cases expect), and a gateway run is over only once the
 * session's user is dropped.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_POLICIES, startTestGateway, type TestGateway } from '../../support/gateway.js';
import { startTestMariadb, waitFor, type TestMariadb } from '../../support/mariadb.js';
import { nameRule, type Rule } from '../common.js';

/** Where Debian's mariadb-test package puts MariaDB's own test suite. */
export const MYSQL_TEST_DIR = '/usr/share/mysql/mysql-test';
/** Same length and host part as what the gateway mints for alice (tg_alice_ + 6 characters). */
export const DIRECT_USER = 'fd_alice_000000';
export const SCRATCH_DB = 'test';
/** What both accounts may do: everything in the scratch database, and mysql-test's suppression hook. */
export const GRANTS = ['ALL PRIVILEGES ON test.*', 'EXECUTE ON PROCEDURE mtr.add_suppression'];

export type Via = 'direct' | 'gateway';
/** mysqltest's protocols: text (COM_QUERY), prepared statements, prepared statements with cursors. */
export type TestMode = 'text' | 'ps-protocol' | 'cursor-protocol';

interface Teardown { teardown(fn: () => unknown): void }

export const MYSQL_RULES: Rule[] = [
  nameRule(DIRECT_USER, '<session user>', 'the direct run logs in as its own account'),
  { pattern: /\btg_alice_[a-z0-9]{6}\b/, with: '<session user>', why: 'the gateway mints a user per session' },
];

export interface Endpoint { host: string; port: number; user: string; password: string }

export interface RunOptions {
  timeoutMs?: number;
  /** 'fid' (default) or 'tampered': the same grants with a deny rule for statements naming `t_tampered` - a gateway that answers differently. */
  role?: 'fid' | 'tampered';
}

export interface MysqltestRun {
  code: number | null;
  /** The result file mysqltest recorded ('' when it stopped before writing it). */
  result: string;
  /** mysqltest's own messages (stdout and stderr). */
  log: string;
}

export interface MysqlFidelity {
  db: TestMariadb;
  tg: TestGateway;
  /** Where to connect for a run (a fresh single-use secret for each gateway run). */
  endpoint(via: Via, role?: 'fid' | 'tampered'): Promise<Endpoint>;
  /** Drop and recreate the scratch database. */
  freshDb(): Promise<void>;
  /** After a gateway run: wait until the session's user is gone (a run is over only then). */
  settle(via: Via): Promise<void>;
  /** Run one mysql-test case (main/<name>.test) with mariadb-test, recording its result. */
  mysqltest(name: string, mode: TestMode, via: Via, opts?: RunOptions): Promise<MysqltestRun>;
}

function spawnCollect(cmd: string, args: string[], opts: { cwd: string; env: Record<string, string>; timeoutMs: number }): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal) return reject(new Error(`${cmd} ${signal === 'SIGKILL' ? `timed out after ${opts.timeoutMs} ms` : `killed by ${signal}`}`));
      resolve({ code, out });
    });
  });
}

/**
 * The server settings of mysql-test-run's default my.cnf (include/default_mysqld.cnf) that change
 * what cases print, so the cases run as they do upstream.
 */
export const MTR_SERVER_ARGS = [
  '--character-set-server=latin1', '--default-storage-engine=myisam', '--max-heap-table-size=1M', '--sort-buffer-size=256K',
  '--key-buffer-size=1M', '--use-stat-tables=preferably', '--histogram-type=json_hb', '--log-bin-trust-function-creators=1',
];

export async function startMysqlFidelity(t: Teardown): Promise<MysqlFidelity> {
  const db = await startTestMariadb(t, { extraArgs: MTR_SERVER_ARGS });
  if (!db) throw new Error('MariaDB is required (apt-get install mariadb-server mariadb-client)');
  const directPassword = `direct-${Math.random().toString(36).slice(2)}`;
  await db.admin('CREATE DATABASE mtr');
  // mysql-test-run's own hook for expected server log lines; a no-op here.
  await db.admin('CREATE PROCEDURE mtr.add_suppression(pattern VARCHAR(255)) BEGIN END');
  await db.admin(`CREATE USER '${DIRECT_USER}'@'%' IDENTIFIED BY '${directPassword}'`);
  for (const g of GRANTS) await db.admin(`GRANT ${g} TO '${DIRECT_USER}'@'%'`);

  const target = {
    ...db.target, name: 'fid-db', description: 'MariaDB mysql-test cases',
    // plain TCP on both sides, as the direct runs (with the TLS-required listener this must be said)
    options: { allowPlain: true },
    roles: [
      { name: 'fid', description: 'Everything in the scratch database', grants: GRANTS, database: SCRATCH_DB },
      { name: 'tampered', description: 'As fid, with a deny rule (the suite must notice)', grants: GRANTS, database: SCRATCH_DB },
    ],
  };
  const policies = [{ ...DEFAULT_POLICIES[0], rules: [{ pattern: '\\bt_tampered\\b', action: 'deny', roles: ['tampered'], message: 'blocked by Tollgate policy: t_tampered is off limits' }] }];
  const tg = await startTestGateway({ targets: [target], policies, listeners: ['mysql'] });
  t.teardown(() => tg.close());
  const gw = tg.listener('mysql');
  const work = mkdtempSync(join(tmpdir(), 'tg-fid-my-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));

  const grants = new Map<string, string>();
  /** Every gateway run signs in with its own single-use connection secret, as a person would. */
  const secret = async (role: string) => {
    let id = grants.get(role);
    if (!id) { id = (await tg.grant('alice', 'fid-db', role, '8h')).id; grants.set(role, id); }
    return (await tg.secret('alice', id)).secret;
  };
  const endpoint = async (via: Via, role: 'fid' | 'tampered' = 'fid'): Promise<Endpoint> => via === 'direct'
    ? { host: '127.0.0.1', port: db.port, user: DIRECT_USER, password: directPassword }
    : { host: gw.host, port: gw.port, user: `fid-db:${role}`, password: await secret(role) };
  const freshDb = async () => {
    await db.admin(`DROP DATABASE IF EXISTS ${SCRATCH_DB}`);
    await db.admin(`CREATE DATABASE ${SCRATCH_DB}`);
  };
  const settle = async (via: Via) => {
    if (via !== 'gateway') return;
    await waitFor(async () => (await db.sessionUsers()).length === 0, 30_000, 'the session user to be dropped');
  };

  return {
    db, tg, endpoint, freshDb, settle,
    async mysqltest(name, mode, via, { timeoutMs = 180_000, role = 'fid' } = {}) {
      await freshDb();
      const e = await endpoint(via, role);
      const dir = mkdtempSync(join(work, `${name}-${via}-`));
      const resultFile = join(dir, 'out.result');
      const args = [
        `--host=${e.host}`, `--port=${e.port}`, `--user=${e.user}`, `--password=${e.password}`, `--database=${SCRATCH_DB}`,
        `--basedir=${MYSQL_TEST_DIR}`, `--tmpdir=${dir}`, `--logdir=${dir}`, `--test-file=${join(MYSQL_TEST_DIR, 'main', `${name}.test`)}`,
        `--result-file=${resultFile}`, '--record', '--silent', '--max-connect-retries=1',
        ...(mode === 'text' ? [] : [`--${mode}`]),
      ];
      const env = {
        PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: dir, LC_ALL: 'C',
        MYSQLTEST_VARDIR: dir, MYSQL_TMP_DIR: dir, MYSQL_TEST_DIR,
      };
      try {
        // mysql-test sources its includes relative to the suite directory, as mysql-test-run runs it.
        const r = await spawnCollect('mariadb-test', args, { cwd: MYSQL_TEST_DIR, env, timeoutMs });
        const result = existsSync(resultFile) ? readFileSync(resultFile, 'utf8') : '';
        return { code: r.code, result, log: r.out.split(e.password).join('<secret>') };
      } finally {
        rmSync(dir, { recursive: true, force: true });
        await settle(via);
      }
    },
  };
}

/** What a mysqltest run is compared by: its result, how it exited and its last words. */
export function mysqltestTranscript(r: MysqltestRun): string {
  const tail = r.log.trim().split('\n').slice(-3).join('\n');
  return `${r.result}\n-- mariadb-test exit code ${r.code}${tail ? `\n${tail}` : ''}\n`;
}
