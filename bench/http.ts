/**
 * `npm run bench -- http`: keep-alive GETs with wrk against the same upstream app, side by side:
 * direct, through nginx as a plain reverse proxy (one worker, upstream keep-alive), and through
 * Tollgate (`tollgate serve`, signed in with a real OIDC login in headless Chromium, grant
 * auto-approved through the API, JWT injected per request). Small and 1 MiB responses; median of
 * rounds; the bench table prints the ratios. Uses the CLI and the public API only; every server is
 * its own process, started in a temp dir and stopped at the end.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { profileNodeArgs } from './profile.js';
import { execFileP, freePort, median, tollgateBin } from './harness.js';


/** One result row, as bench/index.ts prints it (scenario is filled in there). */
export interface HttpBenchRow {
  case: string;
  tool: 'direct' | 'nginx' | 'tollgate';
  metric: string;
  value: number;
  unit: string;
  better: 'higher' | 'lower';
  note?: string;
}

const UPSTREAM_JS = `
const http = require('node:http');
const small = Buffer.from(JSON.stringify({ ok: true, msg: 'hello from the upstream app' }));
const large = Buffer.alloc(1024 * 1024, 97);
http.createServer((req, res) => {
  const body = req.url.startsWith('/large') ? large : small;
  res.writeHead(200, { 'content-type': req.url.startsWith('/large') ? 'application/octet-stream' : 'application/json', 'content-length': body.length });
  res.end(body);
}).listen(Number(process.env.PORT), '127.0.0.1', () => process.stdout.write('ready\\n'));
`;

interface Proc { child: ChildProcess; out: () => string }

function start(cmd: string, args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env }, cwd: opts.cwd });
  let out = '';
  child.stdout!.on('data', (d) => { out = (out + d).slice(-8000); });
  child.stderr!.on('data', (d) => { out = (out + d).slice(-8000); });
  return { child, out: () => out };
}

async function stop(p: Proc | null): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const done = new Promise((r) => p.child.once('close', r));
  p.child.kill('SIGTERM');
  // A gateway under --cpu-prof writes its profile on exit: on a loaded machine that takes a while.
  const t = setTimeout(() => p.child.kill('SIGKILL'), process.env.TOLLGATE_BENCH_PROFILE_DIR ? 120_000 : 5000);
  await done;
  clearTimeout(t);
}

