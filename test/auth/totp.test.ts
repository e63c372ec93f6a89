import t from 'tap';
import { Secret } from '../../auth/secret.js';
import { base32Decode, base32Encode, hotp, newTotpSecret, totp, verifyTotp } from '../../auth/totp.js';

// RFC 6238 Appendix B: seeds are ASCII "1234567890" repeated to the hash's block size.
const seeds = {
  sha1: Buffer.from('12345678901234567890', 'ascii'),
  sha256: Buffer.from('12345678901234567890123456789012', 'ascii'),
  sha512: Buffer.from('1234567890123456789012345678901234567890123456789012345678901234', 'ascii'),
};
const vectors: [number, string, 'sha1' | 'sha256' | 'sha512'][] = [
  [59, '94287082', 'sha1'], [59, '46119246', 'sha256'], [59, '90693936', 'sha512'],
  [1111111109, '07081804', 'sha1'], [1111111109, '68084774', 'sha256'], [1111111109, '25091201', 'sha512'],
  [1111111111, '14050471', 'sha1'], [1111111111, '67062674', 'sha256'], [1111111111, '99943326', 'sha512'],
  [1234567890, '89005924', 'sha1'], [1234567890, '91819424', 'sha256'], [1234567890, '93441116', 'sha512'],
  [2000000000, '69279037', 'sha1'], [2000000000, '90698825', 'sha256'], [2000000000, '38618901', 'sha512'],
  [20000000000, '65353130', 'sha1'], [20000000000, '77737706', 'sha256'], [20000000000, '47863826', 'sha512'],
];

t.test('RFC 6238 test vectors (8 digits, SHA-1/256/512)', async (t) => {
  for (const [sec, code, alg] of vectors) {
    t.equal(totp(seeds[alg], sec * 1000, { digits: 8, algorithm: alg }), code, `${alg} T=${sec}`);
  }
});

t.test('RFC 4226 Appendix D HOTP values', async (t) => {
  const want = ['755224', '287082', '359152', '969429', '338314', '254676', '287922', '162583', '399871', '520489'];
  want.forEach((w, i) => t.equal(hotp(seeds.sha1, i), w, `counter ${i}`));
});

t.test('6-digit default over a Base32 secret, with drift window and refusal', async (t) => {
  const b32 = base32Encode(seeds.sha1);
  t.equal(b32, 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ');
  t.same(base32Decode(b32.toLowerCase()), seeds.sha1);
  t.throws(() => base32Decode('not*base32'), /Base32/);
  const s = new Secret(b32);
  t.equal(totp(s, 59_000), '287082', 'last 6 digits of the SHA-1 vector');
  t.equal(verifyTotp(s, '287082', 59_000), 1, 'returns the matched step');
  t.equal(verifyTotp(s, '287082', 59_000 + 30_000), 1, 'one step of drift accepted');
  t.equal(verifyTotp(s, '287082', 59_000 + 90_000), null, 'three steps later refused');
  t.equal(verifyTotp(s, '287083', 59_000), null, 'wrong code refused');
  t.equal(verifyTotp(s, '28708', 59_000), null, 'short code refused');
  t.equal(verifyTotp(s, 'abcdef', 59_000), null, 'non-digits refused');
  const fresh = newTotpSecret();
  t.equal(base32Decode(fresh.reveal()).length, 20);
  t.equal(String(fresh), '<secret>');
});
