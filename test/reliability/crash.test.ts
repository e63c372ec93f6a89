/**
 * Crash recovery, for real: `tollgate serve` runs as a child process from a config file; live ssh
 * shell, sftp, PostgreSQL and MySQL sessions run through it (minted accounts, a role and a user on
 * the real targets);
 * the process is killed with SIGKILL mid-session, ROUNDS times in a row with different timing, and
 * restarted on the same data. After each restart: every lease the crash left is revoked on the
 * target (the account and the role are gone) by the time the restarted gateway listens (its
 * reaper runs first), the sessions are ended `gateway_crash` in the store and the audit log, their
 * recordings are sealed, marked `cut: gateway_crash`, verify against their seal and hold what the
 * clients saw up to the last flush before the kill, and the audit chain verifies. The target
 * servers are reused across rounds. TOLLGATE_CRASH_ROUNDS sets the number of rounds: 5 by default
 * (a round is 20-30 s on a loaded 2-core machine, mostly the child's start-up), 20 for the full run.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import mysql from 'mysql2/promise';
import pino from 'pino';
import { moduleMap } from '../../protocols/index.js';
import { createServer } from 'node:net';
import { loadConfigFile } from '../../proxy/config.js';
import { Gateway } from '../../proxy/gateway.js';
import { replayCast } from '../../recorder/index.js';
import { DEFAULT_POLICIES, TEST_USERS } from '../support/gateway.js';
import { havePostgres, startTestCluster, sleep } from '../support/pg.js';
import { startTestMariadb } from '../support/mariadb.js';
import { haveSshd, SSH_OPTS, startTestSshd, usersWithPrefix } from '../support/sshd.js';

const root = join(import.meta.dirname, '..', '..');
const ROUNDS = Number(process.env['TOLLGATE_CRASH_ROUNDS'] ?? 5);
/** What a crash may lose of a recording: the data not yet flushed (FLUSH_MS 1 s), plus scheduling slack. */
const FLUSH_SLACK_MS = 2000;

if (!haveSshd || !havePostgres) throw new Error('the crash test needs sshd (as root) and PostgreSQL');

/**
 * A free port below the kernel's ephemeral range (32768+): the gateway listens on the same ports
 * after each restart, and while it is down no outgoing connection on the machine can take them
 * as its source port (which one from freePort() could: EADDRINUSE at the restart).
 */
