/**
 * Network helpers shared by the protocol modules (their TCP listeners), the demo servers, the tests
 * and the benchmarks (loopback ports).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../policies/clock.js';
import type { CheckStage, ListenerAddress, PreauthLimits, ProtocolContext, ProtocolListener } from './types.js';

/** A port that was free a moment ago (the kernel's pick); callers that race for it retry. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** Resolves once something accepts connections on host:port; rejects after timeoutMs. */
export async function waitPort(host: string, port: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const c = net.connect({ host, port });
      c.once('connect', () => { c.destroy(); res(true); });
      c.once('error', () => { c.destroy(); res(false); });
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${host}:${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A target's `address` as host and port. Forms: `host`, `host:port`, `[v6]`, `[v6]:port`, and a
 * bare IPv6 address (more than one ':', no brackets: it cannot carry a port, so defaultPort
 * applies). The port, when given, is a whole number 1-65535; the host is never empty and has no
 * spaces. Throws with a message that names the address.
 */
export function parseAddress(address: string, defaultPort: number): { host: string; port: number } {
  const a = address.trim();
  let host: string;
  let port: string | undefined;
  const br = /^\[([^\]]*)\](?::(\d*))?$/.exec(a);
  if (br) {
    [, host = '', port] = br;
    if (!net.isIPv6(host)) throw new Error(`not a host[:port] address: ${address} (brackets hold an IPv6 address)`);
  } else if ((a.match(/:/g) ?? []).length > 1) {
    host = a;
    if (!net.isIPv6(host)) throw new Error(`not a host[:port] address: ${address} (an IPv6 address with a port goes in brackets: [::1]:5432)`);
  } else {
    const i = a.indexOf(':');
    host = i < 0 ? a : a.slice(0, i);
    port = i < 0 ? undefined : a.slice(i + 1);
  }
  if (!host || /\s/.test(host)) throw new Error(`not a host[:port] address: ${address}`);
  if (port === undefined) return { host, port: defaultPort };
  const n = /^\d{1,5}$/.test(port) ? Number(port) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new Error(`bad port in ${address} (expected 1-65535)`);
  return { host, port: n };
}

const DIAL_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'EPIPE']);

/**
 * The check stage (CheckResult) an error of a target check belongs to, from what Node and the
 * usual clients say: no connection (dial), TLS or certificates (tls), else `fallback` (what the
 * module was doing when it failed, usually auth).
 */
export function checkStageOf(err: unknown, fallback: CheckStage = 'auth'): CheckStage {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  if (DIAL_CODES.has(code) || /\b(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN)\b|timed? ?out|cannot reach/i.test(msg)) return 'dial';
  if (/^(ERR_TLS|ERR_SSL|CERT_|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_|ERR_OSSL)/.test(code) || /certificate|\bTLS\b|\bSSL\b|self[- ]signed/i.test(msg)) return 'tls';
  return fallback;
}

/** "ip:port" for logs and audit events; IPv6 in brackets so the address can be read back. */
export function formatAddr(ip: string | undefined, port: number | undefined): string {
  const host = ip ?? '?';
  return `${host.includes(':') ? `[${host}]` : host}:${port ?? 0}`;
}

