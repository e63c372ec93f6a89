// SSHSIG verification (auth/sshsig.ts) against signatures made by the real `ssh-keygen -Y sign`,
// for every supported key type and both message hashes, and hostile inputs.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { verifySshSignature, parseSshPublicKey } from '../../auth/sshsig.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-sshsig-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const NS = 'tollgate-key-registration';

function keygen(name: string, args: string[]): { file: string; blob: Buffer } {
  const file = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-N', '', '-C', name, '-f', file, ...args]);
  return { file, blob: Buffer.from(readFileSync(`${file}.pub`, 'utf8').trim().split(/\s+/)[1]!, 'base64') };
}

function sign(key: string, message: Buffer, ns = NS, hashalg?: string): string {
  const msg = join(dir, `msg-${Math.random().toString(36).slice(2)}`);
  writeFileSync(msg, message);
  execFileSync('ssh-keygen', ['-Y', 'sign', '-n', ns, '-f', key, ...(hashalg ? ['-O', `hashalg=${hashalg}`] : []), msg], { stdio: 'pipe' });
  return readFileSync(`${msg}.sig`, 'utf8');
}

const keys = {
  ed25519: keygen('ed25519', ['-t', 'ed25519']),
  p256: keygen('p256', ['-t', 'ecdsa', '-b', '256']),
  p384: keygen('p384', ['-t', 'ecdsa', '-b', '384']),
  p521: keygen('p521', ['-t', 'ecdsa', '-b', '521']),
  rsa: keygen('rsa', ['-t', 'rsa', '-b', '2048']),
};
const message = Buffer.from('v1.challenge-from-the-gateway');

t.test('signatures of every key type and hash verify; the wrong message, namespace or key do not', async (t) => {
  for (const [name, k] of Object.entries(keys)) {
    for (const hashalg of ['sha256', 'sha512']) {
      const sig = sign(k.file, message, NS, hashalg);
      t.same(verifySshSignature(sig, message, NS, k.blob), { ok: true }, `${name} ${hashalg}`);
      t.same(verifySshSignature(sig, Buffer.from('another message'), NS, k.blob), { ok: false, reason: 'the signature does not verify' }, `${name} ${hashalg}: other message`);
      t.match(verifySshSignature(sig, message, 'file', k.blob), { ok: false, reason: /namespace "tollgate-key-registration", not "file"/ }, `${name}: other namespace`);
    }
    const other = name === 'ed25519' ? keys.p256 : keys.ed25519;
    t.same(verifySshSignature(sign(k.file, message), message, NS, other.blob), { ok: false, reason: 'the signature was made with another key' }, `${name}: another key`);
  }
  const wrongNs = sign(keys.ed25519.file, message, 'git');
  t.match(verifySshSignature(wrongNs, message, NS, keys.ed25519.blob), { ok: false, reason: /namespace "git"/ });
});

t.test('a signature made by one key but relabelled as another key does not verify', async (t) => {
  // Splice key B's blob into a signature by key A of the same type: the math must fail.
  const a = keygen('a', ['-t', 'ed25519']);
  const b = keygen('b', ['-t', 'ed25519']);
  const sig = sign(a.file, message);
  const raw = Buffer.from(sig.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const spliced = Buffer.from(raw.toString('latin1').replace(a.blob.toString('latin1'), b.blob.toString('latin1')), 'latin1');
  const armored = `-----BEGIN SSH SIGNATURE-----\n${spliced.toString('base64')}\n-----END SSH SIGNATURE-----\n`;
  t.same(verifySshSignature(armored, message, NS, b.blob), { ok: false, reason: 'the signature does not verify' });
});

t.test('hostile inputs are refused with a reason, never a throw', async (t) => {
  const good = sign(keys.p256.file, message);
  const raw = Buffer.from(good.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const armor = (b: Buffer) => `-----BEGIN SSH SIGNATURE-----\n${b.toString('base64')}\n-----END SSH SIGNATURE-----`;
  for (const bad of ['', 'hello', '-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----', armor(Buffer.from('SSHSIG')), armor(raw.subarray(0, raw.length - 3)), armor(Buffer.concat([raw, Buffer.from([0])]))]) {
    const r = verifySshSignature(bad, message, NS, keys.p256.blob);
    t.equal(r.ok, false, `refused: ${JSON.stringify(bad.slice(0, 40))}`);
  }
  // Flip each byte of the signature blob in turn at a few places: never accepted.
  for (const at of [raw.length - 1, raw.length - 20, raw.length - 40]) {
    const flipped = Buffer.from(raw);
    flipped[at] ^= 0x01;
    t.equal(verifySshSignature(armor(flipped), message, NS, keys.p256.blob).ok, false, `bit flip at ${at}`);
  }
  fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
    const b = Buffer.concat([Buffer.from('SSHSIG\0\0\0\x01'), Buffer.from(bytes)]);
    return verifySshSignature(armor(b), message, NS, keys.p256.blob).ok === false;
  }), { numRuns: 300 });
  t.throws(() => parseSshPublicKey(Buffer.from('garbage')), RangeError);
});

t.test('RSA key size is read from the modulus', async (t) => {
  t.equal(parseSshPublicKey(keys.rsa.blob).bits, 2048);
  t.equal(parseSshPublicKey(keys.ed25519.blob).bits, undefined);
});
