import t from 'tap';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import ssh2 from 'ssh2';
import { signCertificate, parseCertificate, loadOrCreateCa, mintSessionKey, fingerprintOf, generateEd25519, ed25519Raw } from '../../protocols/ssh/cert.js';
import { CertAgent, patchCertPublickey } from '../../protocols/ssh/cert-agent.js';
import { haveSshd, startTestSshd } from '../support/sshd.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-cert-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('certificate format: ssh-keygen -L reads what we sign', async (t) => {
  const ca = loadOrCreateCa(join(dir, 'data'));
  t.equal((readFileSync(join(dir, 'data', 'ssh', 'ca_ed25519')).length > 0), true);
  const again = loadOrCreateCa(join(dir, 'data'));
  t.equal(again.publicLine, ca.publicLine, 'the CA persists under dataDir');
  const { key, publicLine } = mintSessionKey();
  const now = Math.floor(Date.now() / 1000);
  const cert = signCertificate(ca.key, {
    publicKey: key.getPublicSSH(), serial: 1234567890123n, keyId: 'tollgate:s1:alice', principals: ['alice-login', 'ops'],
    validAfter: now - 60, validBefore: now + 3600, extensions: ['permit-pty', 'permit-port-forwarding'],
  });
  const f = join(dir, 'id-cert.pub');
  writeFileSync(f, `ssh-ed25519-cert-v01@openssh.com ${cert.toString('base64')}\n`);
  const r = spawnSync('ssh-keygen', ['-L', '-f', f], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /Type: ssh-ed25519-cert-v01@openssh.com user certificate/);
  t.match(r.stdout, /Serial: 1234567890123/);
  t.match(r.stdout, /Key ID: "tollgate:s1:alice"/);
  t.match(r.stdout, /Principals: \n\s+alice-login\n\s+ops/);
  t.match(r.stdout, /permit-port-forwarding/);
  t.match(r.stdout, /permit-pty/);
  t.notMatch(r.stdout, /permit-agent-forwarding/);
  t.match(r.stdout, new RegExp(`Signing CA: ED25519 ${fingerprintOf(ca.key.getPublicSSH()).replace(/[+/]/g, '\\$&')}`));
  const info = parseCertificate(cert);
  t.equal(info.serial, 1234567890123n);
  t.same(info.principals, ['alice-login', 'ops']);
  t.equal(info.validBefore, now + 3600);
  t.same(info.publicKey, key.getPublicSSH());
  t.equal(publicLine.startsWith('ssh-ed25519 '), true);
  // A tampered certificate fails ssh-keygen's signature check.
  const bad = Buffer.from(cert); bad[60] = bad[60]! ^ 1;
  writeFileSync(f, `ssh-ed25519-cert-v01@openssh.com ${bad.toString('base64')}\n`);
  t.not(spawnSync('ssh-keygen', ['-L', '-f', f], { encoding: 'utf8' }).status, 0, 'tampered certificate rejected');
});

t.test('generated ed25519 keys always round-trip (ssh2 drops a leading zero byte about once in 256)', async (t) => {
  let ok = 0;
  for (let i = 0; i < 1500; i++) {
    const k = generateEd25519();
    const again = ssh2.utils.parseKey(k.private);
    if (!(again instanceof Error) && !Array.isArray(again) && ed25519Raw(again.getPublicSSH()).length === 32) ok++;
  }
  t.equal(ok, 1500);
});

t.test('ssh2 logs in to OpenSSH sshd with the certificate (CertAgent + publickey step)', { skip: !haveSshd && 'needs root and /usr/sbin/sshd' }, async (t) => {
  const env = await startTestSshd(t);
  const ca = loadOrCreateCa(join(dir, 'data'));
  writeFileSync(env.sshd.trustedCaFile, ca.publicLine + '\n');
  const login = env.accounts.certLogin;
  const tryLogin = (principals: string[], validBefore: number) => new Promise<string>((resolve, reject) => {
    const { key } = mintSessionKey();
    const now = Math.floor(Date.now() / 1000);
    const cert = signCertificate(ca.key, { publicKey: key.getPublicSSH(), serial: 7n, keyId: 'test', principals, validAfter: now - 60, validBefore, extensions: ['permit-pty'] });
    const c = new ssh2.Client();
    c.on('ready', () => {
      c.exec('id -un', (err, s) => {
        if (err) return reject(err);
        let out = '';
        s.on('data', (d: Buffer) => { out += d; });
        s.on('close', () => { c.end(); resolve(out.trim()); });
      });
    });
    c.on('error', reject);
    c.connect({ host: env.sshd.host, port: env.sshd.port, username: login, agent: new CertAgent(key, cert) as never, readyTimeout: 10000 });
    patchCertPublickey(c);
  });
  const now = Math.floor(Date.now() / 1000);
  t.equal(await tryLogin([login], now + 600), login, 'id -un is the certificate principal');
  await t.rejects(tryLogin(['someone-else'], now + 600), 'wrong principal refused');
  await t.rejects(tryLogin([login], now - 10), 'expired certificate refused');
});
