/**
 * The soak (issue 19): a real `tollgate serve` (SQLite store) in its own process, a real OpenSSH
 * sshd and a real PostgreSQL cluster; N concurrent recorded SSH sessions (ssh2 client library,
 * certificate mode on the target: one signed certificate per session for one login account, no
 * Linux account minted per session) each producing output until the soak ends, and M PostgreSQL
 * sessions (node-postgres) running queries. Afterwards it checks:
 *   - every session opened, ran for the soak's seconds and ended cleanly;
 *   - every byte each SSH client received is in its recording (SHA-256 of the cast's output
 *     events against what the client received), every recording sealed and its seal matching the file;
 *   - every statement each PostgreSQL client sent is in its query log, in order;
 *   - API p99 (GET /api/v1/sessions?state=active, GET /api/v1/sessions/{id}, GET /api/v1/grants,
 *     sampled from a worker thread so the clients' own work does not delay the sampler) < 200 ms;
 *   - the gateway's RSS (sampled every second) stayed under a bound and came back near its start;
 *   - nothing is left: no live lease, no session role, no process of the login account, no child process.
 * Every loop here is bounded in count and time (a deadline for the whole run, too).
 *
 *   node --import=tsx test/soak/run.ts [--ssh 1000] [--pg 500] [--seconds 60] [--minutes M] [--tap] [--concurrency 16] [--profile]
 *
 * --minutes M: the whole run (set-up, soak, checks) fits M minutes, with 100 SSH + 50 PostgreSQL
 * sessions unless --ssh/--pg say otherwise. --tap prints "ok N - …" / "not ok N - …" lines and "1..N".
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, existsSync, mkdirSync, readdirSync, renameSync } from 'node:fs';
import { tmpdir, loadavg, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pg from 'pg';
import ssh2 from 'ssh2';
import { startSshd, createDemoAccounts, removeDemoAccounts, demoTargets } from '../../protocols/ssh/demo.js';
import { findPgBin } from '../../protocols/postgres/demo.js';
import { startTestCluster } from '../support/pg.js';
import { apiOf, grantVia, openNodeStore, seedUsers, sharedMaterial, startNode, type NodeProcess } from '../support/cluster.js';
import { summarizeProfiles, renderHot } from '../../bench/profile.js';

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2);
const flag = (n: string) => argv.includes(`--${n}`);
const opt = (n: string): number | undefined => {
  const i = argv.indexOf(`--${n}`);
  if (i < 0) return undefined;
  const v = Number(argv[i + 1]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${n}: expected a number, got ${argv[i + 1]}`);
  return v;
};
const minutes = opt('minutes');
const nSsh = opt('ssh') ?? (minutes ? 100 : 1000);
const nPg = opt('pg') ?? (minutes ? 50 : 500);
/** Set-up, ramp, drain and checks are given this much of a --minutes budget; the rest is the soak itself. */
const OVERHEAD_S = 150;
const seconds = opt('seconds') ?? (minutes ? Math.max(30, minutes * 60 - OVERHEAD_S) : 60);
const tap = flag('tap');
const concurrency = opt('concurrency') ?? 16;
const profile = flag('profile');
/** The whole run's deadline: every wait below is bounded by it too. */
const budgetMs = minutes ? minutes * 60_000 : (seconds + 600 + (nSsh + nPg) * 1.5) * 1000;
const t0 = Date.now();
const deadline = t0 + budgetMs;
const API_P99_MS = 200;

const say = (s: string) => process.stderr.write(`[soak ${((Date.now() - t0) / 1000).toFixed(0)}s] ${s}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const pct = (v: number[], p: number) => { if (!v.length) return NaN; const s = [...v].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]!; };
const mib = (kib: number) => (kib / 1024).toFixed(0);
const left = () => Math.max(0, deadline - Date.now());

// ---------------------------------------------------------------- checks (TAP)
const checks: { ok: boolean; name: string; detail?: string }[] = [];
function check(ok: boolean, name: string, detail?: string): boolean {
  checks.push({ ok, name, detail });
  say(`${ok ? 'ok' : 'NOT OK'} - ${name}${detail ? ` (${detail})` : ''}`);
  return ok;
}
function report(): void {
  if (tap) {
    checks.forEach((c, i) => {
      process.stdout.write(`${c.ok ? 'ok' : 'not ok'} ${i + 1} - ${c.name}\n`);
      if (c.detail) process.stdout.write(`  # ${c.detail.replace(/\n/g, '\n  # ')}\n`);
    });
    process.stdout.write(`1..${checks.length}\n`);
  } else {
    for (const c of checks) process.stdout.write(`${c.ok ? 'ok    ' : 'NOT OK'}  ${c.name}${c.detail ? `\n        ${c.detail}` : ''}\n`);
    process.stdout.write(`${checks.filter((c) => c.ok).length}/${checks.length} checks passed\n`);
  }
}

