/**
 * `tollgate serve` with gateway.workers: N (or auto): N worker processes behind the same listeners,
 * on one machine (node:cluster). The primary is a small supervisor with no store: it starts the
 * workers one after the other (the first one creates the data dir's keys, TLS and SSH host key,
 * and migrates the store; the others find them), relays the control bus between them (IPC), reaps
 * a worker that dies (through another worker, at once) and starts it again, and drains them all on
 * SIGTERM.
 *
 * The protocol listeners (TCP) are shared by every worker: node:cluster's primary accepts and
 * hands the connections round-robin. uWebSockets.js (the HTTP front) cannot share its port across
 * processes: this build sets no SO_REUSEPORT and cannot adopt an accepted socket (a second
 * process's listen on the port fails). So worker 0 also runs the HTTP front (portal, API, HTTP
 * apps, the browser VNC viewer), the IdP and the policy timers; workers 1…N-1 run the protocol
 * listeners only. Each worker is a node of its own in the registry: <gateway.id>/w<n>.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import pino from 'pino';
import type { ControlEventRecord } from '../store/types.js';
import type { GatewayConfig } from '../config.js';
import { clusterTimings, workerCount } from './config.js';

/** Messages between the primary and its workers. */
type ToPrimary =
  | { tg: 'ready'; publicUrl: string }
  | { tg: 'bus'; e: ControlEventRecord }
  | { tg: 'failed'; message: string };
type ToWorker =
  | { tg: 'bus'; e: ControlEventRecord }
  | { tg: 'peers-ready'; ready: boolean }
  | { tg: 'lost'; node: string }
  | { tg: 'drain' }
  | { tg: 'stop' };

interface WorkerEnv { index: number; publicUrl?: string }

const RESTART_MS = 1_000;

export function isWorkerProcess(): boolean {
  return cluster.isWorker && !!process.env['TOLLGATE_WORKER'];
}

/** The primary: start, supervise and drain the workers. Resolves when they have all exited after a signal. */
export async function runPrimary(config: GatewayConfig, log: Logger = pino({ level: config.gateway.logLevel })): Promise<void> {
  const n = workerCount(config.gateway.workers);
  const workers = new Map<number, Worker>();
  let publicUrl: string | undefined;
  let stopping = false;
  const started = new Set<number>();

  const send = (i: number, m: ToWorker) => { const w = workers.get(i); if (w?.isConnected()) w.send(m); };
  const broadcast = (m: ToWorker, except?: number) => { for (const i of workers.keys()) if (i !== except) send(i, m); };

  const fork = (i: number) => new Promise<void>((resolve, reject) => {
    const env: WorkerEnv = { index: i, ...(publicUrl ? { publicUrl } : {}) };
    const w = cluster.fork({ TOLLGATE_WORKER: JSON.stringify(env) });
    workers.set(i, w);
    let ready = false;
    w.on('message', (m: ToPrimary) => {
      if (m?.tg === 'ready') {
        ready = true;
        started.add(i);
        if (i === 0) publicUrl = m.publicUrl;
        log.info({ worker: i, pid: w.process.pid }, 'worker ready');
        resolve();
      } else if (m?.tg === 'bus') {
        broadcast({ tg: 'bus', e: m.e }, i);
      } else if (m?.tg === 'failed') {
        reject(new Error(`worker ${i}: ${m.message}`));
      }
    });
    w.on('exit', (code, signal) => {
      if (workers.get(i) === w) workers.delete(i);
      if (!ready) { reject(new Error(`worker ${i} exited before it was ready (${signal ?? code})`)); return; }
      if (stopping) return;
      log.error({ worker: i, code, signal }, 'a worker exited; its sessions are reaped and it is started again');
      const node = `${config.gateway.id}/w${i}`;
      // Another worker claims it lost and reaps it now (revokes its leases), without waiting for nodeTimeout.
      const reaper = [...workers.keys()].find((k) => started.has(k));
      if (reaper !== undefined) send(reaper, { tg: 'lost', node });
      if (i !== 0) send(0, { tg: 'peers-ready', ready: false });
      setTimeout(() => {
        if (stopping) return;
        fork(i).then(() => send(0, { tg: 'peers-ready', ready: workers.size === n }), (e: Error) => log.error({ err: e.message }, 'restarting a worker failed'));
      }, RESTART_MS).unref();
    });
  });

  const done = new Promise<void>((resolve) => {
    const shutdown = (how: 'drain' | 'stop') => {
      if (stopping) return;
      stopping = true;
      log.info({ how }, how === 'drain' ? 'draining the workers' : 'stopping the workers');
      broadcast({ tg: how });
      const grace = (how === 'drain' ? clusterTimings(config.gateway).drainTimeoutMs : 0) + 15_000;
      const force = setTimeout(() => { for (const w of workers.values()) w.process.kill('SIGKILL'); }, grace);
      force.unref();
      const check = () => { if (!workers.size) { clearTimeout(force); resolve(); } };
      cluster.on('exit', check);
      check();
    };
    // on, not once: a second signal while draining must not kill the primary (its default action) and orphan the drain.
    process.on('SIGTERM', () => shutdown('drain'));
    process.on('SIGINT', () => shutdown('stop'));
  });

  try {
    for (let i = 0; i < n; i++) await fork(i);
  } catch (e) {
    stopping = true;
    for (const w of workers.values()) w.process.kill('SIGKILL');
    throw e;
  }
  send(0, { tg: 'peers-ready', ready: true });
  process.stdout.write(`Tollgate is running at ${publicUrl} (${n} worker processes)\n`);
  await done;
}

