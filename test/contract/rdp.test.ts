/**
 * The protocol contract for RDP: the tests' RDP target (test/rdp/fake-target.ts: X.224, TLS, MCS,
 * then a desktop) behind a cuttable forwarder, sessions minting a per-session password in a SAM
 * file (and, for the failed mint, a local Linux account), the tests' scripted RDP client.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { conformance } from '../support/conformance.js';
import { startForwarder } from '../support/forwarder.js';
import { userExists } from '../support/sshd.js';
import { ensureTlsMaterial } from '../../proxy/tls.js';
import { disconnectFrame } from '../../protocols/rdp/frontend.js';
import { fakeRdpTarget } from '../rdp/fake-target.js';
import { login } from '../rdp/client.js';

if (process.getuid?.() !== 0) {
  t.fail('must run as root (the failed-mint path creates a local account)');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'tg-rdp-contract-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const m = ensureTlsMaterial(join(dir, 'target-tls'), ['127.0.0.1']);
  const fake = await fakeRdpTarget({ cert: m.cert, key: m.key.reveal() }, { width: 640, height: 480 }, (s) => { s.on('data', () => undefined); });
  t.teardown(() => fake.close());
  const fwd = await startForwarder({ host: '127.0.0.1', port: fake.port }, t);
  const sam = join(dir, 'SAM');
  writeFileSync(sam, '', { mode: 0o600 });
  const seen = new Map<string, string>();

  await conformance(t, {
    module: 'rdp',
    listener: 'rdp',
    targets: [
      { name: 'rdp-c', protocol: 'rdp', address: fwd.address, risk: 'low', roles: [{ name: 'user' }], credentials: { mode: 'sam-file', path: sam, user: 'tguser' } },
      // useradd fails on a group this host does not have, after the lease is stored: the revoke finds nothing to delete.
      { name: 'rdp-c-mintfail', protocol: 'rdp', address: fwd.address, risk: 'low', roles: [{ name: 'broken', groups: ['tgnosuchgroup'] }], credentials: { mode: 'local-account', prefix: 'tgc-' } },
    ],
    target: 'rdp-c',
    role: 'user',
    mintFailure: { target: 'rdp-c-mintfail', role: 'broken' },
    async connect(tg, s) {
      const c = await login(tg.listener('rdp').port, s.username, s.secret).catch((e: Error) => e);
      // Hung up before the client finished its sequence: that is what it saw.
      if (c instanceof Error) return { close: () => undefined, ended: Promise.resolve(c.message) };
      const got: Buffer[] = [];
      c.sock.on('data', (d: Buffer) => got.push(d));
      c.sock.on('error', () => undefined);
      c.sock.resume();
      // RDP shows no text: what the client sees is the gateway's Disconnect Provider Ultimatum, then the close.
      const ended = new Promise<string>((r) => c.sock.once('close', () => r(Buffer.concat(got).toString('hex'))));
      // In once the target's first PDU (its Demand Active) came through the relay.
      await Promise.race([ended, new Promise<void>((r) => c.sock.once('data', () => r()))]);
      return { close: () => { c.sock.destroy(); }, ended };
    },
    minted: (_tg, lease) => { seen.set(lease.id, readFileSync(sam, 'utf8')); },
    exists: async (_tg, lease) => {
      if (lease.kind === 'rdp-linux-account') return userExists(String(lease.data['account']));
      // The session's password is the SAM entry written for it; revoking rotates it.
      return readFileSync(sam, 'utf8') === seen.get(lease.id);
    },
    // The SAM file cannot be written while a directory stands in its place.
    breakTarget: async () => {
      renameSync(sam, `${sam}.aside`);
      mkdirSync(sam);
      return () => { rmSync(sam, { recursive: true }); renameSync(`${sam}.aside`, sam); };
    },
    dropTarget: () => fwd.cut(),
    refusal: { expect: new RegExp(disconnectFrame().toString('hex')) },
    frontDoor: { expect: 'closed' },
  });
}
