/**
 * A protocol module with no wire protocol, for testing the proxy's lifecycle (leases, locks,
 * expiry, kill, reaper) without a network client. Its "target" is an in-memory set of accounts,
 * so tests can see exactly what exists on it.
 */
import type { ProtocolContext, ProtocolModule, LiveSession, EndReason } from '../../protocols/types.js';
import type { LeaseRecord } from '../../proxy/store/types.js';
import type { TargetConfig } from '../../protocols/config.js';

export class FakeTarget {
  accounts = new Set<string>();
  revokeCalls: string[] = [];
  failMint = false;
}

export function fakeModule(target: FakeTarget): ProtocolModule & { ctx?: ProtocolContext } {
  const mod: ProtocolModule & { ctx?: ProtocolContext } = {
    name: 'fake',
    defaultPort: 0,
    async listen(ctx, address) {
      mod.ctx = ctx;
      return { host: address.host, port: 1, close: async () => undefined };
    },
    async revokeLease(_ctx: ProtocolContext, _t: TargetConfig, lease: LeaseRecord) {
      const name = String(lease.data['account']);
      target.revokeCalls.push(name);
      target.accounts.delete(name);
    },
    clientCommands: (i) => ({
      fake: `fake --user ${i.username} --secret ${i.secret}`,
      // A connection file (like RDP's .rdp): the portal offers it as a download.
      'fake (.fakeconf file)': `host:s:${i.host}:${i.port}\nusername:s:${i.username}`,
    }),
  };
  return mod;
}

/** A fake client connection: authenticates, opens a session, mints an account, obeys terminate. */
export async function fakeConnect(ctx: ProtocolContext, target: FakeTarget, username: string, secret: string) {
  const { Secret } = await import('../../auth/secret.js');
  const out = await ctx.authenticate({ protocol: 'fake', username, clientAddr: '127.0.0.1:1', secret: new Secret(secret) });
  if (!out.ok) return { ok: false as const, code: out.code, reason: out.reason };
  const session: LiveSession = await ctx.openSession(out.auth, { protocol: 'fake', clientAddr: '127.0.0.1:1' });
  const ended: EndReason[] = [];
  const warnings: string[] = [];
  session.onTerminate((r) => { ended.push(r); void session.end(r); });
  session.onWarning((m) => warnings.push(m));
  const account = `tg-${out.auth.principal.sub}-${Math.random().toString(36).slice(2, 6)}`;
  await session.lease('fake-account', { account }, async () => {
    if (target.failMint) throw new Error('target refused');
    target.accounts.add(account);
    return { credential: account };
  });
  return { ok: true as const, session, account, ended, warnings };
}
