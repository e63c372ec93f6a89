import { Command, Option } from 'commander';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync, createWriteStream, chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { WebSocket } from 'undici';
import { loadConfigFile, ConfigError } from './config.js';
import { CLIENT_FILES } from '../protocols/types.js';

/** Protocol modules load only for the commands that need them (the CLI stays quick). */
async function moduleMap() {
  return (await import('../protocols/index.js')).moduleMap();
}

/** Where `tollgate login` keeps the gateway URL and the API token (mode 0600). */
function cliConfigPath(): string {
  return process.env['TOLLGATE_CLI_CONFIG'] ?? join(process.env['XDG_CONFIG_HOME'] ?? join(homedir(), '.config'), 'tollgate', 'cli.json');
}

interface CliConf { url?: string; token?: string }
function readCliConf(): CliConf {
  try { return JSON.parse(readFileSync(cliConfigPath(), 'utf8')) as CliConf; } catch { return {}; }
}
function writeCliConf(c: CliConf): void {
  const p = cliConfigPath();
  mkdirSync(dirname(p), { recursive: true, mode: 0o700 });
  writeFileSync(p, JSON.stringify(c, null, 2), { mode: 0o600 });
  chmodSync(p, 0o600);
}

class CliError extends Error {}

const CREDENTIAL_COLUMNS = ['target', 'field', 'set', 'setAt', 'setBy', 'rotatedAt', 'nextRotationAt', 'lastFailure'];
function credentialRow(c: any): Record<string, unknown> {
  return { ...c, set: c.set ? 'yes' : 'no', setAt: c.setAt ?? '-', setBy: c.setBy ?? '-', rotatedAt: c.rotatedAt ?? '-', nextRotationAt: c.nextRotationAt ?? '-', lastFailure: c.lastFailure ? `${c.lastFailure.at}: ${c.lastFailure.reason}` : '-' };
}

/**
 * A secret typed at the terminal without echo, or (not a terminal) all of standard input with one
 * trailing newline dropped. Never an argument: those show in ps and shell history.
 */
async function readSecret(prompt: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const c of stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  }
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let v = '';
      const onData = (b: Buffer) => {
        for (const ch of b.toString('utf8')) {
          if (ch === '\r' || ch === '\n') { stdin.off('data', onData); resolve(v); return; }
          if (ch === '\u0003') { stdin.off('data', onData); reject(new CliError('cancelled')); return; }
          if (ch === '\u007f' || ch === '\b') v = v.slice(0, -1);
          else v += ch;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write('\n');
  }
}

interface GlobalOpts { url?: string; token?: string; json?: boolean }

function endpoint(g: GlobalOpts): { url: string; token?: string } {
  const c = readCliConf();
  const url = (g.url ?? process.env['TOLLGATE_URL'] ?? c.url ?? 'http://127.0.0.1:8080').replace(/\/$/, '');
  const token = g.token ?? process.env['TOLLGATE_TOKEN'] ?? c.token;
  return { url, token };
}

/** A file the gateway serves (its CA, its SSH known_hosts) as text. */
async function download(g: GlobalOpts, path: string): Promise<string> {
  const { url } = endpoint(g);
  let res: Response;
  try { res = await fetch(url + path); } catch (e) { throw new CliError(`cannot reach the gateway at ${url}: ${(e as Error).message}`); }
  const text = await res.text();
  if (!res.ok) throw new CliError(`cannot fetch ${path} from the gateway: ${res.status} ${text.slice(0, 200)}`);
  return text;
}

/** A refusal the gateway answered, with its error code (e.g. mfa_required). */
class ApiRefusal extends CliError {
  constructor(message: string, readonly status: number, readonly code: string | undefined) { super(message); }
}

/** One line from the terminal (or standard input when it is not one), after a prompt on stderr. */
async function ask(question: string): Promise<string> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY === true });
  try { return (await rl.question(question)).trim(); } finally { rl.close(); }
}

/**
 * Ask for a connection secret; when the target needs MFA at connect time and the sign-in has no
 * fresh MFA, prompt for the authenticator code (or use --mfa-code) and ask again.
 */
async function issueSecret(g: GlobalOpts, grantId: string, body: Record<string, unknown>, mfaCode?: string): Promise<any> {
  const path = `/api/v1/grants/${encodeURIComponent(grantId)}/secret`;
  try {
    return await api(g, 'POST', path, mfaCode ? { ...body, mfaCode } : body);
  } catch (e) {
    if (!(e instanceof ApiRefusal) || e.code !== 'mfa_required' || mfaCode) throw e;
    process.stderr.write(`${e.message.replace(/^403: /, '')}\n`);
    const code = await ask('Authenticator code: ');
    if (!code) throw new CliError('no authenticator code given');
    return api(g, 'POST', path, { ...body, mfaCode: code });
  }
}

