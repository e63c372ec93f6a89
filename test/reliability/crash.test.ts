/**
 * Crash recovery, for real: `tollgate serve` runs as a child process from a config file; live ssh
 * shell, sftp, PostgreSQL, MySQL, VNC and HTTP sessions run through it (minted accounts, a role and
 * a user on the real targets, a VNC server password installed on x11vnc, an app token minted by a
 * hook command); RDP has its own file (crash-rdp.test.ts);
 * the process is killed with SIGKILL mid-session, ROUNDS times in a row with different timing, and
 * restarted at once on the same data (as a supervisor would). After each restart: every lease the
 * crash left is revoked on the target (the account and the role are gone) within 10 s of the
 * SIGKILL, restart included (its reaper runs before the listeners open), the sessions are ended `gateway_crash` in the store and the audit log, their
 * recordings are sealed, marked `cut: gateway_crash`, verify against their seal and hold what the
 * clients saw up to the last flush before the kill, and the audit chain verifies. The target
 * servers are reused across rounds. TOLLGATE_CRASH_ROUNDS sets the number of rounds: 2 by default
 * (what `npm test` runs; a round is 20-30 s on a loaded 2-core machine), 20 for the full run.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { parseNdjson, replayCast } from '../../recorder/index.js';
import { ScreenReplay } from '../../recorder/screen/index.js';
import { startDesktop, type VncDesktop } from '../../protocols/vnc/demo.js';
import { readVncPasswdFile } from '../../protocols/vnc/des.js';
import { encodeSetEncodings, encodeUpdateRequest } from '../../protocols/vnc/client-messages.js';
import { rfbLogin } from '../vnc/client.js';
import { raw, signInApp, startUpstream } from '../http/support.js';
import { DEFAULT_POLICIES } from '../support/gateway.js';
import { CRASH_ROUNDS, REVOKE_BOUND_MS, checkCrashed, crashRig, stablePort } from '../support/crash.js';
import { havePostgres, startTestCluster, sleep } from '../support/pg.js';
import { startTestMariadb } from '../support/mariadb.js';
import { haveSshd, SSH_OPTS, startTestSshd, usersWithPrefix } from '../support/sshd.js';

const ROUNDS = CRASH_ROUNDS;
/** What a crash may lose of a recording: the data not yet flushed (FLUSH_MS 1 s), plus scheduling slack. */
const FLUSH_SLACK_MS = 2000;

if (!haveSshd || !havePostgres) throw new Error('the crash test needs sshd (as root) and PostgreSQL');

