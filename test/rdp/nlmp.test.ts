/** NTLM primitives against published vectors: RFC 1320 (MD4), RFC 6229 (RC4), MS-NLMP §4.2.4 (NTLMv2). */
import t from 'tap';
import { createHmac } from 'node:crypto';
import {
  hmacMd5, kxkey, md4, NtlmSealer, NtlmSecurityError, ntHash, ntlmv2Response, ntlmv2Temp, ntowfv2, rc4, Rc4, sealKey, signKey,
  utf16, verifyNtlmv2,
} from '../../protocols/rdp/nlmp.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

t.test('MD4: RFC 1320 appendix A.5', async (t) => {
  const vectors: [string, string][] = [
    ['', '31d6cfe0d16ae931b73c59d7e0c089c0'],
    ['a', 'bde52cb31de33e46245e05fbdbd6fb24'],
    ['abc', 'a448017aaf21d8525fc10ae87aa6729d'],
    ['message digest', 'd9130a8164549fe818874806e1c7014b'],
    ['abcdefghijklmnopqrstuvwxyz', 'd79e1c308aa5bbcdeea8ed63df412da9'],
    ['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789', '043f8582f241db351ce627e153e7f0e4'],
    ['12345678901234567890123456789012345678901234567890123456789012345678901234567890', 'e33b4ddc9c38f2199c3e7b164fcc0536'],
  ];
  for (const [m, h] of vectors) t.equal(md4(Buffer.from(m, 'latin1')).toString('hex'), h, `MD4("${m.slice(0, 20)}")`);
  // Lengths around the padding boundary (55/56/63/64 bytes) must not throw and must differ.
  const seen = new Set<string>();
  for (const n of [55, 56, 57, 63, 64, 65, 119, 120]) seen.add(md4(Buffer.alloc(n, 0x61)).toString('hex'));
  t.equal(seen.size, 8, 'padding boundaries give distinct digests');
  t.equal(ntHash('Password').toString('hex'), 'a4f49c406510bdcab6824ee7c30fd852', 'NT hash of "Password" (MS-NLMP §4.2.2.1.2)');
});

t.test('RC4: RFC 6229 key stream', async (t) => {
  const zero = Buffer.alloc(16);
  t.equal(rc4(hex('0102030405'), zero).toString('hex'), 'b2396305f03dc027ccc3524a0a1118a8', '40-bit key, offset 0');
  t.equal(rc4(hex('01020304050607'), zero).toString('hex'), '293f02d47f37c9b633f2af5285feb46b', '56-bit key, offset 0');
  t.equal(rc4(hex('0102030405060708'), zero).toString('hex'), '97ab8a1bf0afb96132f2f67258da15a8', '64-bit key, offset 0');
  // Offset 16 of the 40-bit key stream: 69 82 94 4f 18 fc 82 d5 89 c4 03 a4 7a 0d 09 19
  t.equal(rc4(hex('0102030405'), Buffer.alloc(32)).subarray(16).toString('hex'), '6982944f18fc82d589c403a47a0d0919', '40-bit key, offset 16');
  // State carries across calls.
  const r = new Rc4(hex('0102030405'));
  const a = r.update(Buffer.alloc(7));
  const b = r.update(Buffer.alloc(9));
  t.equal(Buffer.concat([a, b]).toString('hex'), 'b2396305f03dc027ccc3524a0a1118a8', 'stateful handle = one stream');
  t.equal(rc4(Buffer.from('Key'), Buffer.from('Plaintext')).toString('hex'), 'bbf316e8d940af0ad3', 'the classic "Key"/"Plaintext" example');
  t.throws(() => new Rc4(Buffer.alloc(0)));
});

t.test('HMAC-MD5 (RFC 2104 test case 2)', async (t) => {
  t.equal(hmacMd5(Buffer.from('Jefe'), Buffer.from('what do ya want for nothing?')).toString('hex'), '750c783e6ab0b503eaa86e310a5db738');
  t.equal(hmacMd5(Buffer.from('k'), Buffer.from('a'), Buffer.from('b')).toString('hex'), createHmac('md5', 'k').update('ab').digest('hex'), 'parts are concatenated');
});

// MS-NLMP §4.2.4: User "User", Domain "Domain", Password "Password", Server "Server", Workstation "COMPUTER".
const USER = 'User';
const DOMAIN = 'Domain';
const SERVER_CHALLENGE = hex('0123456789abcdef');
const CLIENT_CHALLENGE = Buffer.alloc(8, 0xaa);
const TIME = Buffer.alloc(8);
const RANDOM_SESSION_KEY = Buffer.alloc(16, 0x55);
const TARGET_INFO = Buffer.concat([hex('02000c00'), utf16('Domain'), hex('01000c00'), utf16('Server'), hex('00000000')]);