async function api(g: GlobalOpts, method: string, path: string, body?: unknown): Promise<any> {
  const { url, token } = endpoint(g);
  let res: Response;
  try {
    res = await fetch(url + path, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    throw new CliError(`cannot reach the gateway at ${url}: ${(e as Error).message}`);
  }
  const text = await res.text();
  let data: any = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* text */ }
  if (!res.ok) {
    if (res.status === 401) throw new CliError(`not signed in (or the token expired): run \`tollgate login --url ${url}\`${data?.message ? ` (${data.message})` : ''}`);
    throw new ApiRefusal(`${res.status}: ${data?.message ?? text}`, res.status, typeof data?.error === 'string' ? data.error : undefined);
  }
  return data;
}

function out(g: GlobalOpts, data: unknown, human?: () => void): void {
  if (g.json || !human) process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
  else human();
}

const ago = (ms: number) => {
  const s = Math.round(Math.abs(ms) / 1000);
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${(s / 3600).toFixed(1)}h`;
};

function table(rows: Record<string, unknown>[], cols: string[]): void {
  if (!rows.length) { process.stdout.write('(none)\n'); return; }
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)));
  process.stdout.write(`${cols.map((c, i) => c.toUpperCase().padEnd(w[i]!)).join('  ')}\n`);
  for (const r of rows) process.stdout.write(`${cols.map((c, i) => String(r[c] ?? '').padEnd(w[i]!)).join('  ')}\n`);
}

export function buildCli(): Command {
  const program = new Command('tollgate')
    .description('Tollgate: just-in-time privileged access to servers, databases, desktops and web apps')
    .addOption(new Option('--url <url>', 'gateway URL (default: from `tollgate login`, $TOLLGATE_URL)'))
    .addOption(new Option('--token <token>', 'API token (default: from `tollgate login`, $TOLLGATE_TOKEN)'))
    .option('--json', 'print JSON')
    .showHelpAfterError();
  const g = () => program.opts<GlobalOpts>();

  program.command('serve').description('run the gateway from a YAML config file')
    .requiredOption('-c, --config <file>', 'configuration file')
    .action(async (o: { config: string }) => {
      (await import('./profiling.js')).installProfilingSignal();
      const config = loadConfigFile(o.config, await moduleMap());
      const workers = await import('./cluster/workers.js');
      const { workerCount } = await import('./cluster/config.js');
      // gateway.workers: N worker processes behind the same listeners (proxy/cluster/workers.ts).
      if (workers.isWorkerProcess()) { await workers.runWorker(config); return; }
      if (workerCount(config.gateway.workers) > 1) { await workers.runPrimary(config); process.exit(0); }
      const { Gateway } = await import('./gateway.js');
      const gw = new Gateway({ config });
      (await import('./safety.js')).protectGateway(gw);
      await gw.start();
      process.stdout.write(`Tollgate is running at ${gw.publicUrl}\n`);
      // SIGTERM drains (/readyz fails, listeners stop accepting, sessions are warned and get gateway.drainTimeout); Ctrl-C stops now.
      const stop = workers.shutdownOnce(gw);
      // on, not once: a second signal while draining is ignored instead of killing the process mid-drain.
      process.on('SIGINT', () => { void stop(false); });
      process.on('SIGTERM', () => { void stop(true); });
    });

  program.command('demo').description('start a demo gateway: SQLite, the dev IdP, demo users and real demo targets')
    .option('-d, --dir <dir>', 'working directory for the demo (data, servers, demo.json)', '.tollgate/demo')
    .option('-p, --port <port>', 'HTTP port of the gateway', '8080')
    .option('--install-deps', 'install missing Debian packages for the demo servers (apt-get, as root) after the gateway is up')
    .option('--no-directory', 'do not start the demo Samba AD domain controller (and its target domain) even when Samba is installed')
    .action(async (o: { dir: string; port: string; installDeps?: boolean; directory: boolean }) => {
      (await import('./profiling.js')).installProfilingSignal();
      const { runDemo } = await import('./demo.js');
      const { protectGateway } = await import('./safety.js');
      await runDemo({ dir: o.dir, httpPort: Number(o.port), installDeps: !!o.installDeps, directory: o.directory, onGateway: protectGateway });
    });

  program.command('login').description('sign in through your IdP (device flow) and keep an API token for the CLI')
    .option('--mfa', 'ask the IdP for multi-factor authentication (needed for critical targets)')
    .action(async (o: { mfa?: boolean }) => {
      const { url } = endpoint(g());
      const d = await api({ ...g(), token: undefined }, 'POST', '/api/v1/auth/device', { mfa: !!o.mfa });
      process.stderr.write(`To sign in, open ${d.verificationUriComplete ?? d.verificationUri}\nand enter the code: ${d.userCode}\n`);
      const until = Date.now() + d.expiresIn * 1000;
      let interval = Math.max(1, d.interval ?? 5) * 1000;
      while (Date.now() < until) {
        await new Promise((r) => setTimeout(r, interval));
        const { url: u } = endpoint(g());
        const res = await fetch(`${u}/api/v1/auth/device/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ handle: d.handle }) });
        const body = await res.json() as any;
        if (res.status === 202) continue;
        if (body.status === 'slow_down') { interval += 5000; continue; }
        if (body.status !== 'done') throw new CliError(`sign-in failed: ${body.message ?? body.status}`);
        writeCliConf({ url, token: body.token });
        process.stdout.write(`Signed in as ${body.identity} (${body.groups.join(', ')}); token saved to ${cliConfigPath()}\n`);
        return;
      }
      throw new CliError('the sign-in code expired; run tollgate login again');
    });

  const targets = program.command('targets').description('targets you may request (targets check <name>: dial it with its admin credential)')
    .action(async () => {
      const list = await api(g(), 'GET', '/api/v1/targets');
      out(g(), list, () => table(list.map((t: any) => ({ ...t, roles: t.roles.join(',') })), ['name', 'protocol', 'risk', 'roles']));
    });

  targets.command('check').description('dial a target with its admin credential: reachable, credentials work (SOC)').argument('<name>')
    .action(async (name: string) => {
      const r = await api(g(), 'POST', `/api/v1/targets/${encodeURIComponent(name)}/check`, {});
      out(g(), r, () => process.stdout.write(`${name}: ${r.ok ? 'OK' : `FAILED at ${r.stage ?? 'check'}`} — ${r.detail}\n`));
      if (!r.ok) process.exitCode = 2;
    });

  targets.command('repin').description("trust a target's new SSH host key after a legitimate rotation (SOC; audited)").argument('<name>')
    .option('--fingerprint <SHA256:...>', 'only if the target now presents this key (compare with ssh-keygen -lf on the target)')
    .action(async (name: string, o: { fingerprint?: string }) => {
      const r = await api(g(), 'POST', `/api/v1/targets/${encodeURIComponent(name)}/repin`, o.fingerprint ? { fingerprint: o.fingerprint } : {});
      out(g(), r, () => process.stdout.write(`${r.detail}\n`));
    });

  const credentials = program.command('credentials').description("target admin credentials kept in the vault (SOC): set, show, rotate; a credential is never shown back")
    .action(async () => {
      const list = await api(g(), 'GET', '/api/v1/credentials');
      out(g(), list, () => table(list.map(credentialRow), CREDENTIAL_COLUMNS));
    });
  credentials.command('set').description('store a target\'s admin credential in the vault: read from the terminal (not echoed) or standard input, never from the command line')
    .argument('<target>')
    .option('--field <field>', 'which credential (default: the first one the target keeps in the vault, e.g. admin.password)')
    .option('--no-verify', 'store it without logging in to the target with it first')
    .action(async (name: string, o: { field?: string; verify: boolean }) => {
      const secret = await readSecret(`Admin credential for ${name}: `);
      if (!secret) throw new CliError('no credential given (type it at the prompt, or pipe it on standard input)');
      const r = await api(g(), 'PUT', `/api/v1/targets/${encodeURIComponent(name)}/credentials`, { secret, verify: o.verify, ...(o.field ? { field: o.field } : {}) });
      out(g(), r, () => process.stdout.write(`stored ${r.target} ${r.field} in the vault (version ${r.version})${r.nextRotationAt ? `; next rotation ${r.nextRotationAt}` : ''}\n`));
    });
  credentials.command('show').description("when a target's vault credentials were set, by whom, rotated, the next rotation and the last failure (never the secret)").argument('<target>')
    .action(async (name: string) => {
      const list = await api(g(), 'GET', `/api/v1/targets/${encodeURIComponent(name)}/credentials`);
      out(g(), list, () => table(list.map(credentialRow), CREDENTIAL_COLUMNS));
    });
  credentials.command('rotate').description("rotate a target's vault credential now: the new one is set on the target and verified before the old one is discarded").argument('<target>')
    .option('--field <field>', 'which credential (default: the first one)')
    .action(async (name: string, o: { field?: string }) => {
      const r = await api(g(), 'POST', `/api/v1/targets/${encodeURIComponent(name)}/credentials/rotate`, o.field ? { field: o.field } : {});
      out(g(), r, () => process.stdout.write(`rotated ${r.target} ${r.field} (version ${r.version})${r.nextRotationAt ? `; next rotation ${r.nextRotationAt}` : ''}\n`));
    });

  program.command('request').description('request access: tollgate request <target> --role R --duration 2h --reason "..."')
    .argument('<target>')
    .requiredOption('-r, --role <role>', 'role on the target')
    .option('-d, --duration <duration>', 'how long (e.g. 30m, 2h)', '1h')
    .requiredOption('--reason <reason>', 'why you need it (ticket, incident)')
    .action(async (target: string, o: { role: string; duration: string; reason: string }) => {
      const r = await api(g(), 'POST', '/api/v1/requests', { target, role: o.role, duration: o.duration, reason: o.reason });
      out(g(), r, () => process.stdout.write(`request ${r.id}: ${r.state}${r.grantId ? ` (grant ${r.grantId})` : ` — waiting for stage ${r.currentStage + 1} of ${r.stages.length}`}\n`));
    });

  program.command('requests').description('your requests, or the ones you can approve (--approvable)')
    .option('--approvable', 'requests waiting for you')
    .action(async (o: { approvable?: boolean }) => {
      const list = await api(g(), 'GET', `/api/v1/requests${o.approvable ? '?scope=approvable' : ''}`);
      out(g(), list, () => table(list.map((r: any) => ({ ...r, duration: ago(r.durationMs), stage: `${Math.min(r.currentStage + 1, r.stages.length)}/${r.stages.length}` })), ['id', 'requester', 'target', 'role', 'duration', 'state', 'stage', 'reason']));
    });

  for (const action of ['approve', 'deny'] as const) {
    program.command(action).description(`${action} a request`).argument('<request>')
      .option('-m, --comment <comment>', 'comment')
      .action(async (id: string, o: { comment?: string }) => {
        const r = await api(g(), 'POST', `/api/v1/requests/${encodeURIComponent(id)}/${action}`, { comment: o.comment });
        out(g(), r, () => process.stdout.write(`request ${r.id}: ${r.state}${r.grantId ? ` (grant ${r.grantId})` : ''}\n`));
      });
  }

  program.command('grants').description('your grants (SOC: --all)')
    .option('--all', 'every grant (SOC)')
    .option('--active', 'only active grants')
    .action(async (o: { all?: boolean; active?: boolean }) => {
      const q = new URLSearchParams();
      if (o.all) q.set('scope', 'all');
      if (o.active) q.set('state', 'active');
      const list = await api(g(), 'GET', `/api/v1/grants?${q}`);
      out(g(), list, () => table(list.map((x: any) => ({ ...x, left: x.active ? ago(x.msLeft) : '-' })), ['id', 'identity', 'target', 'role', 'state', 'left']));
    });

  program.command('revoke').description('revoke a grant').argument('<grant>').option('--reason <reason>', 'why', 'revoked from the CLI')
    .action(async (id: string, o: { reason: string }) => {
      const r = await api(g(), 'POST', `/api/v1/grants/${encodeURIComponent(id)}/revoke`, { reason: o.reason });
      out(g(), r, () => process.stdout.write(`grant ${r.id}: ${r.state}\n`));
    });

  program.command('extend').description('ask for more time on your grant: the same policy as a new request; the grant keeps its id and live sessions continue')
    .argument('<grant>')
    .requiredOption('-d, --duration <duration>', 'how much longer (e.g. 30m, 1h)')
    .requiredOption('--reason <reason>', 'why you need longer')
    .action(async (id: string, o: { duration: string; reason: string }) => {
      const r = await api(g(), 'POST', `/api/v1/grants/${encodeURIComponent(id)}/extend`, { duration: o.duration, reason: o.reason });
      out(g(), r, () => process.stdout.write(r.state === 'approved'
        ? `grant ${r.grant.id} extended: now ends ${new Date(r.grant.expiresAt).toISOString()} (request ${r.id})\n`
        : `extension request ${r.id}: ${r.state} — waiting for stage ${r.currentStage + 1} of ${r.stages.length}\n`));
    });

  program.command('checkin').description('check a checked-out account in before your grant ends: its password rotates, the next in the queue gets it')
    .argument('<grant>')
    .action(async (id: string) => {
      const r = await api(g(), 'POST', `/api/v1/grants/${encodeURIComponent(id)}/checkin`, {});
      out(g(), r, () => process.stdout.write(`grant ${r.id}: checked in (${r.target}); the password is rotated\n`));
    });

  program.command('checkouts').description('checked-out accounts: who holds each, until when, and who waits')
    .action(async () => {
      const list = await api(g(), 'GET', '/api/v1/checkouts');
      out(g(), list, () => table(list.map((c: any) => ({
        targets: c.targets.join(','), holder: c.holder?.identity ?? '(free)', until: c.holder ? new Date(c.holder.expiresAt).toISOString() : '-',
        queue: c.queue.map((q: any) => q.requester).join(',') || '-', whenHeld: c.whenHeld,
      })), ['targets', 'holder', 'until', 'queue', 'whenHeld']));
    });

  const delegations = program.command('delegations').description('delegations of approvals you gave or received (delegations revoke <id> ends one)')
    .option('--all', 'every delegation (SOC)')
    .action(async (o: { all?: boolean }) => {
      const list = await api(g(), 'GET', `/api/v1/delegations${o.all ? '?scope=all' : ''}`);
      out(g(), list, () => table(list.map((d: any) => ({ ...d, from: new Date(d.startsAt).toISOString(), until: new Date(d.endsAt).toISOString(), state: d.revokedAt ? 'ended' : 'active' })), ['id', 'delegator', 'delegate', 'from', 'until', 'state', 'reason']));
    });
  delegations.command('revoke').description('end a delegation early').argument('<id>')
    .action(async (id: string) => {
      const r = await api(g(), 'POST', `/api/v1/delegations/${encodeURIComponent(id)}/revoke`, {});
      out(g(), r, () => process.stdout.write(`delegation ${r.id} ended\n`));
    });

  program.command('delegate').description('delegate your approvals to another approver for a time window (e.g. a holiday)')
    .argument('<identity>', 'the approver who decides for you meanwhile')
    .option('--from <time>', 'start (ISO date-time; default now)')
    .option('--until <time>', 'end (ISO date-time)')
    .option('-d, --duration <duration>', 'or how long from the start (e.g. 7d)')
    .requiredOption('--reason <reason>', 'why (e.g. holiday)')
    .action(async (identity: string, o: { from?: string; until?: string; duration?: string; reason: string }) => {
      const r = await api(g(), 'POST', '/api/v1/delegations', { delegate: identity, from: o.from, until: o.until, duration: o.duration, reason: o.reason });
      out(g(), r, () => process.stdout.write(`delegation ${r.id}: ${r.delegate} decides for ${r.delegator} from ${new Date(r.startsAt).toISOString()} until ${new Date(r.endsAt).toISOString()}\n`));
    });

  const reviews = program.command('access-reviews').description('access reviews (recertification) you decide; subcommands start, show, confirm, revoke, export')
    .option('--state <state>', 'open or completed')
    .action(async (o: { state?: string }) => {
      const list = await api(g(), 'GET', `/api/v1/access-reviews${o.state ? `?state=${encodeURIComponent(o.state)}` : ''}`);
      out(g(), list, () => table(list.map((r: any) => ({ ...r, due: new Date(r.dueAt).toISOString(), decided: `${r.counts.decided}/${r.counts.total}`, escalated: r.escalatedAt ? 'yes' : '' })), ['id', 'policy', 'state', 'due', 'decided', 'escalated']));
    });
  reviews.command('start').description('start an access review of a policy now (SOC)').argument('<policy>')
    .option('--reviewers <groups>', 'comma-separated reviewer groups').option('--due-in <duration>', 'how long the reviewers have (default 14d)')
    .action(async (policy: string, o: { reviewers?: string; dueIn?: string }) => {
      const r = await api(g(), 'POST', '/api/v1/access-reviews', { policy, reviewers: o.reviewers?.split(',').map((x) => x.trim()).filter(Boolean), dueIn: o.dueIn });
      out(g(), r, () => process.stdout.write(`access review ${r.id} of ${r.policy}: ${r.counts.total} line(s), due ${new Date(r.dueAt).toISOString()}\n`));
    });
  reviews.command('show').description('the lines of an access review').argument('<review>')
    .action(async (id: string) => {
      const r = await api(g(), 'GET', `/api/v1/access-reviews/${encodeURIComponent(id)}`);
      out(g(), r, () => table(r.lines.map((l: any) => ({ ...l, what: l.kind === 'grant' ? `${l.detail.target} as ${l.detail.role} until ${new Date(l.detail.expiresAt).toISOString()}` : (l.detail.groups ?? []).join(','), decision: l.decision ?? '-' })), ['id', 'kind', 'identity', 'what', 'decision', 'decidedBy']));
    });
  for (const decision of ['confirm', 'revoke'] as const) {
    reviews.command(decision).description(decision === 'confirm' ? 'confirm a line: the access stays' : 'revoke a line: the eligibility is excluded, its live grants end').argument('<review>').argument('<line>')
      .option('-m, --comment <comment>', decision === 'revoke' ? 'why (required)' : 'comment')
      .action(async (id: string, line: string, o: { comment?: string }) => {
        const r = await api(g(), 'POST', `/api/v1/access-reviews/${encodeURIComponent(id)}/lines/${encodeURIComponent(line)}/decide`, { decision, comment: o.comment });
        out(g(), r, () => process.stdout.write(`line ${r.id} (${r.kind} of ${r.identity}): ${r.decision}\n`));
      });
  }
  reviews.command('export').description('write the results as CSV (default) or JSON').argument('<review>')
    .option('--format <format>', 'csv or json', 'csv').option('-o, --out <file>', 'output file (default: stdout)')
    .action(async (id: string, o: { format: string; out?: string }) => {
      const { url, token } = endpoint(g());
      const res = await fetch(`${url}/api/v1/access-reviews/${encodeURIComponent(id)}/export?format=${encodeURIComponent(o.format)}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      const text = await res.text();
      if (!res.ok) throw new CliError(`${res.status}: ${text.slice(0, 300)}`);
      if (o.out) writeFileSync(o.out, text); else process.stdout.write(text);
    });

  program.command('secret').description('a one-time connection secret for a grant, with ready commands (asks for your authenticator code when the target needs MFA at connect)')
    .argument('<grant>').option('--reusable', 'valid for many connections until it expires')
    .option('--mfa-code <code>', 'authenticator code for targets that need MFA at connect (default: asked for when needed)')
    .action(async (id: string, o: { reusable?: boolean; mfaCode?: string }) => {
      const r = await issueSecret(g(), id, { reusable: !!o.reusable }, o.mfaCode);
      out(g(), r, () => {
        process.stdout.write(`user: ${r.username}\nsecret: ${r.secret}\nexpires: ${r.expiresAt}\n`);
        for (const [k, v] of Object.entries(r.commands)) process.stdout.write(`${k}: ${v}\n`);
      });
    });

  program.command('connect').description('connect to a target with your active grant (runs the native client)')
    .argument('<target>').option('-r, --role <role>', 'role, when you hold several')
    .option('--mfa-code <code>', 'authenticator code for targets that need MFA at connect (default: asked for when needed)')
    .action(async (target: string, o: { role?: string; mfaCode?: string }) => {
      const grants = (await api(g(), 'GET', '/api/v1/grants?state=active')) as any[];
      const grant = grants.find((x) => x.target === target && x.active && (!o.role || x.role === o.role));
      if (!grant) throw new CliError(`no active grant for ${target}; request one: tollgate request ${target} --role <role> --reason "..."`);
      const s = await issueSecret(g(), grant.id, {}, o.mfaCode);
      const native = s.native as { argv: string[]; env: Record<string, string>; askpass?: boolean } | null;
      if (!native) {
        process.stdout.write(`No native client to run for ${s.protocol}; use one of:\n`);
        for (const [k, v] of Object.entries(s.commands)) process.stdout.write(`${k}: ${v}\n`);
        return;
      }
      // A private directory for what the client needs from the gateway: its CA, its SSH host key, the askpass helper.
      const { mkdtempSync, rmSync } = await import('node:fs');
      const { tmpdir } = await import('node:os');
      const dir = mkdtempSync(join(tmpdir(), 'tollgate-connect-'));
      try {
        const files: [string, string, string][] = [[CLIENT_FILES.ca, '/api/v1/ca.pem', 'ca.pem'], [CLIENT_FILES.knownHosts, '/api/v1/ssh/known_hosts', 'known_hosts']];
        for (const [placeholder, path, name] of files) {
          if (!native.argv.some((a) => a.includes(placeholder)) && !Object.values(native.env).some((v) => v.includes(placeholder))) continue;
          const body = await download(g(), path);
          const file = join(dir, name);
          writeFileSync(file, body, { mode: 0o600 });
          native.argv = native.argv.map((a) => a.split(placeholder).join(file));
          for (const [k, v] of Object.entries(native.env)) native.env[k] = v.split(placeholder).join(file);
        }
        if (native.askpass) {
          // A private helper types the one-time secret for ssh; the secret stays in this process's environment.
          const helper = join(dir, 'askpass');
          writeFileSync(helper, '#!/bin/sh\nprintf "%s\\n" "$TOLLGATE_SECRET"\n', { mode: 0o700 });
          Object.assign(native.env, { SSH_ASKPASS: helper, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: process.env['DISPLAY'] ?? ':0', TOLLGATE_SECRET: s.secret });
        }
        const child = spawn(native.argv[0]!, native.argv.slice(1), { stdio: 'inherit', env: { ...process.env, ...native.env } });
        await new Promise<void>((resolve) => {
          child.on('error', (e) => { process.stderr.write(`tollgate: cannot run ${native.argv[0]}: ${e.message}\n`); process.exitCode = 127; resolve(); });
          child.on('close', (code) => { process.exitCode = code ?? 1; resolve(); });
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

  program.command('sessions').description('sessions (SOC sees all)')
    .option('--active', 'only live sessions')
    .action(async (o: { active?: boolean }) => {
      const list = await api(g(), 'GET', `/api/v1/sessions${o.active ? '?state=active' : ''}`);
      out(g(), list, () => table(list.map((s: any) => ({ ...s, started: new Date(s.startedAt).toISOString(), left: s.msLeft != null ? ago(s.msLeft) : '-' })), ['id', 'identity', 'target', 'role', 'protocol', 'state', 'started', 'left']));
    });

  program.command('kill').description('terminate a live session').argument('<session>').option('--reason <reason>', 'why', '')
    .action(async (id: string, o: { reason: string }) => {
      const r = await api(g(), 'POST', `/api/v1/sessions/${encodeURIComponent(id)}/kill`, { reason: o.reason });
      out(g(), r, () => process.stdout.write(`session ${r.id} terminated\n`));
    });

  const keys = program.command('keys').description('your registered SSH public keys (keys add <pubkey-file> registers one)')
    .action(async () => {
      const list = await api(g(), 'GET', '/api/v1/keys');
      out(g(), list, () => table(list.map((k: any) => ({ ...k, created: new Date(k.createdAt).toISOString() })), ['id', 'name', 'fingerprint', 'created']));
    });
  keys.command('add').description('register an SSH public key; proves you hold its private key by signing a gateway challenge with ssh-keygen -Y sign')
    .argument('<pubkey-file>', 'the public key, e.g. ~/.ssh/id_ed25519.pub')
    .option('-n, --name <name>', 'a name for the key (default: its comment)')
    .option('-i, --identity-file <file>', 'the private key to sign with (default: the public key file without .pub, else ssh-agent)')
    .action(async (file: string, o: { name?: string; identityFile?: string }) => {
      let line: string;
      try { line = readFileSync(file, 'utf8').split(/\r?\n/).find((l) => l.trim() && !l.startsWith('#'))?.trim() ?? ''; } catch (e) {
        throw new CliError(`cannot read ${file}: ${(e as Error).message}`);
      }
      if (!line) throw new CliError(`${file} holds no public key`);
      const name = o.name ?? (line.split(/\s+/).slice(2).join(' ') || basename(file));
      const ch = await api(g(), 'POST', '/api/v1/keys/challenge', { publicKey: line });
      // Without a private key file next to it, ssh-keygen signs with the key held by ssh-agent.
      const signer = o.identityFile ?? (file.endsWith('.pub') && existsSync(file.slice(0, -4)) ? file.slice(0, -4) : file);
      const tmp = mkdtempSync(join(tmpdir(), 'tollgate-key-'));
      try {
        const msg = join(tmp, 'challenge');
        writeFileSync(msg, ch.challenge, { mode: 0o600 });
        const code = await new Promise<number>((resolve, reject) => {
          const child = spawn('ssh-keygen', ['-Y', 'sign', '-n', ch.namespace, '-f', signer, msg], { stdio: ['inherit', 'ignore', 'inherit'] });
          child.on('error', (e) => reject(new CliError(`cannot run ssh-keygen: ${e.message}`)));
          child.on('close', (c) => resolve(c ?? 1));
        });
        if (code !== 0 || !existsSync(`${msg}.sig`)) throw new CliError(`ssh-keygen could not sign the challenge with ${signer} (exit ${code})`);
        const r = await api(g(), 'POST', '/api/v1/keys', { publicKey: line, name, challenge: ch.challenge, signature: readFileSync(`${msg}.sig`, 'utf8') });
        out(g(), r, () => process.stdout.write(`registered ${r.fingerprint} as "${r.name}" (id ${r.id})\n`));
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    });
  keys.command('remove').description('remove a registered key').argument('<id>')
    .action(async (id: string) => {
      await api(g(), 'DELETE', `/api/v1/keys/${encodeURIComponent(id)}`);
      process.stdout.write(`key ${id} removed\n`);
    });

  const tokens = program.command('tokens').description('your API tokens: state (active, expired, revoked, suspended by the IdP) and last use')
    .action(async () => {
      const list = await api(g(), 'GET', '/api/v1/tokens');
      const when = (v: number | null) => (v ? new Date(v).toISOString() : '-');
      out(g(), list, () => table(list.map((x: any) => ({ ...x, name: `${x.name}${x.current ? ' (this one)' : ''}`, expires: when(x.expiresAt), lastUsed: when(x.lastUsedAt), why: x.suspendedReason ?? '' })), ['id', 'name', 'state', 'expires', 'lastUsed', 'why']));
    });
  tokens.command('revoke').description('revoke a token: its connection secrets stop working, its live sessions end').argument('<id>')
    .action(async (id: string) => {
      const r = await api(g(), 'DELETE', `/api/v1/tokens/${encodeURIComponent(id)}`);
      out(g(), r, () => process.stdout.write(`token ${id} revoked; ${r.sessionsEnded} live session(s) ended\n`));
    });

  program.command('lock').description('lock an identity, a target or a grant: ends live sessions and refuses new ones')
    .option('--identity <sub>').option('--target <name>').option('--grant <id>')
    .requiredOption('--reason <reason>', 'why')
    .option('--ttl <duration>', 'lift the lock automatically after this long')
    .action(async (o: { identity?: string; target?: string; grant?: string; reason: string; ttl?: string }) => {
      const picked = (['identity', 'target', 'grant'] as const).filter((k) => o[k]);
      if (picked.length !== 1) throw new CliError('give exactly one of --identity, --target, --grant');
      const scope = picked[0]!;
      const r = await api(g(), 'POST', '/api/v1/locks', { scope, value: o[scope], reason: o.reason, ttl: o.ttl });
      out(g(), r, () => process.stdout.write(`lock ${r.id} on ${scope} ${r.value}; ${r.sessionsEnded} live session(s) ended\n`));
    });

  program.command('watch').description('watch a live terminal session').argument('<session>')
    .action(async (id: string) => {
      const { url, token } = endpoint(g());
      const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/api/v1/sessions/${encodeURIComponent(id)}/live`, { headers: token ? { authorization: `Bearer ${token}` } : {} } as never);
      await new Promise<void>((resolve, reject) => {
        ws.addEventListener('message', (ev) => {
          const m = JSON.parse(String(ev.data));
          const frames = m.type === 'snapshot' ? m.frames : [m];
          for (const f of frames) {
            if (f.type === 'o') process.stdout.write(String(f.data));
            else if (f.type === 'query') process.stdout.write(`\n[sql] ${JSON.stringify(f.data)}\n`);
            else if (f.type === 'end') process.stderr.write('\n[tollgate] session ended\n');
          }
        });
        ws.addEventListener('close', () => resolve());
        ws.addEventListener('error', () => reject(new CliError('cannot watch this session (not live, or not permitted)')));
      });
    });

  program.command('bench').description('run benchmarks side by side with the tools users would use instead; prints ratios, writes JSON')
    .argument('[scenarios...]', 'postgres, mysql, ssh, http, setup, kill, scale, vnc, rdp (default: all)')
    .option('--smoke', 'a tiny, fast version of each scenario')
    .option('-o, --out <file>', 'JSON output (default bench/results/latest.json)')
    .option('--profile', 'run the gateway with node --cpu-prof and report where its CPU time went (one scenario at a time is clearest)')
    .option('--merge', 're-run the named scenarios and replace their rows in the last full run (the README says which were re-run)')
    .option('--write-readme', 'run nothing: regenerate the README Performance block (<!-- bench:start --> … <!-- bench:end -->) from a results file')
    .option('--from <file>', 'with --write-readme: the results file (default bench/results/latest.json)')
    .option('--merge-from <file>', 'run nothing: merge a separate run of some scenarios (bench <names> -o <file>) into bench/results/latest.json, then regenerate the README block')
    .action(async (names: string[], o: { smoke?: boolean; out?: string; profile?: boolean; merge?: boolean; writeReadme?: boolean; from?: string; mergeFrom?: string }) => {
      if (o.mergeFrom) {
        const { mergeFile } = await import('../bench/index.js');
        const { updateReadme } = await import('../bench/report.js');
        const picked = mergeFile(resolve(o.mergeFrom));
        updateReadme();
        process.stdout.write(`merged ${picked.join(', ')} from ${o.mergeFrom} into bench/results/latest.json; README.md Performance block regenerated\n`);
        return;
      }
      if (o.writeReadme) {
        const { updateReadme } = await import('../bench/report.js');
        const from = o.from ? resolve(o.from) : undefined;
        if (!updateReadme(from)) throw new CliError(`no full (non-smoke) results file at ${from ?? 'bench/results/latest.json'}`);
        process.stdout.write(`README.md Performance block regenerated from ${from ?? 'bench/results/latest.json'}\n`);
        return;
      }
      const { runBench } = await import('../bench/index.js');
      const r = await runBench(names, { smoke: !!o.smoke, out: o.out, profile: !!o.profile, merge: !!o.merge });
      if (Object.keys(r.errors).length) process.exitCode = 1;
    });

  const audit = program.command('audit').description('the tamper-evident audit log');
  audit.command('verify').description('verify the audit log: hash chain, HMACs (needs the gateway key), signed head and checkpoints; says which check failed')
    .option('-c, --config <file>', 'read the store, the key and the checkpoint file directly (gateway config file) instead of the API')
    .option('--checkpoints <files...>', 'with --config: also compare with copies of the checkpoint lines (e.g. from the syslog server)')
    .action(async (o: { config?: string; checkpoints?: string[] }) => {
      const r = o.config
        ? await withStore(o.config, async (_store, audit) => (await audit()).verify({ checkpointFiles: o.checkpoints }))
        : await api(g(), 'GET', '/api/v1/audit/verify');
      out(g(), r, () => process.stdout.write(r.ok
        ? `audit chain OK: ${r.count} events, head ${r.head}, ${r.checkpoints ?? 0} signed checkpoints match\n`
        : `audit chain BROKEN at event ${r.brokenAt} (check: ${r.check}): ${r.detail}\n`));
      if (!r.ok) process.exitCode = 2;
    });
  audit.command('export').description('write every audit event as JSON lines (for a SIEM)')
    .option('-c, --config <file>', 'read the store directly (gateway config file) instead of the API')
    .option('-o, --out <file>', 'output file (default: stdout)')
    .action(async (o: { config?: string; out?: string }) => {
      const dest = o.out ? createWriteStream(o.out) : process.stdout;
      if (o.config) {
        await withStore(o.config, async (store) => {
          for (let after = 0; ;) {
            const rows = await store.listAudit({ afterSeq: after, limit: 1000 });
            if (!rows.length) break;
            for (const r of rows) { dest.write(`${JSON.stringify(r)}\n`); after = r.seq; }
          }
        });
      } else {
        const { url, token } = endpoint(g());
        const res = await fetch(`${url}/api/v1/audit/export`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
        if (!res.ok) throw new CliError(`${res.status}: ${await res.text()}`);
        dest.write(await res.text());
      }
      if (o.out) await new Promise<void>((r) => { (dest as NodeJS.WritableStream).end(() => r()); });
    });

  return program;
}