t.test('SIGKILL mid-session, restart: leases revoked, sessions ended gateway_crash, recordings sealed and marked, audit verifies', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-crash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const prefix = `k${randomBytes(3).toString('hex')}-`;
  const sshd = await startTestSshd(t, { eph: 'crash-box', cert: 'crash-box-cert', pw: 'crash-box-pw' });
  const box = { ...sshd.targets[0]!, credentials: { ...(sshd.targets[0]!.credentials as Record<string, unknown>), prefix } };
  const pgc = await startTestCluster(t, 'crash-db');
  const my = await startTestMariadb(t);
  if (!my) throw new Error('the crash test needs MariaDB');
  const desktop = (await startDesktop(join(dir, 'desk'), { size: '640x480x24' })) as VncDesktop | null;
  if (!desktop) throw new Error('the crash test needs Xvfb and x11vnc');
  t.teardown(() => desktop.stop());
  const up = await startUpstream();
  t.teardown(() => up.close());
  // The app's token is minted per session by a hook under a lease; its revoke is a line in the state file.
  const hook = join(dir, 'hook.cjs');
  const hookState = join(dir, 'hook-state.ndjson');
  writeFileSync(hook, `const fs = require('node:fs'); const [, , action, file] = process.argv;
fs.appendFileSync(file, JSON.stringify({ action, lease: process.env.TOLLGATE_LEASE }) + '\\n');
if (action === 'mint') process.stdout.write(JSON.stringify({ token: 'tok-' + process.env.TOLLGATE_LEASE, id: process.env.TOLLGATE_LEASE }));`);
  /** Minted app tokens whose revoke has not run. */
  const liveTokens = () => {
    const lines = existsSync(hookState) ? parseNdjson(readFileSync(hookState, 'utf8')) : [];
    const revoked = new Set(lines.filter((l) => l['action'] === 'revoke').map((l) => l['lease']));
    return lines.filter((l) => l['action'] === 'mint' && !revoked.has(l['lease'])).map((l) => String(l['lease']));
  };
  const vncPassword = () => readVncPasswdFile(readFileSync(desktop.passwordFile));
  const [http, sshPort, pgPort, myPort, vncPort] = [await stablePort(), await stablePort(), await stablePort(), await stablePort(), await stablePort()];
  const cfg = join(dir, 'gateway.yaml');
  // JSON is YAML: the config file `tollgate serve` reads.
  writeFileSync(cfg, JSON.stringify({
    gateway: { dataDir: join(dir, 'data'), id: 'crash', logLevel: 'error', reaperInterval: '1h' },
    listeners: { http: { host: '127.0.0.1', port: http }, ssh: { host: '127.0.0.1', port: sshPort }, postgres: { host: '127.0.0.1', port: pgPort }, mysql: { host: '127.0.0.1', port: myPort }, vnc: { host: '127.0.0.1', port: vncPort } },
    targets: [box, pgc.target, { ...my.target, name: 'crash-my' },
      { name: 'crash-desk', protocol: 'vnc', address: `127.0.0.1:${desktop.port}`, roles: [{ name: 'operator' }], credentials: { passwordFile: desktop.passwordFile } },
      { name: 'crash-app', protocol: 'http', address: up.url, roles: [{ name: 'user' }], credentials: { mode: 'bearer', mintCommand: [process.execPath, hook, 'mint', hookState], revokeCommand: [process.execPath, hook, 'revoke', hookState] } }],
    policies: DEFAULT_POLICIES,
  }, null, 2));

  const rig = await crashRig(t, cfg);
  const { ca, webCookie, api } = rig;
  const grant = (target: string, role: string) => rig.grant(target, role);
  const secret = (g: string) => rig.secret(g);
  const grants = { ssh: await grant('crash-box', 'user'), pg: await grant('crash-db', 'read'), my: await grant('crash-my', 'read'), vnc: await grant('crash-desk', 'operator') };
  await grant('crash-app', 'user');
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

    // A VNC viewer asking for screen updates (a small RFB client: VeNCrypt X509Plain with the secret).
    const vs = await secret(grants.vnc);
    const rfb = await rfbLogin({ host: '127.0.0.1', port: vncPort, ca, username: 'crash-desk', password: vs.secret });
    if (!rfb.ok || !rfb.init) throw new Error(`round ${round}: VNC login refused: ${rfb.reason}`);
    const minted = vncPassword();
    rfb.sock.on('error', () => undefined);
    let vncBytes = 0;
    rfb.sock.on('data', (d: Buffer) => { vncBytes += d.length; });
    rfb.sock.write(encodeSetEncodings([0]));
    const { width, height } = rfb.init;
    const vncTimer = setInterval(() => { if (!rfb.sock.destroyed) rfb.sock.write(encodeUpdateRequest(vncBytes > 0, 0, 0, width, height)); }, 100);
    // A browser on the app (signed in through the gateway), requesting a page every 50 ms.
    const gwPort = Number(new URL(rig.gw.url).port);
    const app = await signInApp({ url: rig.gw.url, gw: { webSessions: { create: async () => ({ cookie: { reveal: () => webCookie } }) } } },
      'alice', 'crash-app', `http://crash-app.localhost:${gwPort}/headers`);
    const hits: { path: string; at: number }[] = [];
    let httpOn = true;
    let httpLast = '';
    const httpLoop = (async () => {
      for (let n = 1; httpOn && n < 100_000; n++) {
        const path = `/headers/h-${round}-${n}`;
        try {
          const r = await raw(gwPort, { path, host: `crash-app.localhost:${gwPort}`, headers: { cookie: app.cookie } });
          httpLast = `${r.status} ${r.body.toString('utf8').slice(0, 200)}`;
          // Answered by the app (its 404 for this path): what the browser saw done.
          if (up.seen.some((x) => x.url === path)) hits.push({ path, at: Date.now() });
        } catch (e) { httpLast = (e as Error).message; }
        await sleep(50);
      }
    })();

    // Every session live, its account, role, user, password and token exist on the targets.
    // Generous: on a loaded machine each sftp put or page can take seconds.
    const deadline = Date.now() + 90_000;
    while (!(ticks.length >= 3 && done.length >= 3 && myDone.length >= 3 && puts.length >= 3 && hits.length >= 3 && vncBytes > 10_000 && usersWithPrefix(prefix).length === 2 && (await pgc.sessionRoles()).length === 1 && (await my.sessionUsers()).length === 1 && liveTokens().length === 1)) {
      if (Date.now() > deadline) throw new Error(`round ${round}: sessions did not start (ssh: ${sshOut.slice(-300)}; sftp puts: ${puts.length}; pg: ${done.length}; users ${usersWithPrefix(prefix)}; roles ${await pgc.sessionRoles()}; mysql: ${myDone.length}, users ${await my.sessionUsers()}; http: ${hits.length} (last: ${httpLast}), tokens ${liveTokens()}; vnc: ${vncBytes} bytes)\n${rig.gw.output()}`);
      await sleep(50);
    }
    const live = (await api('carol', 'GET', '/api/v1/sessions?state=active')).body as { id: string; protocol: string }[];
    t.same(live.map((l) => l.protocol).sort(), ['http', 'mysql', 'postgres', 'ssh', 'ssh', 'vnc'], `round ${round}: six live sessions (shell, sftp, PostgreSQL, MySQL, VNC, HTTP)`);

    // ---- kill -9, at a different moment each round (2.5 – 4 s into the sessions: some output is due in the recordings).
    await sleep(2500 + ((round * 397) % 1500));
    const killedAt = Date.now();
    await rig.kill();
    httpOn = false;
    t.equal(usersWithPrefix(prefix).length, 2, `round ${round}: the crash left the minted accounts (shell, sftp) behind`);
    t.equal((await pgc.sessionRoles()).length, 1, `round ${round}: the crash left the minted role behind`);
    t.equal((await my.sessionUsers()).length, 1, `round ${round}: the crash left the minted MySQL user behind`);
    t.equal(vncPassword(), minted, `round ${round}: the crash left the session's VNC password installed`);
    t.equal(liveTokens().length, 1, `round ${round}: the crash left the app token unrevoked`);

    // ---- restart at once: the reaper runs before the listeners open; the leases are gone within 10 s of the SIGKILL.
    const r = await rig.restartUntilGone(killedAt, async () => usersWithPrefix(prefix).length === 0 && (await pgc.sessionRoles()).length === 0
      && (await my.sessionUsers()).length === 0 && vncPassword() !== minted && liveTokens().length === 0);
    revokeMs.push(r.revokedMs);
    startMs.push(r.startMs);
    t.ok(r.gone && r.revokedMs <= REVOKE_BOUND_MS, `round ${round}: the account, the role and the MySQL user are gone, the VNC password replaced, the app token revoked within 10 s of the SIGKILL (${r.revokedMs} ms; ${r.startMs} ms of it to restart)`);
    await Promise.race([Promise.all([sshClosed, sftpClosed]), sleep(10_000)]);
    sftpOn = false;
    await sftpLoop;
    await pgLoop;
    await myLoop;
    await httpLoop;
    clearInterval(vncTimer);
    rfb.sock.destroy();
    await client.end().catch(() => undefined);
    myc.destroy();

    const recorded = await checkCrashed(t, rig, round, live);
    for (const l of live) {
      const { kinds, file: fileOf } = recorded.get(l.id)!;
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
      } else if (l.protocol === 'vnc') {
        const screen = new ScreenReplay(parseNdjson(await fileOf('screen')));
        const frame = screen.frameAt();
        t.ok(frame && frame.width === width && frame.height === height, `round ${round}: the screen recording replays up to the crash (${frame?.width}x${frame?.height})`);
      } else if (l.protocol === 'http') {
        const events = await fileOf('events');
        const due = hits.filter((x) => x.at < killedAt - FLUSH_SLACK_MS);
        const missing = due.filter((x) => !events.includes(JSON.stringify(x.path)));
        t.ok(due.length > 0, `round ${round}: requests were due in the app's events`);
        t.same(missing.map((x) => x.path), [], `round ${round}: the app's events hold every request answered up to the last flush (${due.length} of ${hits.length})`);
      } else {
        const nd = await fileOf('queries');
        const ran = l.protocol === 'mysql' ? myDone : done;
        const due = ran.filter((x) => x.at < killedAt - FLUSH_SLACK_MS);
        const missing = due.filter((x) => !nd.includes(x.sql));
        t.ok(due.length > 0, `round ${round}: statements were due in the recording`);
        t.same(missing.map((x) => x.sql), [], `round ${round}: the query recording holds every statement done up to the last flush (${due.length} of ${ran.length}, ${l.protocol})`);
      }
    }
  }
  t.ok(revokeMs.every((ms) => ms <= REVOKE_BOUND_MS), `every crash's leases were revoked within 10 s of the SIGKILL (ms: ${revokeMs.join(', ')}; of it, restart to listening, ms: ${startMs.join(', ')})`);
  rig.gw.proc.kill('SIGTERM');
  await rig.gw.exit;
});
