import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import { moduleMap } from '../protocols/index.js';
import type { DemoTargets, ProtocolModule } from '../protocols/types.js';
import { resolveSecret, validateConfig } from './config.js';
import { isSecretRef } from '../auth/secret.js';
import type { TargetConfig } from '../protocols/config.js';
import type { PolicyConfig } from '../policies/config.js';
import { Gateway } from './gateway.js';
import { appUrls } from '../protocols/http/routing.js';
import { sambaMissing, startSambaDc, type SambaDc } from '../protocols/directory-samba.js';

/** Demo users: name, groups. Passwords are "<name>-demo" (documented in the README; demo only). */
export const DEMO_USERS = [
  { name: 'alice', groups: ['engineers', 'oncall'], title: 'engineer (may request; break-glass on call)' },
  { name: 'bob', groups: ['approvers'], title: 'approver' },
  { name: 'dave', groups: ['approvers', 'security'], title: 'approver, security' },
  { name: 'carol', groups: ['soc'], title: 'SOC analyst' },
] as const;

/** Alice's authenticator secret in the demo (base32), for MFA step-up on critical targets. */
export const DEMO_TOTP = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';

export const DEMO_POLICIES: PolicyConfig[] = [{
  name: 'engineering',
  targets: ['*'],
  roles: ['*'],
  requesters: ['engineers'],
  approvers: ['approvers'],
  escalateTo: ['security'],
  maxDuration: '8h',
  approvalTimeout: '30m',
  onTimeout: 'escalate',
  rules: [
    { pattern: '^\\s*rm\\s+-rf\\s+/\\s*$', action: 'kill', message: 'Deleting the root file system ends your session.' },
    { pattern: '\\b(shutdown|reboot|halt|poweroff)\\b', action: 'deny', message: 'Power commands are not allowed through Tollgate.' },
    { kinds: ['DROP', 'TRUNCATE', 'ALTER SYSTEM', 'COPY PROGRAM'], action: 'deny', message: 'Destructive statements are not allowed in the demo.' },
    { pattern: '\\bpasswd\\b', action: 'alert' },
  ],
}];

export async function freePort(preferred: number, host = '127.0.0.1'): Promise<number> {
  const tryPort = (p: number) => new Promise<number | null>((res) => {
    const s = createServer();
    s.once('error', () => res(null));
    s.listen(p, host, () => { const a = s.address(); s.close(() => res(typeof a === 'object' && a ? a.port : null)); });
  });
  return (await tryPort(preferred)) ?? (await tryPort(0))!;
}

