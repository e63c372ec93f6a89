/** The protocol contract for SSH: a real OpenSSH sshd behind a cuttable forwarder (ephemeral accounts), ssh2 as the client. */
import t from 'tap';
import ssh2 from 'ssh2';
import { conformance } from '../support/conformance.js';
import { startForwarder } from '../support/forwarder.js';
import { haveSshd, startTestSshd, userExists } from '../support/sshd.js';
import { parseAddress } from '../../protocols/net.js';

if (!haveSshd) {
  t.fail('needs root and OpenSSH sshd (apt-get install openssh-server)');
} else {
  const env = await startTestSshd(t, { eph: 'ssh-c', cert: 'ssh-c-cert', pw: 'ssh-c-pw' });
  const eph = env.targets.find((x) => x.name === 'ssh-c')!;
  const fwd = await startForwarder(parseAddress(eph.address, 22), t);
  const base = { ...eph, address: fwd.address, risk: 'low' };

  await conformance(t, {
    module: 'ssh',
    listener: 'ssh',
    targets: [
      { ...base, name: 'ssh-c' },
      // useradd fails on a group the target does not have, after the lease is stored: the revoke finds nothing to delete.
      { ...base, name: 'ssh-c-mintfail', roles: [{ name: 'broken', groups: ['tgnosuchgroup'] }] },
    ],
    target: 'ssh-c',
    role: 'user',
    mintFailure: { target: 'ssh-c-mintfail', role: 'broken' },
    async connect(tg, s) {
      const { host, port } = tg.listener('ssh');
      const c = new ssh2.Client();
      const texts: string[] = [];
      let done!: (text: string) => void;
      const ended = new Promise<string>((r) => { done = r; });
      c.on('banner', (m: string) => texts.push(m.trim()));
      c.on('error', (e: Error & { description?: string }) => texts.push(e.description ?? e.message));
      c.on('close', () => done(texts.join('\n')));
      // A person's shell: what the gateway says at the end is written there.
      // In once the target's shell said something (the channel opens before the upstream is dialled).
      const shell = new Promise<void>((r) => c.on('ready', () => c.shell((err, stream) => {
        if (err) { texts.push(err.message); r(); return; }
        stream.on('data', (d: Buffer) => { texts.push(d.toString('utf8')); r(); });
        stream.stderr.on('data', (d: Buffer) => { texts.push(d.toString('utf8')); r(); });
      })));
      c.connect({ host, port, username: s.username, password: s.secret, tryKeyboard: false, readyTimeout: 15_000 });
      await Promise.race([shell, ended]);
      return { close: () => { c.end(); }, ended };
    },
    exists: async (_tg, lease) => userExists(String(lease.data['account'])),
    breakTarget: async () => { fwd.refuse(); return () => fwd.allow(); },
    dropTarget: () => fwd.cut(),
    refusal: { expect: /Tollgate: wrong connection secret for ssh-c/ },
    frontDoor: { expect: /^Tollgate: too many connections are signing in/ },
    killText: /session terminated by carol: conformance/,
  });
}