// ---------------------------------------------------------------- teardown
const teardowns: (() => unknown)[] = [];
const t = { teardown: (fn: () => unknown) => { teardowns.push(fn); } };
async function runTeardowns(): Promise<void> {
  for (const fn of teardowns.splice(0).reverse()) {
    try { await Promise.race([fn(), sleep(60_000)]); } catch (e) { say(`teardown: ${(e as Error).message}`); }
  }
}

/** Run fn until it returns a truthy value, every intervalMs, for at most timeoutMs (and never past the deadline). */
async function until<T>(fn: () => Promise<T | null | false | undefined>, timeoutMs: number, intervalMs = 500): Promise<T | null> {
  const end = Math.min(Date.now() + timeoutMs, deadline);
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) return null;
    await sleep(intervalMs);
  }
}

/** Limit a list of jobs to k at once. */
async function pool<T>(items: T[], k: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => { while (next < items.length && Date.now() < deadline) { const i = next++; await fn(items[i]!, i); } };
  await Promise.all(Array.from({ length: Math.min(k, items.length) }, lane));
}

/** utime + stime of a process, in clock ticks (100 per second on Linux). */
function cpuTicks(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch { return 0; }
}

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

/** The gateway's V8 heap in use and its memory outside the heap (Buffers), in MiB, from /metrics. */
async function gatewayHeap(url: string): Promise<string> {
  try {
    const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
    const v = (name: string) => (Number(new RegExp(`^tollgate_nodejs_${name} (\\S+)$`, 'm').exec(text)?.[1]) / 1048576).toFixed(0);
    return `heap used ${v('heap_size_used_bytes')} MiB of ${v('heap_size_total_bytes')}, external ${v('external_memory_bytes')} MiB`;
  } catch { return 'heap unknown'; }
}

/** The gateway's own event-loop delay (prom-client's, reset at each scrape) since the last scrape: p99 and max in ms. */
async function gatewayLoopDelay(url: string): Promise<{ p99: number; max: number } | null> {
  try {
    const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
    const v = (name: string) => Number(new RegExp(`^tollgate_nodejs_eventloop_lag_${name}_seconds (\\S+)$`, 'm').exec(text)?.[1]) * 1000;
    return { p99: v('p99'), max: v('max') };
  } catch { return null; }
}

// ---------------------------------------------------------------- the API sampler (a worker thread: its own event loop)
const SAMPLER = `
const { parentPort, workerData } = require('node:worker_threads');
const { url, token, intervalMs } = workerData;
let stop = false;
parentPort.on('message', (m) => { if (m === 'stop') stop = true; });
const samples = [];
let ids = [];
(async () => {
  const headers = { authorization: 'Bearer ' + token };
  let n = 0;
  while (!stop && n < 100000) {
    // /readyz (no store, no auth) is the reference: what any request waits for the gateway's event loop and the machine's scheduler.
    const paths = ['/api/v1/sessions?state=active', ids.length ? '/api/v1/sessions/' + ids[n % ids.length] : '/api/v1/sessions?limit=10', '/api/v1/grants', '/readyz'];
    const path = paths[n++ % paths.length];
    const t0 = performance.now();
    let status = 0;
    try {
      const res = await fetch(url + path, { headers, signal: AbortSignal.timeout(30000) });
      const body = await res.text();
      status = res.status;
      if (path === '/api/v1/sessions?state=active' && status === 200) { try { ids = JSON.parse(body).slice(0, 50).map((s) => s.id); } catch {} }
    } catch { status = -1; }
    samples.push({ path: path.replace(/[0-9a-f-]{36}/, '{id}'), ms: performance.now() - t0, status, at: Date.now() });
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  parentPort.postMessage(samples);
})();
`;

// ---------------------------------------------------------------- SSH sessions
interface SshRun { i: number; tag: string; opened: boolean; openMs: number; bytes: Buffer[]; received: number; code: number | null; error: string | null; closed: boolean; conn: ssh2.Client; stream: ssh2.ClientChannel | null; done: Promise<void> }