function ipv6Groups(ip: string): number[] | null {
  let s = ip.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    s = `${s.slice(0, -v4[1]!.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const part = (h: string) => (h ? h.split(':').map((g) => parseInt(g, 16)) : []);
  const head = part(halves[0]!);
  const tail = halves.length === 2 ? part(halves[1]!) : [];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 1 ? fill !== 0 : fill < 0) return null;
  const groups = [...head, ...Array<number>(fill).fill(0), ...tail];
  return groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : null;
}

/**
 * The source a peer is counted as, from an address as the listeners report it ("ip", "ip:port",
 * "[v6]:port"): an IPv4 address (also when IPv4-mapped), or an IPv6 /64 (one host usually has a
 * whole /64, so counting single IPv6 addresses would count nothing).
 */
export function sourceOf(addr: string): string {
  let a = addr.trim();
  const br = /^\[([^\]]+)\](?::\d+)?$/.exec(a);
  if (br) a = br[1]!;
  else if (/^\d+\.\d+\.\d+\.\d+:\d+$/.test(a)) a = a.slice(0, a.lastIndexOf(':'));
  if (net.isIPv4(a)) return a;
  if (!net.isIPv6(a)) return a || 'unknown';
  const g = ipv6Groups(a);
  if (!g) return a;
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return `${g[6]! >> 8}.${g[6]! & 0xff}.${g[7]! >> 8}.${g[7]! & 0xff}`;
  return `${g.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64`;
}

/** Pre-authentication bounds when the listener's config does not set them. */
export const DEFAULT_PREAUTH: PreauthLimits = { loginTimeoutMs: 30_000, maxStartups: 256, maxStartupsPerSource: 128 };

/** One accepted connection's time before sign-in, as its protocol handler sees it. */
export interface Preauth {
  /** The source the connection counts against (see sourceOf). */
  readonly source: string;
  /** The client signed in: it no longer counts as unauthenticated and the login timer stops. Idempotent. */
  signedIn(): void;
  /**
   * How to tell the client that the login grace time ran out, in its own protocol; the socket is
   * destroyed shortly after. Without one the socket is simply destroyed.
   */
  onTimeout(tell: (message: string) => void): void;
  /** Allow up to ms from now (e.g. while a person approves the sign-in in a browser); never shortens. */
  extend(ms: number): void;
}

/**
 * Counts unauthenticated connections of one listener, in total and per source (sshd's MaxStartups
 * and PerSourceMaxStartups), and closes those not signed in within the login grace time
 * (sshd's LoginGraceTime).
 */
export class PreauthGate {
  private total = 0;
  private perSource = new Map<string, number>();
  private refusedSinceLog = 0;
  private lastLog = 0;

  constructor(readonly limits: PreauthLimits, private clock: Clock, private log: Logger, private protocol: string) {}

  /** Unauthenticated connections now (tests, metrics). */
  get open(): number { return this.total; }

  /** Admit a new connection, or say why not (the caller refuses it in its protocol). */
  admit(sock: net.Socket): Preauth | { refused: string } {
    const source = sourceOf(sock.remoteAddress ?? 'unknown');
    const mine = this.perSource.get(source) ?? 0;
    if (this.total >= this.limits.maxStartups || mine >= this.limits.maxStartupsPerSource) {
      this.noteRefusal(source);
      return {
        refused: this.total >= this.limits.maxStartups
          ? 'Tollgate: too many connections are signing in right now; try again in a moment.'
          : 'Tollgate: too many unauthenticated connections from your address; try again in a moment.',
      };
    }
    this.total++;
    this.perSource.set(source, mine + 1);
    let counted = true;
    let tell: ((message: string) => void) | null = null;
    let timer: TimerHandle | null = null;
    let due = this.clock.now() + this.limits.loginTimeoutMs;
    const release = () => {
      if (!counted) return;
      counted = false;
      timer?.cancel();
      this.total--;
      const n = (this.perSource.get(source) ?? 1) - 1;
      if (n > 0) this.perSource.set(source, n); else this.perSource.delete(source);
    };
    const expire = () => {
      if (!counted) return;
      const seconds = Math.round(this.limits.loginTimeoutMs / 1000);
      this.log.info({ protocol: this.protocol, source }, 'closing a connection that did not sign in within the login grace time');
      release();
      const message = `Tollgate: not signed in within ${seconds} s; closing the connection.`;
      try { tell?.(message); } catch { /* the socket is going away anyway */ }
      if (!tell) sock.destroy();
      else setTimeout(() => sock.destroy(), 1000).unref();
    };
    const arm = () => {
      timer?.cancel();
      timer = this.clock.setTimer(Math.max(0, due - this.clock.now()), expire);
    };
    arm();
    sock.once('close', release);
    return {
      source,
      signedIn: release,
      onTimeout: (fn) => { tell = fn; },
      extend: (ms) => {
        if (!counted || this.clock.now() + ms <= due) return;
        due = this.clock.now() + ms;
        arm();
      },
    };
  }

  /** Refusals are logged at most once a minute (with a count), so a flood cannot fill the log. */
  private noteRefusal(source: string): void {
    this.refusedSinceLog++;
    const now = Date.now();
    if (now - this.lastLog < 60_000) return;
    this.log.warn({ protocol: this.protocol, source, refused: this.refusedSinceLog, open: this.total, limits: this.limits },
      'refusing connections over the pre-authentication limits');
    this.lastLog = now;
    this.refusedSinceLog = 0;
  }
}

export interface FrontDoorOptions {
  clock: Clock;
}

/**
 * A TCP listener for a protocol's front door: every accepted socket gets TCP_NODELAY and goes to
 * `handle` with its pre-authentication state (login grace time, counted against the caps until
 * it signs in); connections over the caps are refused before any parsing, with the module's own
 * refuse (address.refuse, code `busy`; without one the socket is closed). A handler that throws
 * is logged and its socket destroyed (never the process); close() stops accepting and destroys
 * the open sockets.
 */
export async function listenTcp(
  address: ListenerAddress, log: Logger, protocol: string, handle: (sock: net.Socket, preauth: Preauth) => Promise<void>, opts: FrontDoorOptions,
): Promise<ProtocolListener & { gate: PreauthGate }> {
  const sockets = new Set<net.Socket>();
  const gate = new PreauthGate(address.preauth ?? DEFAULT_PREAUTH, opts.clock, log, protocol);
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => { /* handled by the connection */ });
    sock.setNoDelay(true);
    const admitted = gate.admit(sock);
    if ('refused' in admitted) {
      if (address.refuse) {
        try { address.refuse(sock, 'busy', admitted.refused); } catch { sock.destroy(); }
        setTimeout(() => sock.destroy(), 2000).unref();
      } else sock.destroy();
      return;
    }
    handle(sock, admitted).catch((e) => {
      log.error({ err: (e as Error).message }, `${protocol} connection failed unexpectedly`);
      sock.destroy();
    });
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(address.port, address.host, () => { server.off('error', rej); res(); });
  });
  // Draining: refuse new connections (the load balancer sends them elsewhere); open ones go on.
  address.drain?.addEventListener('abort', () => server.close(), { once: true });
  return {
    host: address.host,
    port: (server.address() as net.AddressInfo).port,
    gate,
    close: () => new Promise<void>((res) => {
      server.close(() => res());
      for (const s of sockets) s.destroy();
    }),
  };
}

/** The gateway's TLS server context, made once on first use. */
export function lazySecureContext(ctx: ProtocolContext): () => tls.SecureContext {
  let secureContext: tls.SecureContext | null = null;
  return () => (secureContext ??= tls.createSecureContext({ cert: ctx.config.tls.cert, key: ctx.config.tls.key.reveal() }));
}