async function stablePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise<boolean>((r) => {
      const srv = createServer().once('error', () => r(false)).listen(port, '127.0.0.1', () => srv.close(() => r(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port below 32000');
}

interface Serve { proc: ChildProcess; url: string; exit: Promise<number | null>; output: () => string }

async function serve(cfg: string): Promise<Serve> {
  const proc = spawn(process.execPath, [join(root, 'proxy/bin/tollgate.js'), 'serve', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { out += d; });
  const exit = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const m = /Tollgate is running at (\S+)/.exec(out);
    if (m) return { proc, url: m[1]!, exit, output: () => out };
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`serve did not start:\n${out}`);
    }
    await sleep(50);
  }
}

t.test('SIGKILL mid-session, restart: leases revoked, sessions ended gateway_crash, recordings sealed and marked, audit verifies', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-crash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const prefix = `k${randomBytes(3).toString('hex')}-`;
  const sshd = await startTestSshd(t, { eph: 'crash-box', cert: 'crash-box-cert', pw: 'crash-box-pw' });
  const box = { ...sshd.targets[0]!, credentials: { ...(sshd.targets[0]!.credentials as Record<string, unknown>), prefix } };
  const pgc = await startTestCluster(t, 'crash-db');
  const my = await startTestMariadb(t);
  if (!my) throw new Error('the crash test needs MariaDB');
  const [http, sshPort, pgPort, myPort] = [await stablePort(), await stablePort(), await stablePort(), await stablePort()];
  const cfg = join(dir, 'gateway.yaml');
  // JSON is YAML: the config file `tollgate serve` reads.
  writeFileSync(cfg, JSON.stringify({
    gateway: { dataDir: join(dir, 'data'), id: 'crash', logLevel: 'error', reaperInterval: '1h' },
    listeners: { http: { host: '127.0.0.1', port: http }, ssh: { host: '127.0.0.1', port: sshPort }, postgres: { host: '127.0.0.1', port: pgPort }, mysql: { host: '127.0.0.1', port: myPort } },
    targets: [box, pgc.target, { ...my.target, name: 'crash-my' }],
    policies: DEFAULT_POLICIES,
  }, null, 2));

  // Set-up once, in-process on the same config and data: identities and their API tokens.
  const tokens: Record<string, string> = {};
  let ca: string;
  {
    const gw = await new Gateway({ config: loadConfigFile(cfg, moduleMap()), log: pino({ level: 'silent' }) }).start();
    for (const [name, groups] of Object.entries(TEST_USERS)) {
      const now = gw.clock.now();
      await gw.store.upsertIdentity({ sub: name, email: `${name}@test`, name, groups, firstSeen: now, lastSeen: now });
      tokens[name] = (await gw.tokens.create(name, 'test', gw.tokens.maxTtlMs, now)).token.reveal();
    }
    ca = gw.tls.ca;
    await gw.stop();
  }

  let gw = await serve(cfg);
  t.teardown(() => { if (gw.proc.exitCode === null) gw.proc.kill('SIGKILL'); });
  const api = async (user: string, method: string, path: string, body?: unknown) => {
    const res = await fetch(gw.url + path, { method, headers: { authorization: `Bearer ${tokens[user]}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  const grant = async (target: string, role: string) => {
    const r = await api('alice', 'POST', '/api/v1/requests', { target, role, duration: '2h', reason: 'crash test' });
    let req = r.body;
    for (const approver of ['bob', 'dave']) if (req.state === 'pending') req = (await api(approver, 'POST', `/api/v1/requests/${req.id}/approve`, { comment: 'ok' })).body;
    if (!req.grantId) throw new Error(`not approved: ${JSON.stringify(req)}`);
    return req.grantId as string;
  };
  const grants = { ssh: await grant('crash-box', 'user'), pg: await grant('crash-db', 'read'), my: await grant('crash-my', 'read') };
  const secret = async (g: string) => {
    const r = await api('alice', 'POST', `/api/v1/grants/${g}/secret`, {});
    if (r.status !== 201) throw new Error(`secret: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as { username: string; secret: string };
  };

  // SFTP uploads land here on the target (the same machine): each put's file appearing is what the client saw done.
  const dest = mkdtempSync(join(tmpdir(), 'tg-crash-sftp-'));
  chmodSync(dest, 0o1777);
  t.teardown(() => rmSync(dest, { recursive: true, force: true }));
  const upFile = join(dir, 'up.txt');
  writeFileSync(upFile, 'crash test upload\n');
  const revokeMs: number[] = [];
  const startMs: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    // ---- live sessions: an ssh command printing ticks; a PostgreSQL client running statements.
    const s = await secret(grants.ssh);
    const ssh = spawn('sshpass', ['-p', s.secret, 'ssh', ...SSH_OPTS, '-p', String(sshPort), `${s.username}@127.0.0.1`,
      `n=0; while [ $n -lt 100000 ]; do n=$((n+1)); echo tick-${round}-$n; sleep 0.05; done`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const ticks: { n: number; at: number }[] = [];
    let sshOut = '';
    ssh.stdout!.on('data', (d) => {
      sshOut += d;
      for (const m of String(d).matchAll(/tick-\d+-(\d+)/g)) ticks.push({ n: Number(m[1]), at: Date.now() });
    });
    ssh.stderr!.resume();
    const sshClosed = new Promise<void>((r) => ssh.on('close', () => r()));

    const fs = await secret(grants.ssh);
    const sftp = spawn('sshpass', ['-p', fs.secret, 'sftp', ...SSH_OPTS, '-P', String(sshPort), `${fs.username}@127.0.0.1`], { stdio: ['pipe', 'ignore', 'ignore'] });
    sftp.stdin!.on('error', () => undefined);
    const sftpClosed = new Promise<void>((r) => sftp.on('close', () => r()));
    const puts: { path: string; at: number }[] = [];
    let sftpOn = true;
    const sftpLoop = (async () => {
      for (let n = 1; sftpOn && n < 100_000; n++) {
        const path = `${dest}/r${round}-${n}.txt`;
        sftp.stdin!.write(`put ${upFile} ${path}\n`);
        const until = Date.now() + 5000;
        while (sftpOn && !existsSync(path) && Date.now() < until) await sleep(20);
        if (!existsSync(path)) return;
        puts.push({ path, at: Date.now() });
      }
    })();

    const ps = await secret(grants.pg);
    const client = new pg.Client({ host: '127.0.0.1', port: pgPort, user: ps.username, password: ps.secret, database: 'app', ssl: { ca } });
    client.on('error', () => undefined);
    await client.connect();
    const done: { sql: string; at: number }[] = [];
    const pgLoop = (async () => {
      for (let n = 1; n < 100_000; n++) {
        const sql = `SELECT 'q-${round}-${n}' AS tag`;
        try { await client.query(sql); } catch { return; }
        done.push({ sql, at: Date.now() });
        await sleep(50);
      }
    })();
    const ms = await secret(grants.my);
    const myc = await mysql.createConnection({ host: '127.0.0.1', port: myPort, user: ms.username, password: ms.secret, database: 'shop', ssl: { ca } });
    myc.on('error', () => undefined);
    const myDone: { sql: string; at: number }[] = [];
    const myLoop = (async () => {
      for (let n = 1; n < 100_000; n++) {
        const sql = `SELECT 'm-${round}-${n}' AS tag`;
        try { await myc.query(sql); } catch { return; }
        myDone.push({ sql, at: Date.now() });
        await sleep(50);
      }
    })();

    // Both sessions live, their account and role exist on the targets.
    const deadline = Date.now() + 20_000;
    while (!(ticks.length >= 3 && done.length >= 3 && myDone.length >= 3 && puts.length >= 3 && usersWithPrefix(prefix).length === 2 && (await pgc.sessionRoles()).length === 1 && (await my.sessionUsers()).length === 1)) {
      if (Date.now() > deadline) throw new Error(`round ${round}: sessions did not start (ssh: ${sshOut.slice(-300)}; pg: ${done.length}; users ${usersWithPrefix(prefix)}; roles ${await pgc.sessionRoles()}; mysql: ${myDone.length}, users ${await my.sessionUsers()})\n${gw.output()}`);
      await sleep(50);
    }
    const live = (await api('carol', 'GET', '/api/v1/sessions?state=active')).body as { id: string; protocol: string }[];
    t.equal(live.length, 4, `round ${round}: four live sessions (shell, sftp, PostgreSQL, MySQL)`);

    // ---- kill -9, at a different moment each round (2.5 – 4 s into the sessions: some output is due in the recordings).
    await sleep(2500 + ((round * 397) % 1500));
    const killedAt = Date.now();
    gw.proc.kill('SIGKILL');
    await gw.exit;
    await Promise.race([Promise.all([sshClosed, sftpClosed]), sleep(10_000)]);
    sftpOn = false;
    await sftpLoop;
    await pgLoop;
    await myLoop;
    await client.end().catch(() => undefined);
    myc.destroy();
    t.equal(usersWithPrefix(prefix).length, 2, `round ${round}: the crash left the minted accounts (shell, sftp) behind`);
    t.equal((await pgc.sessionRoles()).length, 1, `round ${round}: the crash left the minted role behind`);
    t.equal((await my.sessionUsers()).length, 1, `round ${round}: the crash left the minted MySQL user behind`);

    // ---- restart: the reaper runs before the listeners open; the leases are gone within 10 s of that.
    const restartedAt = Date.now();
    gw = await serve(cfg);
    const readyAt = Date.now();
    startMs.push(readyAt - restartedAt);
    let gone = false;
    while (!gone && Date.now() - readyAt < 10_000) {
      gone = usersWithPrefix(prefix).length === 0 && (await pgc.sessionRoles()).length === 0 && (await my.sessionUsers()).length === 0;
      if (!gone) await sleep(100);
    }
    revokeMs.push(Date.now() - readyAt);
    t.ok(gone, `round ${round}: the account, the role and the MySQL user are gone within 10 s of the restart (${Date.now() - readyAt} ms after it listened, ${readyAt - restartedAt} ms to start)`);

    for (const l of live) {
      const r = (await api('carol', 'GET', `/api/v1/sessions/${l.id}`)).body;
      t.equal(r.state, 'ended', `round ${round}: ${l.protocol} session ended`);
      t.match(r.endReason, /^gateway_crash: /, `round ${round}: ${l.protocol} ended gateway_crash`);
      t.ok(r.recordings.length >= 1, `round ${round}: ${l.protocol} has recordings`);
      for (const rec of r.recordings) {
        t.match(rec, { state: 'sealed', cut: 'gateway_crash' }, `round ${round}: ${l.protocol} ${rec.kind} sealed, marked cut by a crash`);
        t.match((await api('carol', 'GET', `/api/v1/recordings/${rec.id}/verify`)).body, { ok: true }, `round ${round}: ${rec.kind} verifies against its seal`);
      }
      const fileOf = async (kind: string) => {
        const rec = r.recordings.find((x: { kind: string }) => x.kind === kind);
        const res = await fetch(`${gw.url}/api/v1/recordings/${rec.id}`, { headers: { authorization: `Bearer ${tokens['carol']}` } });
        return res.text();
      };
      const kinds = r.recordings.map((x: { kind: string }) => x.kind);
      if (l.protocol === 'ssh' && !kinds.includes('cast')) {
        const events = await fileOf('events');
        const due = puts.filter((x) => x.at < killedAt - FLUSH_SLACK_MS);
        const missing = due.filter((x) => !events.includes(JSON.stringify(x.path)));
        t.ok(due.length > 0, `round ${round}: uploads were due in the sftp events`);
        t.same(missing.map((x) => x.path), [], `round ${round}: the sftp events hold every upload done up to the last flush (${due.length} of ${puts.length})`);
      } else if (l.protocol === 'ssh') {
        const cast = replayCast(await fileOf('cast'));
        const text = cast.events.filter((e) => e.type === 'o').map((e) => e.data).join('');
        const due = ticks.filter((x) => x.at < killedAt - FLUSH_SLACK_MS);
        const missing = due.filter((x) => !text.includes(`tick-${round}-${x.n}\n`) && !text.includes(`tick-${round}-${x.n}\r\n`));
        t.ok(due.length > 0, `round ${round}: ticks were due in the cast`);
        t.same(missing.map((x) => x.n), [], `round ${round}: the cast holds every tick the client saw up to the last flush (${due.length} of ${ticks.length})`);
      } else {
        const nd = await fileOf('queries');
        const ran = l.protocol === 'mysql' ? myDone : done;
        const due = ran.filter((x) => x.at < killedAt - FLUSH_SLACK_MS);
        const missing = due.filter((x) => !nd.includes(x.sql));
        t.ok(due.length > 0, `round ${round}: statements were due in the recording`);
        t.same(missing.map((x) => x.sql), [], `round ${round}: the query recording holds every statement done up to the last flush (${due.length} of ${ran.length}, ${l.protocol})`);
      }
    }
    for (const l of live) {
      const ended = (await api('carol', 'GET', `/api/v1/audit?action=session.ended&subject=${l.id}`)).body as { data: { reason: string } }[];
      t.same(ended.map((e) => e.data.reason), ['gateway_crash'], `round ${round}: ${l.protocol} audited once, as ended gateway_crash`);
    }
    t.match((await api('carol', 'GET', '/api/v1/audit/verify')).body, { ok: true }, `round ${round}: the audit chain verifies`);
  }
  t.ok(revokeMs.every((ms) => ms < 10_000), `every restart revoked the leases within 10 s of listening (ms: ${revokeMs.join(', ')}; process start to listening, ms: ${startMs.join(', ')})`);
  gw.proc.kill('SIGTERM');
  await gw.exit;
});