/** The command each session runs: a line of ~530 bytes every 0.5 s (bash builtins only: no fork per line) until "stop" or EOF on stdin, at most maxLines. */
function sshCommand(tag: string, maxLines: number): string {
  return `printf -v pad '%0480d' 0; i=0; while [ $i -lt ${maxLines} ]; do printf '%s %06d %s%s%s %s\\n' ${tag} $i $RANDOM $RANDOM $RANDOM "$pad"; i=$((i+1)); read -t 0.5 l; rc=$?; [ $rc -le 128 ] && break; done; echo "${tag} end $i"`;
}

function openSsh(i: number, host: string, port: number, username: string, password: string, maxLines: number, openBy: number): Promise<SshRun> {
  const tag = `soak-ssh-${i}`;
  const conn = new ssh2.Client();
  let resolveDone!: () => void;
  const run: SshRun = { i, tag, opened: false, openMs: 0, bytes: [], received: 0, code: null, error: null, closed: false, conn, stream: null, done: new Promise<void>((r) => { resolveDone = r; }) };
  const started = performance.now();
  return new Promise<SshRun>((resolve) => {
    let settled = false;
    const settle = () => { if (!settled) { settled = true; resolve(run); } };
    const fail = (e: Error) => { run.error ??= e.message; run.closed = true; resolveDone(); settle(); };
    conn.on('error', fail);
    conn.on('close', () => { run.closed = true; resolveDone(); settle(); });
    conn.on('ready', () => {
      conn.exec(sshCommand(tag, maxLines), (err, stream) => {
        if (err) { fail(err); conn.end(); return; }
        run.stream = stream;
        const add = (d: Buffer) => { run.bytes.push(d); run.received += d.length; if (!run.opened && run.received > 0) { run.opened = true; run.openMs = performance.now() - started; settle(); } };
        stream.on('data', add);
        stream.stderr.on('data', add);
        stream.on('exit', (code: number | null) => { run.code = code; });
        stream.on('close', () => { conn.end(); });
      });
    });
    // Not open by the end of the ramp: given up (and closed, so it does not open later unseen).
    const giveUp = setTimeout(() => { if (!settled) { run.error ??= 'not open by the end of the ramp'; conn.end(); settle(); } }, Math.max(1, openBy - Date.now()));
    run.done.then(() => clearTimeout(giveUp), () => undefined);
    conn.connect({ host, port, username, password, readyTimeout: 120_000, keepaliveInterval: 0 });
  });
}

// ---------------------------------------------------------------- PostgreSQL sessions
interface PgRun { i: number; tag: string; client: pg.Client; opened: boolean; sent: string[]; wrongResults: number; error: string | null; loop: Promise<void> | null }

async function openPg(i: number, host: string, port: number, user: string, password: string, ca: Buffer): Promise<PgRun> {
  const tag = `soak-pg-${i}`;
  const client = new pg.Client({ host, port, user, password, database: 'app', ssl: { ca }, connectionTimeoutMillis: 120_000 });
  const run: PgRun = { i, tag, client, opened: false, sent: [], wrongResults: 0, error: null, loop: null };
  client.on('error', (e) => { run.error ??= e.message; });
  try {
    await client.connect();
    run.opened = true;
  } catch (e) { run.error = (e as Error).message; }
  return run;
}

function pgLoop(run: PgRun, stopAt: () => boolean, maxQueries: number): Promise<void> {
  return (async () => {
    for (let q = 0; q < maxQueries && !stopAt() && !run.error; q++) {
      const sql = `SELECT '${run.tag}:${q}' AS tag, count(*)::int AS n, md5('${run.tag}:${q}') AS h FROM accounts`;
      run.sent.push(sql);
      try {
        const r = await run.client.query(sql);
        const row = r.rows[0];
        if (!row || row.tag !== `${run.tag}:${q}` || row.h !== createHash('md5').update(`${run.tag}:${q}`).digest('hex')) run.wrongResults++;
      } catch (e) { run.error = (e as Error).message; break; }
      await sleep(1000);
    }
  })();
}