/** Open the store of a config directly (SQLite file or PostgreSQL); audit() builds the keyed audit log (reads, never creates, the gateway key). */
async function withStore<T>(configFile: string, fn: (store: import('./store/types.js').Store, audit: () => Promise<import('./audit.js').AuditLog>) => Promise<T>): Promise<T> {
  const cfg = loadConfigFile(configFile, await moduleMap());
  const { openStore } = await import('./store/index.js');
  const { dataDirOf, gatewayKeySource, checkpointFileOf } = await import('./config.js');
  const dataDir = dataDirOf(cfg);
  const store = await openStore(cfg, { dataDir, mustExist: true });
  const audit = async () => {
    const { AuditLog, AUDIT_KEY_LABEL } = await import('./audit.js');
    const { gatewayKey, loadGatewayKeyBytes, KeyError } = await import('../auth/keys.js');
    const { SystemClock } = await import('../policies/clock.js');
    const k = await loadGatewayKeyBytes(store, gatewayKeySource(cfg, dataDir), { write: false }).catch((e) => {
      throw e instanceof KeyError ? new CliError(`gateway.key: ${e.message}`) : e;
    });
    const quiet = (await import('pino')).default({ level: 'silent' });
    return new AuditLog(store, new SystemClock(), {
      key: gatewayKey(k.raw).deriveKey(AUDIT_KEY_LABEL),
      checkpoints: { file: checkpointFileOf(cfg, dataDir), gatewayId: cfg.gateway.id, log: quiet },
    });
  };
  try { return await fn(store, audit); } finally { await store.close(); }
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (e) {
    if (e instanceof CliError || e instanceof ConfigError) {
      process.stderr.write(`tollgate: ${e.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw e;
  }
}
