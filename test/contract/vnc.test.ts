/** The protocol contract for VNC: x11vnc on Xvfb behind a cuttable forwarder, the tests' RFB client (VeNCrypt X509Plain). */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { conformance } from '../support/conformance.js';
import { startForwarder } from '../support/forwarder.js';
import { startDesktop } from '../../protocols/vnc/demo.js';
import { have, rfbLogin } from '../vnc/client.js';

if (!have('Xvfb') || !have('x11vnc')) {
  t.fail('missing Xvfb or x11vnc (apt-get install xvfb x11vnc)');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'tg-vnc-contract-'));
  const desktop = await startDesktop(join(dir, 'server'), { size: '640x480x24', xterm: false });
  if (!desktop) throw new Error('the desktop did not start');
  t.teardown(async () => { await desktop.stop(); rmSync(dir, { recursive: true, force: true }); });
  const fwd = await startForwarder({ host: '127.0.0.1', port: desktop.port }, t);
  // The admin hook after the password file is written: fails while `broken` exists (every time), or once for `failOnce`.
  const broken = join(dir, 'broken');
  const failOnce = join(dir, 'fail-once');
  const hook = (flag: string, once: boolean) => ['sh', '-c', `if [ -e '${flag}' ]; then ${once ? `rm -f '${flag}'; ` : ''}echo refused >&2; exit 3; fi; cat >/dev/null`];
  const base = { protocol: 'vnc', address: fwd.address, risk: 'low', roles: [{ name: 'operator', clipboard: 'both' }] };
  const seen = new Map<string, Buffer>();

  await conformance(t, {
    module: 'vnc',
    listener: 'vnc',
    targets: [
      { ...base, name: 'vnc-c', credentials: { passwordFile: desktop.passwordFile, installCommand: hook(broken, false) } },
      { ...base, name: 'vnc-c-mintfail', credentials: { passwordFile: desktop.passwordFile, installCommand: hook(failOnce, true) } },
    ],
    target: 'vnc-c',
    role: 'operator',
    mintFailure: { target: 'vnc-c-mintfail', role: 'operator', arm: () => writeFileSync(failOnce, '') },
    async connect(tg, s) {
      const { host, port } = tg.listener('vnc');
      const r = await rfbLogin({ host, port, ca: tg.gw.tls.ca, username: s.username, password: s.secret }).catch((e: Error) => ({ ok: false as const, reason: e.message, sock: null, closed: Promise.resolve(0) }));
      if (!r.ok || !r.sock) return { close: () => undefined, ended: Promise.resolve(r.reason ?? '') };
      // The viewer keeps reading what the relay sends.
      'reader' in r && r.reader.detach();
      r.sock.on('data', () => undefined);
      r.sock.resume();
      const sock = r.sock;
      return { close: () => { sock.end(); }, ended: r.closed.then(() => '') };
    },
    // The minted password is in the server's password file while the session runs; revoking replaces it.
    minted: (_tg, lease) => { seen.set(lease.id, readFileSync(desktop.passwordFile)); },
    exists: async (_tg, lease) => {
      const then = seen.get(lease.id);
      return !!then && existsSync(desktop.passwordFile) && readFileSync(desktop.passwordFile).equals(then);
    },
    breakTarget: async () => { writeFileSync(broken, ''); return () => rmSync(broken, { force: true }); },
    dropTarget: () => fwd.cut(),
    refusal: { expect: /Tollgate: wrong connection secret for vnc-c/ },
    frontDoor: { greet: (sock) => sock.write('RFB 003.008\n'), expect: /too many connections are signing in/ },
  });
}