// ---------------------------------------------------------------- the run
async function main(): Promise<void> {
  if (process.getuid?.() !== 0 || !existsSync('/usr/sbin/sshd') || !findPgBin()) {
    check(false, 'the soak can run here', 'needs root, /usr/sbin/sshd and PostgreSQL (see proxy/bin/ensure-deps.js)');
    return;
  }
  say(`${nSsh} SSH + ${nPg} PostgreSQL sessions, ${seconds} s of output each; budget ${(budgetMs / 1000).toFixed(0)} s; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const dir = mkdtempSync(join(tmpdir(), 'tg-soak-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  // sshd, its certificate login account, PostgreSQL with room for the sessions.
  const sshd = await startSshd(join(dir, 'sshd'), { extraConfig: 'MaxSessions 10' });
  t.teardown(() => sshd.stop());
  const accounts = createDemoAccounts();
  loginAccounts.push(accounts.certLogin, accounts.checkoutAccount);
  t.teardown(() => removeDemoAccounts(accounts));
  // Ctrl-C or SIGTERM: what must not outlive the run goes at once (synchronously), then the rest.
  const onSignal = (sig: NodeJS.Signals) => {
    removeDemoAccounts(accounts);
    void runTeardowns().finally(() => process.kill(process.pid, sig));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const cluster = await startTestCluster(t, 'soak-db');
  if (nPg > 150) await raiseMaxConnections(cluster.cluster.dataDir, cluster.cluster.port, nPg + 100);
  const sshTargets = demoTargets(sshd, accounts, { eph: 'soak-eph', cert: 'soak-ssh', pw: 'soak-pw' });
  const sshTarget = sshTargets.find((x) => x.name === 'soak-ssh')!;

  // The gateway: `tollgate serve` with a SQLite store, in its own process.
  const shared = sharedMaterial(join(dir, 'shared'));
  const profileDir = join(dir, 'profiles');
  mkdirSync(profileDir, { recursive: true });
  const node: NodeProcess = await startNode(t, {
    id: 'soak', shared, dataDir: join(dir, 'node'), listeners: ['ssh', 'postgres'], store: { kind: 'sqlite' },
    targets: [sshTarget, cluster.target], gateway: { logLevel: 'warn' },
    env: profile ? { TOLLGATE_PROFILE_DIR: profileDir } : {},
  });
  const pid = node.proc.pid!;
  const store = await openNodeStore(node.configFile);
  t.teardown(() => store.close());
  const tokens = await seedUsers(store);
  const api = apiOf(node.url, tokens);
  const sshGrant = await grantVia(api, 'alice', 'soak-ssh', 'ops', '4h');
  const pgGrant = await grantVia(api, 'alice', 'soak-db', cluster.target.roles[0]!.name, '4h');
  const sshSecret = (await api('alice', 'POST', `/api/v1/grants/${sshGrant}/secret`, { reusable: true, ttl: '4h' })).body;
  const pgSecret = (await api('alice', 'POST', `/api/v1/grants/${pgGrant}/secret`, { reusable: true, ttl: '4h' })).body;
  if (!sshSecret?.secret || !pgSecret?.secret) { check(false, 'connection secrets issued', JSON.stringify({ sshSecret, pgSecret })); return; }
  check(true, `gateway up (pid ${pid}), sshd, PostgreSQL; grants and reusable connection secrets issued`);

  // Baseline RSS: after start-up and a few API calls, settled.
  await sleep(3000);
  const rssStart = rssKiB(pid);
  const heapStart = await gatewayHeap(node.url);
  const rss: { at: number; kib: number }[] = [];
  const rssTimer = setInterval(() => rss.push({ at: Date.now(), kib: rssKiB(pid) }), 1000);
  t.teardown(() => clearInterval(rssTimer));
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();

  // The API sampler runs through the whole soak.
  const sampler = new Worker(SAMPLER, { eval: true, workerData: { url: node.url, token: tokens['carol'], intervalMs: 100 } });
  const samplesP = new Promise<{ path: string; ms: number; status: number; at: number }[]>((resolve) => sampler.once('message', resolve));
  t.teardown(() => sampler.terminate());

  // Open everything (k at a time), then let it run for `seconds`, then stop.
  // Generous: on a starved shared machine one SSH session took over a minute to open.
  const rampBudgetMs = Math.min(left() / 2, 120_000 + (nSsh + nPg) * 1000);
  const rampEnd = Date.now() + rampBudgetMs;
  const maxLines = Math.ceil(((rampBudgetMs / 1000) + seconds + 120) * 2);
  const { host, port: sshPort } = { host: '127.0.0.1', port: node.ports['ssh']! };
  const pgPort = node.ports['postgres']!;
  const ca = readFileSync(shared.caCert);
  if (profile) process.kill(pid, 'SIGUSR2');
  await gatewayLoopDelay(node.url); // resets the gateway's event-loop histogram: the next scrape covers ramp to end
  const rampStart = Date.now();
  const cpuAtRamp = cpuTicks(pid);
  const sshRuns: SshRun[] = [];
  const pgRuns: PgRun[] = [];
  let stopping = false;
  const sshJobs = Array.from({ length: nSsh }, (_, i) => ({ kind: 'ssh' as const, i }));
  const pgJobs = Array.from({ length: nPg }, (_, i) => ({ kind: 'pg' as const, i }));
  // Interleaved so both kinds ramp together.
  const jobs: ({ kind: 'ssh' | 'pg'; i: number })[] = [];
  for (let i = 0; i < Math.max(nSsh, nPg); i++) { if (sshJobs[i]) jobs.push(sshJobs[i]!); if (pgJobs[i]) jobs.push(pgJobs[i]!); }
  await pool(jobs, concurrency, async (j) => {
    if (Date.now() > rampEnd) return;
    if (j.kind === 'ssh') {
      sshRuns.push(await openSsh(j.i, host, sshPort, sshSecret.username, sshSecret.secret, maxLines, rampEnd));
    } else {
      const r = await openPg(j.i, host, pgPort, pgSecret.username, pgSecret.secret, ca);
      pgRuns.push(r);
      if (r.opened) r.loop = pgLoop(r, () => stopping, Math.ceil((rampBudgetMs / 1000) + seconds + 120));
    }
    const done = sshRuns.length + pgRuns.length;
    if (done % 100 === 0) say(`opened ${sshRuns.filter((r) => r.opened).length} ssh, ${pgRuns.filter((r) => r.opened).length} pg (load ${loadavg()[0]!.toFixed(1)}, rss ${mib(rssKiB(pid))} MiB)`);
  });
  const rampMs = Date.now() - rampStart;
  const sshOpen = sshRuns.filter((r) => r.opened && !r.closed).length;
  const pgOpen = pgRuns.filter((r) => r.opened && !r.error).length;
  check(sshOpen === nSsh, `${nSsh} SSH sessions open at once`, `${sshOpen} open after a ${(rampMs / 1000).toFixed(0)} s ramp; open time p50 ${pct(sshRuns.map((r) => r.openMs), 0.5).toFixed(0)} ms, p99 ${pct(sshRuns.map((r) => r.openMs), 0.99).toFixed(0)} ms${sshRuns.find((r) => r.error) ? `; first error: ${sshRuns.find((r) => r.error)!.error}` : ''}`);
  check(pgOpen === nPg, `${nPg} PostgreSQL sessions open at once`, `${pgOpen} open${pgRuns.find((r) => r.error) ? `; first error: ${pgRuns.find((r) => r.error)!.error}` : ''}`);
  const live = await api('carol', 'GET', '/api/v1/sessions?state=active&limit=1000');
  say(`the gateway lists ${Array.isArray(live.body) ? live.body.length : live.status} active sessions (limit 1000)`);

  // The soak: everything open produces output for `seconds`.
  const soakStart = Date.now();
  const soakEnd = Math.min(soakStart + seconds * 1000, deadline - 60_000);
  while (Date.now() < soakEnd) {
    await sleep(Math.min(10_000, Math.max(1, soakEnd - Date.now())));
    say(`soak: ${sshRuns.filter((r) => !r.closed).length} ssh, ${pgRuns.filter((r) => !r.error).length} pg live; ${(sshRuns.reduce((a, r) => a + r.received, 0) / 1048576).toFixed(1)} MiB received; rss ${mib(rssKiB(pid))} MiB; load ${loadavg()[0]!.toFixed(1)}`);
  }
  const soakS = (Date.now() - soakStart) / 1000;

  // Stop: "stop" to every shell loop, end every PostgreSQL client; wait (bounded) for all to end.
  const stopAt = Date.now();
  stopping = true;
  for (const r of sshRuns) if (r.stream && !r.closed) r.stream.end('stop\n');
  await Promise.all(pgRuns.map((r) => r.loop));
  await Promise.all(pgRuns.map((r) => Promise.race([r.client.end().catch(() => undefined), sleep(30_000)])));
  await Promise.race([Promise.all(sshRuns.map((r) => r.done)), sleep(Math.min(120_000, left()))]);
  const sshClosed = sshRuns.filter((r) => r.closed).length;
  const ended = await until(async () => {
    const a = await api('carol', 'GET', '/api/v1/sessions?state=active&limit=1000');
    return Array.isArray(a.body) && a.body.length === 0 ? true : null;
  }, 120_000, 1000);
  const endedAt = Date.now();
  if (profile) process.kill(pid, 'SIGUSR2'); // the profile covers ramp, soak and teardown
  const gwLoop = await gatewayLoopDelay(node.url);
  sampler.postMessage('stop');
  const samples = await Promise.race([samplesP, sleep(40_000).then(() => [])]);
  check(!!ended && sshClosed === sshRuns.length, 'every session ended after the soak (the gateway lists none active)', `${sshClosed}/${sshRuns.length} ssh clients closed; soak ${soakS.toFixed(0)} s after a ${(rampMs / 1000).toFixed(0)} s ramp`);

  // Each SSH client: exit 0, at least `seconds` of lines, the end line; its recording holds exactly its bytes.
  const minLines = Math.floor(seconds * 2 * 0.5); // a line every 0.5 s; half of them even on a machine this loaded
  const shortRuns = sshRuns.filter((r) => {
    const text = Buffer.concat(r.bytes).toString('utf8');
    const lines = text.split('\n').filter((l) => l.startsWith(`${r.tag} `) && !l.includes(' end ')).length;
    return r.code !== 0 || lines < minLines || !text.includes(`${r.tag} end `);
  });
  check(sshRuns.length === nSsh && shortRuns.length === 0, `every SSH session produced output for the whole soak and exited 0`,
    `${sshRuns.length - shortRuns.length}/${nSsh}; at least ${minLines} lines each; ${(sshRuns.reduce((a, r) => a + r.received, 0) / 1048576).toFixed(1)} MiB received in all${shortRuns[0] ? `; e.g. ${shortRuns[0].tag}: exit ${shortRuns[0].code}, ${shortRuns[0].received} bytes, ${shortRuns[0].error ?? ''}` : ''}`);

  const sessions = await store.listSessions({ limit: 100_000 });
  const byTag = new Map<string, { sessionId: string; castSha: string; castBytes: number; sealed: boolean; sealOk: boolean }>();
  const castFor = new Map<string, string>();
  let casts = 0;
  let sealMismatch = 0;
  for (const s of sessions.filter((x) => x.target === 'soak-ssh')) {
    for (const rec of await store.listRecordings({ sessionId: s.id })) {
      if (rec.kind !== 'cast') continue;
      casts++;
      const file = readFileSync(rec.path);
      const sealOk = rec.state === 'sealed' && rec.sha256 === sha(file) && rec.bytes === file.length;
      if (!sealOk) sealMismatch++;
      const out: Buffer[] = [];
      for (const line of file.toString('utf8').split('\n').slice(1)) {
        if (!line) continue;
        const ev = JSON.parse(line) as [number, string, string];
        if (ev[1] === 'o') out.push(Buffer.from(ev[2], 'utf8'));
      }
      const all = Buffer.concat(out);
      const m = /^(soak-ssh-\d+) /.exec(all.subarray(0, 64).toString('utf8'));
      if (m) { byTag.set(m[1]!, { sessionId: s.id, castSha: sha(all), castBytes: all.length, sealed: rec.state === 'sealed', sealOk }); castFor.set(m[1]!, rec.path); }
    }
  }
  const mismatched = sshRuns.filter((r) => { const c = byTag.get(r.tag); return !c || c.castSha !== sha(Buffer.concat(r.bytes)); });
  const eg = mismatched[0];
  check(sshRuns.length > 0 && mismatched.length === 0, 'every byte each SSH client received is in its recording (SHA-256 of the cast output = SHA-256 of what the client got)',
    `${sshRuns.length - mismatched.length}/${sshRuns.length} match; ${casts} casts for ${sessions.filter((x) => x.target === 'soak-ssh').length} sessions${eg ? `; e.g. ${eg.tag}: client ${eg.received} bytes, cast ${byTag.get(eg.tag)?.castBytes ?? 'none'} bytes` : ''}`);
  check(casts > 0 && sealMismatch === 0, 'every recording is sealed and its file matches the seal (SHA-256, size)', `${casts - sealMismatch}/${casts}`);

  // Each PostgreSQL client: every statement it sent is in its session's query log, in order, with right results.
  const qlog = new Map<string, string[]>();
  for (const s of sessions.filter((x) => x.target === 'soak-db')) {
    const rows = await store.listQueries(s.id, { limit: 100_000 });
    const stmts = rows.map((r) => r.statement);
    const m = /'(soak-pg-\d+):/.exec(stmts.find((x) => x.includes('soak-pg-')) ?? '');
    if (m) qlog.set(m[1]!, stmts.filter((x) => x.includes(`'${m[1]}:`)));
  }
  const pgBad = pgRuns.filter((r) => { const got = qlog.get(r.tag); return !got || sha(got.join('\n')) !== sha(r.sent.join('\n')) || r.wrongResults > 0; });
  const pgQueries = pgRuns.reduce((a, r) => a + r.sent.length, 0);
  check(pgRuns.length === nPg && pgBad.length === 0 && pgQueries > 0, 'every statement each PostgreSQL client sent is in its query log, in order, and every result was right',
    `${pgRuns.length - pgBad.length}/${nPg}; ${pgQueries} queries${pgBad[0] ? `; e.g. ${pgBad[0].tag}: sent ${pgBad[0].sent.length}, logged ${qlog.get(pgBad[0].tag)?.length ?? 'none'}, wrong results ${pgBad[0].wrongResults}, ${pgBad[0].error ?? ''}` : ''}`);

  // API latency during the soak (ramp start to every session ended).
  const all = samples.filter((s) => s.at >= rampStart && s.at <= endedAt);
  const during = all.filter((s) => s.path.startsWith('/api/'));
  const ref = all.filter((s) => s.path === '/readyz').map((s) => s.ms);
  const cpuS = (cpuTicks(pid) - cpuAtRamp) / 100;
  const wallS = (endedAt - rampStart) / 1000;
  const failedCalls = during.filter((s) => s.status !== 200).length;
  const p99 = pct(during.map((s) => s.ms), 0.99);
  const byPath = [...new Set(all.map((s) => s.path))].map((p) => { const v = all.filter((s) => s.path === p).map((s) => s.ms); return `${p}: n=${v.length} p50 ${pct(v, 0.5).toFixed(0)} p99 ${pct(v, 0.99).toFixed(0)} max ${Math.max(...v).toFixed(0)} ms`; });
  // Where the slow calls were: the ramp (sessions opening), the soak itself, or the teardown (every session ending at once).
  const phase = (from: number, to: number) => { const v = during.filter((x) => x.at >= from && x.at < to).map((x) => x.ms); return `n=${v.length} p99 ${v.length ? pct(v, 0.99).toFixed(0) : '-'} ms`; };
  const phases = `ramp ${phase(rampStart, soakStart)}; soak ${phase(soakStart, stopAt)}; teardown ${phase(stopAt, endedAt + 1)}`;
  check(during.length >= 100 && failedCalls === 0 && p99 < API_P99_MS, `API p99 < ${API_P99_MS} ms during the soak`,
    `p99 ${p99.toFixed(0)} ms over ${during.length} calls (${failedCalls} not 200); by phase: ${phases}; the gateway's own event-loop delay p99 ${gwLoop?.p99.toFixed(0) ?? '?'} ms, max ${gwLoop?.max.toFixed(0) ?? '?'} ms; ${byPath.join('; ')}; reference GET /readyz (no store, no auth): p50 ${pct(ref, 0.5).toFixed(0)} p99 ${pct(ref, 0.99).toFixed(0)} ms; `
    + `gateway CPU ${cpuS.toFixed(0)} s in ${wallS.toFixed(0)} s (${(100 * cpuS / wallS).toFixed(0)}% of one core); load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} on ${availableParallelism()} cores`);

  // RSS: bounded while everything ran; near its start once it ended. V8 gives an idle heap back
  // when its memory reducer runs (a few GCs after allocation stops), so this waits for it, bounded.
  const rssPeak = Math.max(...rss.map((r) => r.kib));
  const perSession = (rssPeak - rssStart) / Math.max(1, nSsh + nPg);
  // Bounds: 1 MiB of gateway memory per session plus 256 MiB; afterwards at most 25% of the growth (+64 MiB) still held.
  const peakBound = rssStart + (nSsh + nPg) * 1024 + 256 * 1024;
  const endBound = rssStart + 0.25 * (rssPeak - rssStart) + 64 * 1024;
  const settleFrom = Date.now();
  await until(async () => (rssKiB(pid) <= endBound ? true : null), Math.min(60_000, left()), 1000);
  const rssEnd = rssKiB(pid);
  const settledS = ((Date.now() - settleFrom) / 1000).toFixed(0);
  check(rssPeak <= peakBound, 'gateway RSS stayed bounded during the soak (≤ start + 1 MiB per session + 256 MiB)',
    `start ${mib(rssStart)} MiB, peak ${mib(rssPeak)} MiB (${perSession.toFixed(0)} KiB per session), bound ${mib(peakBound)} MiB; ${rss.length} samples`);
  check(rssEnd <= endBound, 'gateway RSS came back near its start within 60 s after the sessions ended (≤ start + 25% of the growth + 64 MiB)',
    `end ${mib(rssEnd)} MiB ${settledS} s after the last session ended (waited at most 60 s), bound ${mib(endBound)} MiB; at the start ${heapStart}, at the end ${await gatewayHeap(node.url)}`);

  // Nothing left behind.
  const leases = (await store.listLeases({ state: ['pending', 'active', 'revoking'] }));
  const roles = await cluster.noSessionRoles(30_000);
  const procs = await until(async () => (spawnSync('pgrep', ['-u', accounts.certLogin]).stdout.toString().trim() === '' ? true : null), 30_000);
  check(leases.length === 0 && roles.length === 0 && !!procs, 'no live lease, no session role in PostgreSQL, no process of the login account',
    `${leases.length} leases not revoked; ${roles.length} tg_ roles${procs ? '' : `; processes of ${accounts.certLogin} left`}`);

  if (profile) {
    const files = await until(async () => (summarizeProfiles(profileDir).files > 0 ? true : null), 60_000, 1000);
    const kept = mkdtempSync(join(tmpdir(), 'tg-soak-profile-'));
    for (const f of readdirSync(profileDir)) renameSync(join(profileDir, f), join(kept, f));
    say(files ? `gateway CPU profile during ramp + soak (kept in ${kept}):\n${renderHot(summarizeProfiles(kept, 25))}` : 'no profile written');
  }
  loopDelay.disable();
  say(`soak driver's own event-loop delay: p99 ${(loopDelay.percentile(99) / 1e6).toFixed(0)} ms, max ${(loopDelay.max / 1e6).toFixed(0)} ms`);

  // Stop the gateway now (drain) and everything else; then check the machine is as it was.
  await store.close();
  const code = await node.stop(60_000);
  check(code === 0, 'the gateway stops cleanly (SIGTERM drain)', `exit ${code}; ${node.output().split('\n').filter((l) => /"level":(50|60)/.test(l)).length} error lines in its log`);
}

