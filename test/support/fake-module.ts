/**
 * A protocol module with a one-line wire protocol, for testing the proxy's lifecycle (leases,
 * locks, expiry, kill, reaper, the protocol contract) without a real client. Its "target" is an
 * in-memory set of accounts, so tests can see exactly what exists on it, and can make minting or
 * revoking fail.
 *
 * The protocol (TCP, through the shared front door): the client sends `LOGIN <user> <secret>\n`;
 * the gateway answers `OK <account>\n` once the account is minted, or `ERR <code> <message>\n` and
 * closes; when the session ends the gateway sends `END <code> <message>\n` and closes. The client
 * ends the session by closing the connection.
 */
import type { Duplex } from 'node:stream';
import net from 'node:net';
import type { ProtocolContext, ProtocolModule, LiveSession, EndReason, RefusalCode } from '../../protocols/types.js';
import type { LeaseRecord } from '../../proxy/store/types.js';
import type { TargetConfig } from '../../protocols/config.js';
import { Secret } from '../../auth/secret.js';
import { formatAddr, listenTcp } from '../../protocols/net.js';

export const FAKE_LEASE_KIND = 'fake-account';

export class FakeTarget {
  accounts = new Set<string>();
  revokeCalls: string[] = [];
  failMint = false;
  /** The next mint fails (once). */
  failNextMint = false;
  /** Revokes throw, as when the target cannot be reached. */
  failRevoke = false;
  /** Revokes resolve without confirming: a module bug the proxy must not take for a revoke. */
  silentRevoke = false;
  /** The live connection behind each minted account: drop() is the target closing it. */
  private links = new Map<string, () => void>();

  link(account: string, drop: () => void): void { this.links.set(account, drop); }
  unlink(account: string): void { this.links.delete(account); }
  /** The target ends the connection of this account (a crash, a restart). */
  drop(account: string): void { this.links.get(account)?.(); }
}

/** One line of the fake protocol; the message never holds a line break. */
function line(...parts: string[]): string {
  return `${parts.join(' ').replace(/[\r\n]+/g, ' ')}\n`;
}

export function fakeModule(target: FakeTarget): ProtocolModule & { ctx?: ProtocolContext } {
  const refuse = (sock: Duplex, code: RefusalCode | string, message: string) => { sock.end(line('ERR', code, message)); };
  const mod: ProtocolModule & { ctx?: ProtocolContext } = {
    name: 'fake',
    defaultPort: 0,
    leaseKinds: {
      [FAKE_LEASE_KIND]: {
        holds: 'an account on the in-memory target',
        async revoke(_ctx: ProtocolContext, _t: TargetConfig, lease: LeaseRecord) {
          const name = String(lease.data['account']);
          target.revokeCalls.push(name);
          if (target.failRevoke) throw new Error('the fake target cannot be reached');
          if (target.silentRevoke) return undefined as never;
          const existed = target.accounts.delete(name);
          return { revoked: true, detail: existed ? `account ${name} deleted` : `account ${name} was already gone` };
        },
      },
    },
    refuse,
    async listen(ctx, address) {
      mod.ctx = ctx;
      return listenTcp(address, ctx.log, 'fake', (sock, preauth) => new Promise<void>((resolve) => {
        preauth.onTimeout((message) => refuse(sock, 'timeout', message));
        let buf = '';
        const onData = (d: Buffer) => {
          buf += d.toString('utf8');
          const i = buf.indexOf('\n');
          if (i < 0) { if (buf.length > 4096) refuse(sock, 'denied', 'line too long'); return; }
          sock.off('data', onData);
          const [verb, username = '', secret = ''] = buf.slice(0, i).trim().split(' ');
          if (verb !== 'LOGIN') { refuse(sock, 'denied', 'say LOGIN <user> <secret>'); resolve(); return; }
          preauth.signedIn();
          void serve(ctx, target, sock, username, secret).finally(resolve);
        };
        sock.on('data', onData);
        sock.on('close', () => resolve());
      }), { clock: ctx.clock });
    },
    clientCommands: (i) => ({
      fake: `fake --user ${i.username} --secret ${i.secret}`,
      // A connection file (like RDP's .rdp): the portal offers it as a download.
      'fake (.fakeconf file)': `host:s:${i.host}:${i.port}\nusername:s:${i.username}`,
    }),
  };
  return mod;
}

