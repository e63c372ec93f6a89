/**
 * Before sign-in the SSH listener tells an anonymous client nothing about which targets exist:
 * no banner lists them, an unknown target or role reads exactly like a wrong secret, and a public
 * key for an unknown target is declined like any unregistered key (the client goes on to its
 * password) instead of being told "no such target". Real OpenSSH client; no target server needed.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { startTestGateway } from '../support/gateway.js';
import { runClient, SSH_OPTS } from '../support/sshd.js';

const tg = await startTestGateway({
  targets: [{ name: 'web01', protocol: 'ssh', address: '127.0.0.1:9', roles: [{ name: 'user' }], credentials: { mode: 'ephemeral-account', admin: { username: 'root', password: { value: 'x' } } } }],
  listeners: ['ssh'],
});
t.teardown(() => tg.close());
const port = String(tg.listener('ssh').port);
const dir = mkdtempSync(join(tmpdir(), 'tg-banner-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const key = join(dir, 'id_ed25519');
spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);

/** What OpenSSH prints for user@gateway with a wrong secret (and optionally an unregistered key first). */
async function attempt(t: Test, user: string, withKey = false): Promise<string> {
  const opts = withKey
    ? ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'IdentitiesOnly=yes', '-i', key, '-o', 'PreferredAuthentications=publickey,password']
    : SSH_OPTS;
  const r = await runClient('not-the-secret', 'ssh', ['-p', port, '-o', 'NumberOfPasswordPrompts=1', `${user}@127.0.0.1`, 'true'], { extraOpts: opts, timeoutMs: 20_000 });
  t.not(r.code, 0, `${user}: refused`);
  return r.stderr.replace(/^Warning: Permanently added.*\n/m, '').replace(/\r/g, '');
}

t.test('an unknown target or role reads like a wrong secret for an existing one', async (t) => {
  const known = await attempt(t, 'web01');
  const unknownTarget = await attempt(t, 'db-prod-7');
  const unknownRole = await attempt(t, 'web01:root');
  t.match(known, /Tollgate: wrong connection secret for web01\./);
  t.match(unknownTarget, /Tollgate: wrong connection secret for db-prod-7\./);
  t.match(unknownRole, /Tollgate: wrong connection secret for web01:root\./);
  t.equal(unknownTarget.replace(/db-prod-7/g, 'X'), known.replace(/web01/g, 'X'), 'the same words, line for line');
  for (const out of [known, unknownTarget, unknownRole]) t.notMatch(out, /no target|no role/, 'nothing about which names exist');
  const audit = await tg.store.listAudit({ action: 'access.refused' });
  t.ok(audit.some((a) => a.data.code === 'unknown_target' && a.data.username === 'db-prod-7'), 'the audit keeps the real reason');
  t.ok(audit.some((a) => a.data.code === 'unknown_role' && a.data.username === 'web01:root'));
});

t.test('an unregistered key for an unknown target is just declined: the client goes on to its password', async (t) => {
  const out = await attempt(t, 'db-prod-7', true);
  t.notMatch(out, /no target named/, 'not told that the target does not exist');
  t.match(out, /Tollgate: wrong connection secret for db-prod-7\./, 'the password was asked for and refused like any other');
});