export async function runDemo(opts: { dir: string; httpPort: number; installDeps?: boolean; directory?: boolean; onGateway?: (gw: Gateway) => void }): Promise<void> {
  const dir = resolve(opts.dir);
  // Traversable: demo servers run as their own users (postgres, mysql) under dir/targets.
  mkdirSync(join(dir, 'targets'), { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  const log = pino({ level: process.env['TOLLGATE_LOG_LEVEL'] ?? 'info' });
  const modules = moduleMap();
  const started: DemoTargets[] = [];
  const targets: TargetConfig[] = [];
  const listeners: Record<string, { host: string; port: number }> = { http: { host: '127.0.0.1', port: await freePort(opts.httpPort) } };
  for (const mod of modules.values()) {
    if (mod.listen) listeners[mod.name] = { host: '127.0.0.1', port: await freePort(demoPort(mod)) };
  }
  const stopTargets = async () => { for (const d of started.reverse()) await d.stop().catch(() => undefined); };

  const raw = {
    gateway: { dataDir: join(dir, 'data'), id: 'demo', expiryWarning: '60s', logLevel: process.env['TOLLGATE_LOG_LEVEL'] ?? 'info' },
    listeners,
    store: { kind: 'sqlite' },
    idp: {
      dev: {
        host: '127.0.0.1', port: await freePort(listeners['http']!.port + 1000),
        users: DEMO_USERS.map((u) => ({ name: u.name, email: `${u.name}@demo.tollgate`, password: { value: `${u.name}-demo` }, groups: [...u.groups], ...(u.name === 'alice' ? { totp: { value: DEMO_TOTP } } : {}) })),
      },
    },
    targets: [] as TargetConfig[],
    policies: DEMO_POLICIES,
    breakGlass: { groups: ['oncall'], maxDuration: '1h' },
  };
  const configName = join(dir, 'demo.yaml (generated)');
  const config = validateConfig(raw, configName, modules);

  // The gateway comes up first (its /healthz answers while the demo servers are still being set up);
  // the demo targets join its configuration once their servers run.
  const gw = new Gateway({ config, log });
  opts.onGateway?.(gw);
  await gw.start();
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await gw.stop().catch(() => undefined);
    await stopTargets();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.stdout.write(`Tollgate gateway is up at ${gw.publicUrl} (health: ${gw.publicUrl}/healthz); starting the demo servers…\n`);

  if (opts.installDeps) {
    // Debian packages for the demo servers (openssh-server, postgresql, mariadb-server, ...).
    const { spawn } = await import('node:child_process');
    const ensure = join(import.meta.dirname, 'bin', 'ensure-deps.js');
    await new Promise<void>((res) => {
      const c = spawn(process.execPath, [ensure, 'demo', '--only', 'debian'], { stdio: ['ignore', 'inherit', 'inherit'] });
      c.on('close', () => res());
      c.on('error', () => res());
    });
  }

  // Demo servers start side by side (each is a real server in its own temp dir); with Samba, a domain controller too.
  let directory: DirectoryDemo | null = null;
  const directoryStarting = (opts.directory === false ? Promise.resolve(null) : directoryDemo(join(dir, 'targets', 'directory'), log)).then((d) => {
    directory = d;
    if (d) { started.push(d); targets.push(...d.targets); }
  }, (e) => log.error({ err: e }, 'demo directory (Samba AD DC) failed to start; continuing without it'));
  await Promise.all([directoryStarting, ...[...modules.values()].filter((m) => m.demo).map(async (mod) => {
    try {
      const d = await mod.demo!(join(dir, 'targets', mod.name), log.child({ demo: mod.name }));
      if (!d) { log.warn({ protocol: mod.name }, 'demo target skipped: server software not installed'); return; }
      started.push(d);
      targets.push(...d.targets);
    } catch (e) {
      log.error({ err: e, protocol: mod.name }, 'demo target failed to start; continuing without it');
    }
  })]);
  const dirDemo = directory as DirectoryDemo | null;
  if (dirDemo) {
    (raw as Record<string, unknown>)['directory'] = dirDemo.section;
    config.directory = validateConfig(raw, configName, modules).directory;
  }
  if (stopping) return;
  // Two modules may pick the same demo name (e.g. "desktop" for VNC and RDP): keep both, suffixed.
  const seen = new Set<string>();
  for (const t of targets.sort((a, b) => a.name.localeCompare(b.name) || a.protocol.localeCompare(b.protocol))) {
    if (seen.has(t.name)) t.name = `${t.name}-${t.protocol}`;
    seen.add(t.name);
  }
  // Validate them as the config file would be, then let the running gateway serve them.
  config.targets.push(...validateConfig({ ...raw, targets }, configName, modules).targets);

  const users: Record<string, { token: string; groups: string[] }> = {};
  for (const u of DEMO_USERS) {
    const now = gw.clock.now();
    await gw.store.upsertIdentity({ sub: u.name, email: `${u.name}@demo.tollgate`, name: u.name, groups: [...u.groups], firstSeen: now, lastSeen: now });
    const { token } = await gw.tokens.create(u.name, 'demo', 7 * 86_400_000, null);
    users[u.name] = { token: token.reveal(), groups: [...u.groups] };
  }
  const demo = {
    gatewayUrl: gw.publicUrl,
    listeners: Object.fromEntries(Object.keys(listeners).map((n) => [n, gw.listenerAddress(n)])),
    users,
    targets: config.targets.map((t) => ({ name: t.name, protocol: t.protocol, risk: t.risk, roles: t.roles.map((r) => r.name), address: t.address })),
    // Demo only (this file is 0600): the demo servers' admin credentials, so benchmarks can measure
    // the direct path next to the gateway. A real deployment never hands these out.
    direct: Object.fromEntries(config.targets.map((t) => [t.name, { address: t.address, credentials: resolveRefs(t.credentials, (ref, path) => resolveSecret(ref, config, path).reveal(), `targets.${t.name}.credentials`) }])),
    idp: gw.devIdp?.issuer ?? null,
    // Demo only, as `direct`: the demo domain controller and its Administrator.
    directory: dirDemo ? { url: dirDemo.section.url, baseDn: dirDemo.dc.baseDn, admin: dirDemo.dc.admin, adminPassword: dirDemo.dc.adminPassword, groups: [DEMO_GROUP] } : null,
  };
  const demoFile = join(dir, 'demo.json');
  writeFileSync(demoFile, JSON.stringify(demo, null, 2), { mode: 0o600 });

  process.stdout.write(`
Tollgate demo is running at ${gw.publicUrl}   (health: ${gw.publicUrl}/healthz)
  portal:   ${gw.publicUrl}/            sign in as alice / alice-demo (engineer), bob / bob-demo (approver), carol / carol-demo (SOC)
  API doc:  ${gw.publicUrl}/api/v1/openapi.json
  tokens and target addresses: ${demoFile}
  gateway key: ${join(gw.dataDir, 'gateway.key')} (0600, made on first start; seals stored secrets and keys the audit log)
  targets:  ${config.targets.map((t) => `${t.name} (${t.protocol}, ${t.risk})`).join(', ') || '(none: install openssh-server / postgresql / mariadb-server)'}
${dirDemo ? `  directory: ${dirDemo.dc.realm} (a Samba AD DC on ldaps://127.0.0.1); each demo user has an account <name> / <name>-demo there;
            a grant of domain as domain-admin puts your own account into ${DEMO_GROUP} until it ends
` : ''}${appUrls(config.targets, gw.publicUrl, config.gateway.appsDomain).map(([name, url]) => `  app:      ${name} at ${url}/   (its own origin; *.localhost is this machine in Chromium and Firefox)\n`).join('')}
Try:
  export TOLLGATE_URL=${gw.publicUrl}
  TOLLGATE_TOKEN=$(node -p "require('${demoFile}').users.alice.token") npx tollgate request ${config.targets[0]?.name ?? '<target>'} --role ${config.targets[0]?.roles[0]?.name ?? '<role>'} --reason "demo"
  TOLLGATE_TOKEN=$(node -p "require('${demoFile}').users.bob.token") npx tollgate requests --approvable
Press Ctrl-C to stop.
`);
}

/** The group a demo grant of domain/domain-admin elevates the person's own account to. */
export const DEMO_GROUP = 'tg-demo-admins';

interface DirectoryDemo extends DemoTargets { dc: SambaDc; section: Record<string, unknown> }

/**
 * The demo's directory: a Samba AD DC (realm DEMO.TOLLGATE, so the demo users' emails are their
 * UPNs), an account per demo user found by mail, the group DEMO_GROUP, and the target `domain` whose
 * role domain-admin elevates the requester's own account for the grant (ownAccountGroups). Null
 * when Samba is not installed; waits up to 5 minutes for another DC on this machine (tests) to stop.
 */
async function directoryDemo(dir: string, log: Logger): Promise<DirectoryDemo | null> {
  const missing = sambaMissing();
  if (missing) { log.warn({ why: missing }, 'demo directory skipped: Samba AD DC cannot run here'); return null; }
  const dc = await startSambaDc({ realm: 'DEMO.TOLLGATE', domain: 'DEMO', dir, lockTimeoutMs: 5 * 60_000, simplePasswords: true });
  try {
    dc.tool(['group', 'add', DEMO_GROUP, '--description=Tollgate demo: privileged while a grant runs']);
    for (const u of DEMO_USERS) dc.tool(['user', 'create', u.name, `${u.name}-demo`, `--mail-address=${u.name}@demo.tollgate`]);
  } catch (e) {
    await dc.stop();
    throw e;
  }
  const target = {
    name: 'domain', protocol: 'rdp', address: '127.0.0.1:3389', risk: 'high',
    description: `The ${dc.realm} domain: a grant elevates your own domain account (RDP with minted domain accounts needs a Windows host joined to it)`,
    credentials: { mode: 'directory-account' }, options: { nla: false },
    roles: [{ name: 'domain-admin', description: `your own account joins ${DEMO_GROUP} while the grant runs`, ownAccountGroups: [DEMO_GROUP] }],
  } as unknown as TargetConfig;
  return {
    dc, targets: [target], stop: () => dc.stop(),
    section: { url: 'ldaps://127.0.0.1', bind: { dn: dc.admin, password: { value: dc.adminPassword } }, baseDn: dc.baseDn, tls: { verify: false } },
  };
}

function resolveRefs(v: unknown, resolve: (ref: never, path: string) => string, path: string): unknown {
  if (isSecretRef(v)) return resolve(v as never, path);
  if (Array.isArray(v)) return v.map((x, i) => resolveRefs(x, resolve, `${path}[${i}]`));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, resolveRefs(x, resolve, `${path}.${k}`)]));
  return v;
}

function demoPort(mod: ProtocolModule): number {
  return mod.defaultPort < 1024 ? mod.defaultPort + 10000 : mod.defaultPort;
}