/** Stop a gateway once, draining first (SIGTERM) or not (Ctrl-C), then exit. */
export function shutdownOnce(gw: { drain(): Promise<void>; stop(): Promise<void> }): (drain: boolean) => Promise<void> {
  let stopping = false;
  return async (drain) => {
    if (stopping) return;
    stopping = true;
    if (drain) await gw.drain();
    await gw.stop();
    process.exit(0);
  };
}

/** A worker process: its gateway, and the primary's messages. */
export async function runWorker(config: GatewayConfig): Promise<void> {
  const env = JSON.parse(process.env['TOLLGATE_WORKER'] ?? '{}') as WorkerEnv;
  const { Gateway } = await import('../gateway.js');
  const gw = new Gateway({ config, worker: { index: env.index, role: env.index === 0 ? 'all' : 'listeners', publicUrl: env.publicUrl } });
  (await import('../safety.js')).protectGateway(gw);
  const toPrimary = (m: ToPrimary) => { if (process.connected) process.send?.(m); };
  try {
    await gw.start();
  } catch (e) {
    toPrimary({ tg: 'failed', message: (e as Error).message });
    await gw.stop().catch(() => undefined);
    process.exit(1);
  }
  if (env.index === 0) gw.cluster.peersReady = false;
  gw.cluster.bus.attachIpc((e) => toPrimary({ tg: 'bus', e }));
  const stop = shutdownOnce(gw);
  process.on('message', (m: ToWorker) => {
    if (m?.tg === 'bus') gw.cluster.receive(m.e);
    else if (m?.tg === 'peers-ready') gw.cluster.peersReady = m.ready;
    else if (m?.tg === 'lost') void gw.cluster.workerExited(m.node).catch((e: Error) => gw.log.error({ err: e.message }, 'reaping a worker failed'));
    else if (m?.tg === 'drain') void stop(true);
    else if (m?.tg === 'stop') void stop(false);
  });
  // The primary went away: stop (its listeners are gone with it).
  process.on('disconnect', () => { void stop(false); });
  // Signals go to the primary, which tells the workers (a terminal's Ctrl-C reaches the whole group).
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => undefined);
  toPrimary({ tg: 'ready', publicUrl: gw.publicUrl });
}