t.test('NTLMv2: MS-NLMP §4.2.4 vectors', async (t) => {
  const key = ntowfv2('Password', USER, DOMAIN);
  t.equal(key.toString('hex'), '0c868a403bfd7a93a3001ef22ef02e3f', '§4.2.4.1.1 NTOWFv2');
  t.equal(ntowfv2('Password', 'user', DOMAIN).toString('hex'), key.toString('hex'), 'the user name is upper-cased');
  t.not(ntowfv2('Password', USER, 'domain').toString('hex'), key.toString('hex'), 'the domain is not');
  const r = ntlmv2Response(key, SERVER_CHALLENGE, CLIENT_CHALLENGE, TIME, TARGET_INFO);
  t.equal(r.sessionBaseKey.toString('hex'), '8de40ccadbc14a82f15cb0ad0de95ca3', '§4.2.4.1.2 session base key');
  t.equal(r.lmChallengeResponse.toString('hex'), '86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa', '§4.2.4.2.1 LMv2 response');
  t.equal(r.ntProofStr.toString('hex'), '68cd0ab851e51c96aabc927bebef6a1c', '§4.2.4.2.2 NTProofStr');
  t.equal(r.ntChallengeResponse.length, 84, 'NTLMv2 response length as in §4.2.4.3');
  t.same(r.ntChallengeResponse.subarray(16), ntlmv2Temp(TIME, CLIENT_CHALLENGE, TARGET_INFO));
  const encrypted = rc4(kxkey(r.sessionBaseKey), RANDOM_SESSION_KEY);
  t.equal(encrypted.toString('hex'), 'c5dad2544fc9799094ce1ce90bc9d03e', '§4.2.4.2.3 encrypted session key');
  // Server-side verification of the same response.
  t.equal(verifyNtlmv2(key, SERVER_CHALLENGE, r.ntChallengeResponse)?.toString('hex'), '8de40ccadbc14a82f15cb0ad0de95ca3', 'server verifies the proof');
  t.equal(verifyNtlmv2(ntowfv2('password', USER, DOMAIN), SERVER_CHALLENGE, r.ntChallengeResponse), null, 'a wrong password does not verify');
  t.equal(verifyNtlmv2(key, hex('0123456789abcdee'), r.ntChallengeResponse), null, 'another challenge does not verify');
  t.equal(verifyNtlmv2(key, SERVER_CHALLENGE, r.ntChallengeResponse.subarray(0, 30)), null, 'a short response does not verify');
});

t.test('sealing and signing with extended session security: MS-NLMP §4.2.4.4', async (t) => {
  const FLAGS = 0xe2888235;
  t.equal(signKey(RANDOM_SESSION_KEY, 'client-to-server').toString('hex'), '4788dc861b4782f35d43fd98fe1a2d39', 'client signing key');
  t.equal(sealKey(RANDOM_SESSION_KEY, FLAGS, 'client-to-server').toString('hex'), '59f600973cc4960a25480a7c196e4c58', 'client sealing key');
  t.not(signKey(RANDOM_SESSION_KEY, 'server-to-client').toString('hex'), '4788dc861b4782f35d43fd98fe1a2d39');
  const plaintext = utf16('Plaintext');
  t.equal(hmacMd5(signKey(RANDOM_SESSION_KEY, 'client-to-server'), Buffer.alloc(4), plaintext).subarray(0, 8).toString('hex'), '70352851f2564309', 'checksum before RC4');
  const client = new NtlmSealer(RANDOM_SESSION_KEY, FLAGS, 'client-to-server');
  const w = client.seal(plaintext);
  t.equal(w.data.toString('hex'), '54e50165bf1936dc996020c1811b0f06fb5f', 'sealed data');
  t.equal(w.signature.toString('hex'), '010000007fb38ec5c55d497600000000', 'signature');
  // The receiving side (server) unseals with the same direction's keys, in sequence.
  const server = new NtlmSealer(RANDOM_SESSION_KEY, FLAGS, 'client-to-server');
  t.same(server.unseal(w.signature, w.data), plaintext, 'unsealed');
  const w2 = client.seal(Buffer.from('second'));
  t.equal(w2.signature.readUInt32LE(12), 1, 'sequence number increments');
  const tampered = Buffer.from(w2.data); tampered[0]! ^= 1;
  t.throws(() => server.unseal(w2.signature, tampered), NtlmSecurityError, 'tampered data is refused');
  t.throws(() => server.unseal(Buffer.alloc(3), w2.data), NtlmSecurityError, 'short signature is refused');
  // 56 and 40 bit keys are truncated input, 16 byte output.
  t.equal(sealKey(RANDOM_SESSION_KEY, 0x80000000, 'client-to-server').length, 16);
  t.not(sealKey(RANDOM_SESSION_KEY, 0x80000000, 'client-to-server').toString('hex'), sealKey(RANDOM_SESSION_KEY, 0, 'client-to-server').toString('hex'));
});
