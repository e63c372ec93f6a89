/** One-shot native client runs used by several scenarios (setup, kill, scale). */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { execFileP, splitAddress, type DemoGateway } from './harness.js';

export type Proto = 'ssh' | 'postgres' | 'mysql';

export interface Conn { host: string; port: number; user: string; password: string; db?: string; viaGateway: boolean }

/** argv + env for a client that connects, runs one trivial command and exits. */
export function oneShot(proto: Proto, c: Conn): { argv: string[]; env: Record<string, string> } {
  if (proto === 'ssh') {
    return { argv: ['sshpass', '-e', 'ssh', '-p', String(c.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'PubkeyAuthentication=no', `${c.user}@${c.host}`, 'true'], env: { SSHPASS: c.password } };
  }
  if (proto === 'postgres') {
    return { argv: ['psql', '-X', '-q', '-h', c.host, '-p', String(c.port), '-U', c.user, '-d', c.db ?? 'postgres', '-c', 'select 1'], env: { PGPASSWORD: c.password, PGSSLMODE: c.viaGateway ? 'require' : 'disable' } };
  }
  return { argv: ['mariadb', '-h', c.host, '-P', String(c.port), '-u', c.user, `-p${c.password}`, ...(c.viaGateway ? ['--ssl'] : []), '-e', 'select 1'], env: {} };
}

/** argv + env for a client that connects and stays idle until killed (for kill/scale). */
export function idle(proto: Proto, c: Conn): { argv: string[]; env: Record<string, string> } {
  const o = oneShot(proto, c);
  if (proto === 'ssh') return { ...o, argv: [...o.argv.slice(0, -1), 'sleep 3600'] };
  if (proto === 'postgres') return { ...o, argv: [...o.argv.slice(0, -2), '-c', 'select pg_sleep(3600)'] };
  return { ...o, argv: [...o.argv.slice(0, -2), '-e', 'select sleep(3600)'] };
}

export async function runOnce(proto: Proto, c: Conn): Promise<number> {
  const { argv, env } = oneShot(proto, c);
  const t0 = performance.now();
  await execFileP(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, timeout: 60_000 });
  return performance.now() - t0;
}

/**
 * How many idle PostgreSQL clients (spawnIdle) are through to the server: their pg_sleep runs there.
 * A session is listed active from its start, before its role is minted and the upstream dialled;
 * the kill scenario measures sessions that are fully up, so it waits for this count.
 */
export async function pgSleeping(admin: { host: string; port: number; user: string; password: string }): Promise<number> {
  const sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'select pg_sleep(3600)'";
  try {
    const r = await execFileP('psql', ['-X', '-At', '-h', admin.host, '-p', String(admin.port), '-U', admin.user, '-d', 'postgres', '-c', sql], { env: { ...process.env, PGPASSWORD: admin.password, PGSSLMODE: 'disable' } });
    return Number(String(r.stdout).trim()) || 0;
  } catch {
    return -1;
  }
}

export function spawnIdle(proto: Proto, c: Conn): ChildProcess {
  const { argv, env } = idle(proto, c);
  return spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: 'ignore' });
}

/** The demo target for a protocol, a grant on it for alice, and how to reach it both ways. */
export async function targetFor(demo: DemoGateway, proto: Proto) {
  const t = demo.demo.targets.find((x) => x.protocol === proto && (proto !== 'ssh' || x.name === 'web01'));
  if (!t) return null;
  const role = proto === 'ssh' ? 'user' : 'read';
  const grantId = await demo.grant('alice', t.name, t.roles.includes(role) ? role : t.roles[0]!);
  const d = demo.demo.direct[t.name]!;
  const up = splitAddress(d.address);
  const admin = d.credentials.admin ?? {};
  const db = proto === 'postgres' ? String(d.credentials.database ?? 'postgres') : undefined;
  return {
    target: t, grantId,
    /** A fresh gateway connection (single-use secret unless reusable). */
    async gateway(reusable = false): Promise<Conn> {
      const s = await demo.secret('alice', grantId, reusable);
      return { host: s.host, port: s.port, user: s.username, password: s.secret, db, viaGateway: true };
    },
    direct: proto === 'ssh' ? null : { host: up.host, port: up.port, user: String(admin.user), password: String(admin.password), db, viaGateway: false } as Conn,
  };
}

/**
 * A TCP tap between clients and a gateway listener: clients connect to `port`, each connection is
 * passed through unchanged, and the moment it closes (the gateway's FIN or reset, or the client
 * hanging up first once it read the gateway's end message) is noted.
 * That is what the kill scenario measures: revoke call → the client's TCP connection closed by
 * the gateway, not the client process's exit (60 psql processes exiting on a loaded 2-core
 * machine is the scheduler's time, not the gateway's).
 */
export interface CloseTap {
  readonly host: string;
  readonly port: number;
  /** Connections through the tap now open. */
  readonly open: number;
  /** Of the closes seen, how many the client made first (after the gateway's end message, say). */
  readonly clientFirst: number;
  /** Resolves with the performance.now() of each of the next n closes by the gateway (rejects after timeoutMs). */
  nextCloses(n: number, timeoutMs: number): Promise<number[]>;
  close(): Promise<void>;
}

export async function startCloseTap(to: { host: string; port: number }): Promise<CloseTap> {
  const sockets = new Set<net.Socket>();
  let closes: number[] = [];
  let waiter: { n: number; resolve(v: number[]): void } | null = null;
  let open = 0;
  let clientFirst = 0;
  const noted = () => {
    if (waiter && closes.length >= waiter.n) { const w = waiter; waiter = null; w.resolve(closes.splice(0, w.n)); }
  };
  const server = net.createServer((down) => {
    const up = net.connect({ host: to.host, port: to.port });
    sockets.add(down); sockets.add(up);
    open++;
    let seen = false;
    const gatewayClosed = () => {
      if (seen) return;
      seen = true;
      open--;
      closes.push(performance.now());
      noted();
    };
    up.once('end', gatewayClosed);
    up.once('close', gatewayClosed);
    const gone = () => { sockets.delete(down); sockets.delete(up); down.destroy(); up.destroy(); };
    down.on('error', gone); up.on('error', gone);
    // The client may hang up first, as soon as it read the gateway's end message (psql on its
    // FATAL): that is the session closing too, at the moment the tap sees it.
    down.on('close', () => { if (!seen) { clientFirst++; gatewayClosed(); } gone(); });
    up.on('close', gone);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    host: '127.0.0.1',
    port: (server.address() as net.AddressInfo).port,
    get open() { return open; },
    get clientFirst() { return clientFirst; },
    nextCloses(n, timeoutMs) {
      closes = [];
      return new Promise<number[]>((resolve, reject) => {
        const t = setTimeout(() => { waiter = null; reject(new Error(`only ${closes.length} of ${n} connections closed within ${timeoutMs} ms`)); }, timeoutMs);
        waiter = { n, resolve: (v) => { clearTimeout(t); resolve(v); } };
        noted();
      });
    },
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}