/** One signed-in connection: the session runs in withSession, so it ends on every path. */
async function serve(ctx: ProtocolContext, target: FakeTarget, sock: net.Socket, username: string, secret: string): Promise<void> {
  const clientAddr = formatAddr(sock.remoteAddress, sock.remotePort);
  const out = await ctx.access.authenticate({ protocol: 'fake', username, clientAddr, secret: new Secret(secret) });
  if (!out.ok) { sock.end(line('ERR', out.code, out.reason)); return; }
  try {
    await ctx.sessions.withSession(out.auth, { protocol: 'fake', clientAddr, client: sock }, async (session) => {
      const bye = (r: EndReason) => { if (!sock.destroyed) sock.end(line('END', r.code, r.message)); };
      session.onTerminate((r) => { bye(r); void session.end(r); });
      const account = `tg-${out.auth.principal.sub}-${Math.random().toString(36).slice(2, 6)}`;
      await session.lease(FAKE_LEASE_KIND, { account }, async () => {
        if (target.failMint || target.failNextMint) { target.failNextMint = false; throw new Error('target refused'); }
        target.accounts.add(account);
        return { credential: account };
      });
      target.link(account, () => {
        const r: EndReason = { code: 'target_closed', message: 'the fake target closed the connection' };
        bye(r);
        void session.end(r);
      });
      sock.write(line('OK', account));
      const reason = await session.ending;
      target.unlink(account);
      bye(reason);
      return reason;
    });
  } catch (e) {
    if (!sock.destroyed) sock.end(line('ERR', 'error', `Tollgate: ${(e as Error).message}`));
  }
}

/** A fake client connection in-process: authenticates, opens a session, mints an account, obeys terminate. */
export async function fakeConnect(ctx: ProtocolContext, target: FakeTarget, username: string, secret: string) {
  const out = await ctx.access.authenticate({ protocol: 'fake', username, clientAddr: '127.0.0.1:1', secret: new Secret(secret) });
  if (!out.ok) return { ok: false as const, code: out.code, reason: out.reason };
  const session: LiveSession = await ctx.sessions.open(out.auth, { protocol: 'fake', clientAddr: '127.0.0.1:1' });
  const ended: EndReason[] = [];
  const warnings: string[] = [];
  session.onTerminate((r) => { ended.push(r); void session.end(r); });
  session.onWarning((m) => warnings.push(m));
  const account = `tg-${out.auth.principal.sub}-${Math.random().toString(36).slice(2, 6)}`;
  await session.lease(FAKE_LEASE_KIND, { account }, async () => {
    if (target.failMint) throw new Error('target refused');
    target.accounts.add(account);
    return { credential: account };
  });
  return { ok: true as const, session, account, ended, warnings };
}

/** A client of the fake protocol over TCP: every line the gateway sent, and when it closed. */
export function fakeClient(host: string, port: number) {
  const sock = net.connect({ host, port });
  const lines: string[] = [];
  let buf = '';
  const waiters: (() => void)[] = [];
  const wake = () => { for (const w of waiters.splice(0)) w(); };
  sock.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) { lines.push(buf.slice(0, i)); buf = buf.slice(i + 1); }
    wake();
  });
  sock.on('error', () => undefined);
  const closed = new Promise<void>((r) => sock.once('close', () => { wake(); r(); }));
  return {
    sock, lines, closed,
    login(username: string, secret: string) { sock.write(`LOGIN ${username} ${secret}\n`); },
    /** The first line starting with prefix (waits up to ms). */
    async next(prefix: string, ms = 10_000): Promise<string> {
      const until = Date.now() + ms;
      for (;;) {
        const hit = lines.find((l) => l.startsWith(prefix));
        if (hit) return hit;
        if (sock.destroyed || Date.now() > until) throw new Error(`no "${prefix}" line from the gateway (got ${JSON.stringify(lines)})`);
        await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 100).unref(); });
      }
    },
    close() { sock.end(); },
  };
}
