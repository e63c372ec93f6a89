/**
 * A TCP forwarder in front of a real server, for the tests that need the target to misbehave:
 * refuse() makes it refuse new connections (the target is unreachable: admin logins, revokes and
 * mints fail), cut() closes every connection through it (the target dropped the session),
 * stall() stops forwarding while keeping every connection open (a server that hangs: SIGSTOP, a
 * network partition that drops packets) until flow().
 */
import net from 'node:net';

export interface Forwarder {
  /** host:port to configure as the target's address. */
  readonly address: string;
  /** New connections are refused (closed at once) until allow(). */
  refuse(): void;
  allow(): void;
  /** Close every connection through the forwarder now. */
  cut(): void;
  /** Stop forwarding (connections stay open, new ones are accepted and held) until flow(). */
  stall(): void;
  flow(): void;
  close(): Promise<void>;
}

export async function startForwarder(to: { host: string; port: number }, t?: { teardown(fn: () => unknown): void }): Promise<Forwarder> {
  const open = new Set<net.Socket>();
  let refusing = false;
  let stalled = false;
  const pairs = new Set<{ down: net.Socket; up: net.Socket }>();
  const server = net.createServer((down) => {
    if (refusing) { down.destroy(); return; }
    const up = net.connect({ host: to.host, port: to.port });
    open.add(down);
    open.add(up);
    const pair = { down, up };
    pairs.add(pair);
    down.once('close', () => pairs.delete(pair));
    const gone = () => { open.delete(down); open.delete(up); down.destroy(); up.destroy(); };
    down.on('error', gone);
    up.on('error', gone);
    down.on('close', gone);
    up.on('close', gone);
    if (stalled) { down.pause(); up.pause(); return; }
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const f: Forwarder = {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    refuse: () => { refusing = true; },
    allow: () => { refusing = false; },
    cut: () => { for (const s of [...open]) s.destroy(); },
    stall: () => {
      stalled = true;
      for (const p of pairs) { p.down.unpipe(p.up); p.up.unpipe(p.down); p.down.pause(); p.up.pause(); }
    },
    flow: () => {
      stalled = false;
      for (const p of pairs) { p.down.pipe(p.up); p.up.pipe(p.down); p.down.resume(); p.up.resume(); }
    },
    close: () => new Promise<void>((r) => { for (const s of open) s.destroy(); server.close(() => r()); }),
  };
  t?.teardown(() => f.close());
  return f;
}
