/**
 * A TCP forwarder in front of a real server, for the tests that need the target to misbehave:
 * refuse() makes it refuse new connections (the target is unreachable: admin logins, revokes and
 * mints fail), cut() closes every connection through it (the target dropped the session).
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
  close(): Promise<void>;
}

export async function startForwarder(to: { host: string; port: number }, t?: { teardown(fn: () => unknown): void }): Promise<Forwarder> {
  const open = new Set<net.Socket>();
  let refusing = false;
  const server = net.createServer((down) => {
    if (refusing) { down.destroy(); return; }
    const up = net.connect({ host: to.host, port: to.port });
    open.add(down);
    open.add(up);
    const gone = () => { open.delete(down); open.delete(up); down.destroy(); up.destroy(); };
    down.on('error', gone);
    up.on('error', gone);
    down.on('close', gone);
    up.on('close', gone);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const f: Forwarder = {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    refuse: () => { refusing = true; },
    allow: () => { refusing = false; },
    cut: () => { for (const s of [...open]) s.destroy(); },
    close: () => new Promise<void>((r) => { for (const s of open) s.destroy(); server.close(() => r()); }),
  };
  t?.teardown(() => f.close());
  return f;
}