async function waitHttp(url: string, proc: Proc, init?: RequestInit, tries = 200): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (proc.child.exitCode !== null) throw new Error(`process exited: ${proc.out()}`);
    try {
      const r = await fetch(url, init);
      await r.arrayBuffer();
      if (r.status < 500) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer: ${proc.out()}`);
}

export interface WrkResult { rps: number; p50ms: number; p99ms: number; errors: number }

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(v.trim());
  if (!m) return NaN;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2] as 'ms'];
}

/** Parse wrk --latency output. */
export function parseWrk(text: string): WrkResult {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
  const p50 = toMs(/^\s+50%\s+(\S+)/m.exec(text)?.[1] ?? '');
  const p99 = toMs(/^\s+99%\s+(\S+)/m.exec(text)?.[1] ?? '');
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const errors = non2xx + (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return { rps, p50ms: p50, p99ms: p99, errors };
}

/** CPU time (ms) used so far by a process and its children that are still running (nginx workers). */
function cpuMs(pid: number): number {
  const one = (p: number) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
    } catch { return 0; }
  };
  let total = one(pid);
  try {
    for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) total += one(Number(c));
  } catch { /* no children file */ }
  return total;
}

async function wrk(url: string, headers: Record<string, string>, seconds: number, connections: number): Promise<WrkResult> {
  const args = ['-t2', `-c${connections}`, `-d${seconds}s`, '--latency', '--timeout', '10s'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const { stdout } = await execFileP('wrk', args, { maxBuffer: 1 << 20 });
  return parseWrk(stdout);
}

/** Sign in through the gateway's OIDC login in Chromium, get an auto-approved grant, and the app cookie (on the app's own origin). */
/** Headless Chromium for the benchmarks that sign in through a gateway's dev IdP. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
}

/** Sign alice in through the gateway's dev IdP; the page is left on /api/v1/me with her web session. */
export async function devIdpSignIn(browser: Browser, gatewayUrl: string, password: string): Promise<{ ctx: BrowserContext; page: Page }> {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(`${gatewayUrl}/auth/login?returnTo=${encodeURIComponent('/api/v1/me')}`, { timeout: 60_000 });
  try {
    await page.waitForSelector('#login', { timeout: 60_000 });
  } catch {
    throw new Error(`no IdP sign-in page at ${page.url()}: ${(await page.textContent('body').catch(() => ''))?.slice(0, 300)}`);
  }
  await page.fill('#login', 'alice');
  await page.fill('#password', password);
  await page.click('button:has-text("Sign in")');
  await page.waitForURL(`${gatewayUrl}/api/v1/me`, { timeout: 60_000 });
  return { ctx, page };
}

async function signIn(gatewayUrl: string, appUrl: string, password: string): Promise<string> {
  const browser = await launchChromium();
  try {
    const { ctx, page } = await devIdpSignIn(browser, gatewayUrl, password);
    // A cookie-authenticated change must say it comes from the gateway's own origin (CSRF gate).
    const r = await page.request.post(`${gatewayUrl}/api/v1/requests`, { data: { target: 'app', role: 'user', duration: '4h', reason: 'benchmark' }, headers: { origin: gatewayUrl } });
    if (r.status() !== 201) throw new Error(`request failed: ${r.status()} ${await r.text()}`);
    const req = await r.json() as { state: string };
    if (req.state !== 'approved') throw new Error(`request not auto-approved: ${req.state}`);
    const res = await page.goto(appUrl);
    if (res?.status() !== 200) throw new Error(`app through Tollgate answered ${res?.status()}`);
    const c = (await ctx.cookies()).find((x) => x.name === 'tg_app_app');
    if (!c) throw new Error('no app cookie after sign-in');
    return `${c.name}=${c.value}`;
  } finally {
    await browser.close();
  }
}

export async function run(opts: { smoke: boolean }): Promise<HttpBenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-bench-http-'));
  let upstream: Proc | null = null;
  let nginx: Proc | null = null;
  let gateway: Proc | null = null;
  const log = (m: string) => process.stderr.write(`[bench http] ${m}\n`);
  try {
    const upPort = await freePort();
    upstream = start(process.execPath, ['-e', UPSTREAM_JS], { env: { PORT: String(upPort) } });
    await waitHttp(`http://127.0.0.1:${upPort}/small`, upstream);

    const ngPort = await freePort();
    writeFileSync(join(dir, 'nginx.conf'), `worker_processes 1;
error_log ${join(dir, 'nginx-error.log')} warn;
pid ${join(dir, 'nginx.pid')};
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${join(dir, 'ngx-body')};
  proxy_temp_path ${join(dir, 'ngx-proxy')};
  fastcgi_temp_path ${join(dir, 'ngx-fcgi')};
  uwsgi_temp_path ${join(dir, 'ngx-uwsgi')};
  scgi_temp_path ${join(dir, 'ngx-scgi')};
  upstream app { server 127.0.0.1:${upPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${ngPort};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }
  }
}
`);
    nginx = start('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;']);
    await waitHttp(`http://127.0.0.1:${ngPort}/small`, nginx);

    const gwPort = await freePort();
    const password = `bench-${Math.random().toString(36).slice(2)}`;
    const config = {
      gateway: { dataDir: join(dir, 'data'), id: 'bench-http', logLevel: 'warn', reaperInterval: '1h' },
      listeners: { http: { host: '127.0.0.1', port: gwPort } },
      idp: { dev: { users: [{ name: 'alice', email: 'alice@bench', password: { value: password }, groups: ['engineers'] }] } },
      targets: [{ name: 'app', protocol: 'http', address: `http://127.0.0.1:${upPort}`, risk: 'low', roles: [{ name: 'user' }], credentials: { mode: 'jwt' } }],
      policies: [{ name: 'bench', targets: ['app'], roles: ['*'], requesters: ['engineers'], approval: 'auto', maxDuration: '8h' }],
    };
    writeFileSync(join(dir, 'tollgate.yaml'), JSON.stringify(config, null, 2), { mode: 0o600 });
    gateway = start(process.execPath, [...profileNodeArgs(), tollgateBin, 'serve', '--config', join(dir, 'tollgate.yaml')]);
    const gwUrl = `http://127.0.0.1:${gwPort}`;
    await waitHttp(`${gwUrl}/healthz`, gateway, undefined, 600);
    // The app lives on its own origin, app.localhost (Chromium resolves it; wrk gets its Host header).
    const appHost = `app.localhost:${gwPort}`;
    const cookie = await signIn(gwUrl, `http://${appHost}/small`, password);
    log('signed in through the dev IdP; grant auto-approved');

    const seconds = opts.smoke ? 1 : 10;
    const rounds = opts.smoke ? 1 : 3;
    const connections = opts.smoke ? 8 : 32;
    // The process whose CPU time counts for each tool: the proxy itself (the upstream's is the same for all).
    const tools: { tool: HttpBenchRow['tool']; base: string; headers: Record<string, string>; pid: number }[] = [
      { tool: 'direct', base: `http://127.0.0.1:${upPort}`, headers: {}, pid: upstream.child.pid! },
      { tool: 'nginx', base: `http://127.0.0.1:${ngPort}`, headers: {}, pid: nginx.child.pid! },
      { tool: 'tollgate', base: gwUrl, headers: { cookie, Host: appHost }, pid: gateway.child.pid! },
    ];
    const rows: HttpBenchRow[] = [];
    // TOLLGATE_BENCH_CASES=<regex> runs only the matching cases (profiling one load at a time).
    const only = process.env.TOLLGATE_BENCH_CASES ? new RegExp(process.env.TOLLGATE_BENCH_CASES) : null;
    for (const [caseName, path] of [['small response (~50 B)', '/small'], ['1 MiB response', '/large']] as const) {
      if (only && !only.test(caseName)) continue;
      const results: Record<string, (WrkResult & { cpuUsPerReq: number })[]> = {};
      // Interleave tools per round so drift hits all of them alike.
      for (let r = 0; r < rounds; r++) {
        for (const t of tools) {
          const cpu0 = cpuMs(t.pid);
          const res = await wrk(t.base + path, t.headers, seconds, connections);
          const cpu = cpuMs(t.pid) - cpu0;
          if (res.errors) throw new Error(`${t.tool} ${path}: ${res.errors} failed responses`);
          (results[t.tool] ??= []).push({ ...res, cpuUsPerReq: (cpu * 1000) / Math.max(1, res.rps * seconds) });
        }
      }
      for (const t of tools) {
        const rs = results[t.tool]!;
        const note = `wrk -t2 -c${connections} -d${seconds}s, median of ${rounds}`;
        const c = `${caseName} c=${connections}`;
        rows.push({ case: c, tool: t.tool, metric: 'requests/s', value: median(rs.map((x) => x.rps)), unit: 'req/s', better: 'higher', note });
        rows.push({ case: c, tool: t.tool, metric: 'p50 latency', value: median(rs.map((x) => x.p50ms)), unit: 'ms', better: 'lower', note });
        rows.push({ case: c, tool: t.tool, metric: 'p99 latency', value: median(rs.map((x) => x.p99ms)), unit: 'ms', better: 'lower', note });
        rows.push({ case: c, tool: t.tool, metric: 'server CPU per request', value: median(rs.map((x) => x.cpuUsPerReq)), unit: 'µs', better: 'lower', note: `${note}; CPU of the answering process only (${t.tool === 'direct' ? 'the app' : t.tool === 'nginx' ? 'nginx master+worker' : 'the gateway'})` });
      }
      log(`${caseName}: ${tools.map((t) => `${t.tool} ${Math.round(median(results[t.tool]!.map((x) => x.rps)))} req/s, ${Math.round(median(results[t.tool]!.map((x) => x.cpuUsPerReq)))} µs CPU/req`).join('; ')}`);
    }
    return rows;
  } finally {
    await stop(gateway);
    await stop(nginx);
    await stop(upstream);
    rmSync(dir, { recursive: true, force: true });
  }
}
