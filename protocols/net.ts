/**
 * Loopback port helpers shared by the demo servers, the tests and the benchmarks.
 */
import net from 'node:net';

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