async function raiseMaxConnections(dataDir: string, port: number, n: number): Promise<void> {
  const bin = findPgBin()!;
  const sock = join(dataDir, '..', 'sock');
  // -l: the restarted server must not hold this process's pipes (spawnSync would wait for it forever).
  const args = [join(bin, 'pg_ctl'), '-D', dataDir, '-l', join(dataDir, '..', 'server.log'), '-w', '-t', '60', '-m', 'fast', '-o', `-p ${port} -k ${sock} -c listen_addresses=127.0.0.1 -c max_connections=${n} -c fsync=off`, 'restart'];
  const r = spawnSync('runuser', ['-u', 'postgres', '--', ...args], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 });
  if (r.status !== 0) throw new Error(`pg_ctl restart failed: ${r.stderr}`);
}

const hard = setTimeout(() => {
  check(false, `the soak finished within its budget (${(budgetMs / 1000).toFixed(0)} s)`);
  void runTeardowns().finally(() => { report(); process.exit(1); });
}, budgetMs + 120_000);
hard.unref();

/** The Linux accounts this run made (checked gone at the end). */
const loginAccounts: string[] = [];
let crashed: unknown = null;
try {
  await main();
} catch (e) {
  crashed = e;
  check(false, 'the soak ran to its end', (e as Error).stack ?? String(e));
}
await runTeardowns();
clearTimeout(hard);
if (!crashed) {
  // tsx's esbuild service is this process's own helper, not something the soak started.
  const kids = spawnSync('pgrep', ['-a', '-P', String(process.pid)]).stdout.toString().trim().split('\n').filter((l) => l && !/esbuild/.test(l)).join('\n');
  const stillThere = loginAccounts.filter((u) => spawnSync('id', ['-u', u]).status === 0);
  check(stillThere.length === 0, 'the Linux accounts the run made are gone', stillThere.length ? `left: ${stillThere.join(' ')}` : loginAccounts.join(' '));
  check(kids === '', 'no child process left (gateway, sshd, PostgreSQL stopped)', kids ? `children: ${kids.replace(/\n/g, ' ')}` : '');
  check(Date.now() <= deadline + 60_000, `the soak finished within its budget (${(budgetMs / 1000).toFixed(0)} s)`, `${((Date.now() - t0) / 1000).toFixed(0)} s`);
}
report();
process.exit(checks.every((c) => c.ok) ? 0 : 1);
