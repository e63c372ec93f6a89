/**
 * NTLM messages and CredSSP: the MS-NLMP §4.2.4.3 AUTHENTICATE byte for byte, client ↔ server
 * round trips, CredSSP over a real loopback TLS connection (right and wrong password), and
 * fuzzing of every parser (only RdpProtocolError, never a crash).
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Secret } from '../../auth/secret.js';
import { ensureTlsMaterial } from '../../proxy/tls.js';
import {
  clientBinding, encodeTsCredentials, encodeTsRequest, parseTsCredentials, parseTsRequest, serverBinding, subjectPublicKeyOfPem, tsRequestLength,
} from '../../protocols/rdp/credssp.js';
import { RdpProtocolError } from '../../protocols/rdp/errors.js';
import { credsspClient, credsspServer, NlaError } from '../../protocols/rdp/nla.js';
import { kxkey, ntHash, ntlmv2Response, ntowfv2, rc4, utf16 } from '../../protocols/rdp/nlmp.js';
import {
  AV_FLAG_MIC, avGet, encodeAuthenticate, encodeAvPairs, encodeChallenge, MsvAvFlags, MsvAvNbComputerName, MsvAvNbDomainName, MsvAvTimestamp,
  NtlmClient, NtlmServer, parseAuthenticate, parseAvPairs, parseChallenge, parseNegotiate,
} from '../../protocols/rdp/ntlm.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function onlyProtocolErrors(t: Test, name: string, fn: () => unknown): void {
  try { fn(); } catch (e) {
    if (!(e instanceof RdpProtocolError)) t.fail(`${name}: ${(e as Error).name}: ${(e as Error).message}`);
  }
}

// MS-NLMP §4.2.4.3 AUTHENTICATE_MESSAGE (NTLMv2, no MIC).
const SPEC_AUTH = hex(`
4e544c4d53535000 03000000 18001800 6c000000 54005400 84000000 0c000c00 48000000 08000800 54000000 10001000 5c000000 10001000
d8000000 358288e2 0501280a0000000f 44006f006d00610069006e00 550073006500720043004f004d0050005500540045005200
86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa 68cd0ab851e51c96aabc927bebef6a1c 0101000000000000 0000000000000000
aaaaaaaaaaaaaaaa 00000000 02000c0044006f006d00610069006e00 01000c00530065007200760065007200 00000000 00000000
c5dad2544fc9799094ce1ce90bc9d03e`);
const TARGET_INFO = Buffer.concat([hex('02000c00'), utf16('Domain'), hex('01000c00'), utf16('Server'), hex('00000000')]);

t.test('NTLM AUTHENTICATE: MS-NLMP §4.2.4.3 byte for byte, and decoded back', async (t) => {
  t.equal(SPEC_AUTH.length, 0xd8 + 16, 'vector length');
  const key = ntowfv2('Password', 'User', 'Domain');
  const r = ntlmv2Response(key, hex('0123456789abcdef'), Buffer.alloc(8, 0xaa), Buffer.alloc(8), TARGET_INFO);
  const enc = encodeAuthenticate({
    flags: 0xe2888235,
    lmChallengeResponse: r.lmChallengeResponse, ntChallengeResponse: r.ntChallengeResponse,
    domain: utf16('Domain'), user: utf16('User'), workstation: utf16('COMPUTER'),
    encryptedRandomSessionKey: rc4(kxkey(r.sessionBaseKey), Buffer.alloc(16, 0x55)),
    version: hex('0501280a0000000f'), mic: null, withMic: false,
  });
  t.equal(enc.message.toString('hex'), SPEC_AUTH.toString('hex'), 'encoded AUTHENTICATE equals the specification');
  const a = parseAuthenticate(SPEC_AUTH);
  t.equal(a.user.toString('utf16le'), 'User');
  t.equal(a.domain.toString('utf16le'), 'Domain');
  t.equal(a.workstation.toString('utf16le'), 'COMPUTER');
  t.equal(a.mic, null, 'the 4.2.4.3 example predates the MIC');
  t.equal(a.flags, 0xe2888235);
  // The CHALLENGE of 4.2.4.3 (flags e28a8233, version 06 00 70 17 00 00 00 0f) round trips.
  const ch = encodeChallenge({ flags: 0xe28a8233, serverChallenge: hex('0123456789abcdef'), targetName: utf16('Server'), targetInfo: TARGET_INFO, version: hex('0600701700000000f'.slice(0, 16)) });
  const back = parseChallenge(ch);
  t.equal(back.flags, 0xe28a8233);
  t.equal(back.targetName.toString('utf16le'), 'Server');
  t.same(parseAvPairs(back.targetInfo).map((p) => [p.id, p.value.toString('utf16le')]), [[2, 'Domain'], [1, 'Server']]);
  t.equal(ch.length, 0x38 + 12 + TARGET_INFO.length, 'CHALLENGE length as in §4.2.4.3');
});

t.test('NTLM client ↔ server: NTLMv2 with MIC, key exchange, sealing both ways', async (t) => {
  const now = () => 1_700_000_000_000;
  const server = new NtlmServer({ computer: 'TOLLGATE', domain: 'TOLLGATE', dnsComputer: 'tollgate.local', dnsDomain: 'tollgate.local' }, { now });
  const client = new NtlmClient({ user: 'desk:admin', domain: '', ntHash: ntHash('the-secret') }, { now });
  const neg = parseNegotiate(client.negotiate);
  t.ok(neg.flags & 0x00080000, 'client asks for extended session security');
  const challenge = server.challenge(client.negotiate);
  const info = parseAvPairs(parseChallenge(challenge).targetInfo);
  t.ok(avGet(info, MsvAvTimestamp), 'the server sends MsvAvTimestamp');
  t.equal(avGet(info, MsvAvNbComputerName)?.toString('utf16le'), 'TOLLGATE');
  t.equal(avGet(info, MsvAvNbDomainName)?.toString('utf16le'), 'TOLLGATE');
  const { message, session } = client.authenticate(challenge);
  const parsed = parseAuthenticate(message);
  t.ok(parsed.mic && !parsed.mic.equals(Buffer.alloc(16)), 'the client computed a MIC');
  t.equal(parsed.lmChallengeResponse.toString('hex'), '00'.repeat(24), 'LMv2 is Z(24) when a MIC is sent');
  const flags = avGet(parseAvPairs(parsed.ntChallengeResponse.subarray(44)), MsvAvFlags);
  t.equal(flags!.readUInt32LE(0) & AV_FLAG_MIC, AV_FLAG_MIC, 'MsvAvFlags says MIC present');
  t.same(NtlmServer.claimed(message), { user: 'desk:admin', domain: '' });
  t.equal(server.verify(message, [{ id: 'a', ntHash: ntHash('other') }]), null, 'a wrong candidate does not verify');
  const ok = server.verify(message, [{ id: 'a', ntHash: ntHash('other') }, { id: 'b', ntHash: ntHash('the-secret') }]);
  t.equal(ok?.id, 'b', 'the right candidate is found');
  t.same(ok!.session.exportedSessionKey, session.exportedSessionKey, 'both sides hold the same exported session key');
  const w = session.send.seal(Buffer.from('hello server'));
  t.equal(ok!.session.recv.unseal(w.signature, w.data).toString(), 'hello server', 'client → server sealing');
  const v = ok!.session.send.seal(Buffer.from('hello client'));
  t.equal(session.recv.unseal(v.signature, v.data).toString(), 'hello client', 'server → client sealing');
  // A tampered MIC is refused.
  const bad = Buffer.from(message); bad[75]! ^= 1;
  t.equal(server.verify(bad, [{ id: 'b', ntHash: ntHash('the-secret') }]), null, 'a tampered MIC is refused');
  // A server without NTLMv2 essentials is refused by the client.
  const weak = encodeChallenge({ flags: 0x00000201, serverChallenge: Buffer.alloc(8), targetName: Buffer.alloc(0), targetInfo: encodeAvPairs([]), version: null });
  t.throws(() => new NtlmClient({ user: 'u', domain: '', ntHash: ntHash('p') }).authenticate(weak), RdpProtocolError, 'a weak server is refused');
});

t.test('TSRequest and TSCredentials DER round trips (versions 2–6)', async (t) => {
  for (const version of [2, 3, 4, 5, 6]) {
    const r = { version, negoTokens: [randomBytes(40)], authInfo: randomBytes(300), pubKeyAuth: randomBytes(48), errorCode: version >= 3 ? 0xc000006d : null, clientNonce: version >= 5 ? randomBytes(32) : null };
    const enc = encodeTsRequest(r);
    t.equal(tsRequestLength(enc), enc.length, `v${version}: length known from the header`);
    const back = parseTsRequest(enc);
    t.same(back, r, `v${version} round trips`);
  }
  t.same(parseTsRequest(encodeTsRequest({ version: 6, errorCode: 5 })).errorCode, 5);
  const big = parseTsRequest(encodeTsRequest({ version: 6, negoTokens: [randomBytes(70_000 >> 2)] }));
  t.equal(big.negoTokens[0]!.length, 17_500, 'long (3-byte) DER lengths');
  const creds = { domain: 'CORP', user: 'tg-åsa', password: 'pässwörd ✓' };
  t.same(parseTsCredentials(encodeTsCredentials(creds)), creds, 'TSPasswordCreds in UTF-16');
  t.throws(() => parseTsRequest(Buffer.from([0x30, 0x00])), RdpProtocolError, 'no version');
});

t.test('CredSSP client ↔ server over real TLS: right password delegates, wrong one is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-nla-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const mat = ensureTlsMaterial(dir, ['localhost']);
  const pk = subjectPublicKeyOfPem(mat.cert);
  t.ok(pk.length > 200, 'RSA SubjectPublicKey extracted');
  t.equal(serverBinding(2, null, pk)[0], (pk[0]! + 1) & 0xff, 'v2–4: the server answers the key with its first byte + 1');
  t.not(clientBinding(6, Buffer.alloc(32), pk).toString('hex'), serverBinding(6, Buffer.alloc(32), pk).toString('hex'), 'v5+: distinct hashes per direction');

  async function run(password: string): Promise<{ server: PromiseSettledResult<any>; client: PromiseSettledResult<any> }> {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    const serverDone = new Promise<any>((resolve, reject) => {
      srv.once('connection', (raw) => {
        const s = new tls.TLSSocket(raw, { isServer: true, secureContext: tls.createSecureContext({ cert: mat.cert, key: mat.key.reveal() }) });
        s.on('error', () => {});
        credsspServer(s, {
          certPem: mat.cert, identity: { computer: 'TG', domain: 'TG', dnsComputer: 'tg', dnsDomain: 'tg' }, now: Date.now,
          candidates: async (user) => user === 'desk' ? [{ id: 'secret-1', ntHash: ntHash('right-one') }] : [],
          authorize: async (m) => m !== null,
        }).then((v) => { s.end(); resolve(v); }, (e) => { s.end(); reject(e); });
      });
    });
    const c = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
    c.on('error', () => {});
    await new Promise<void>((r) => c.once('secureConnect', () => r()));
    const clientDone = credsspClient(c, { user: 'desk', domain: '', password: new Secret(password) }, { now: Date.now });
    const [server, client] = await Promise.allSettled([serverDone, clientDone]);
    c.destroy();
    srv.close();
    return { server, client };
  }
  const good = await run('right-one');
  t.equal(good.client.status, 'fulfilled', 'client finished CredSSP');
  t.equal(good.server.status, 'fulfilled', 'server accepted');
  if (good.server.status === 'fulfilled') {
    t.equal(good.server.value.id, 'secret-1', 'the matching secret id');
    t.same(good.server.value.creds, { domain: '', user: 'desk', password: 'right-one' }, 'delegated credentials unsealed');
  }
  const bad = await run('wrong-one');
  t.equal(bad.server.status, 'rejected', 'server refuses a wrong password');
  t.equal(bad.client.status, 'rejected', 'client sees the refusal');
  if (bad.client.status === 'rejected') {
    t.ok(bad.client.reason instanceof NlaError, 'as an NlaError');
    t.match(bad.client.reason.message, /logon failure/, `the client reads STATUS_LOGON_FAILURE (${bad.client.reason.message})`);
    t.notMatch(bad.client.reason.message, /wrong-one/, 'the password is not in the error');
  }
});

t.test('fuzz: NTLM and CredSSP parsers only raise protocol errors', async (t) => {
  const now = () => 1_700_000_000_000;
  const server = new NtlmServer({ computer: 'A', domain: 'B', dnsComputer: 'c', dnsDomain: 'd' }, { now });
  const client = new NtlmClient({ user: 'u', domain: 'd', ntHash: ntHash('p') }, { now });
  const ch = server.challenge(client.negotiate);
  const auth = client.authenticate(ch).message;
  const ts = encodeTsRequest({ version: 6, negoTokens: [auth], pubKeyAuth: randomBytes(48), clientNonce: randomBytes(32), errorCode: 3 });
  const cases: [string, Buffer, (b: Buffer) => unknown][] = [
    ['NEGOTIATE', client.negotiate, parseNegotiate],
    ['CHALLENGE', ch, parseChallenge],
    ['AUTHENTICATE', auth, parseAuthenticate],
    ['AV pairs', parseChallenge(ch).targetInfo, parseAvPairs],
    ['client on CHALLENGE', ch, (b) => new NtlmClient({ user: 'u', domain: '', ntHash: ntHash('p') }).authenticate(b)],
    ['server on AUTHENTICATE', auth, (b) => server.verify(b, [{ id: 'x', ntHash: ntHash('p') }])],
    ['TSRequest', ts, parseTsRequest],
    ['TSRequest length', ts, tsRequestLength],
    ['TSCredentials', encodeTsCredentials({ domain: 'd', user: 'u', password: 'p' }), parseTsCredentials],
  ];
  let runs = 0;
  for (const [name, good, parse] of cases) {
    onlyProtocolErrors(t, `${name} as built`, () => parse(good));
    for (let n = 0; n < good.length; n++) { onlyProtocolErrors(t, `${name} truncated at ${n}`, () => parse(good.subarray(0, n))); runs++; }
    for (let i = 0; i < 400; i++) {
      const m = Buffer.from(good);
      for (let k = 0; k < 1 + (i % 4); k++) {
        const at = Math.floor(Math.random() * m.length);
        m[at] = i % 3 === 0 ? 0xff : Math.floor(Math.random() * 256);
      }
      onlyProtocolErrors(t, `${name} mutated`, () => parse(m));
      runs++;
    }
    // Absurd offsets and lengths in every 8-byte field slot of the header.
    for (let at = 12; at + 8 <= Math.min(good.length, 64); at += 8) {
      const m = Buffer.from(good);
      m.writeUInt16LE(0xffff, at); m.writeUInt32LE(0xfffffff0, at + 4);
      onlyProtocolErrors(t, `${name} absurd field at ${at}`, () => parse(m));
      runs++;
    }
    for (let i = 0; i < 100; i++) { onlyProtocolErrors(t, `${name} random`, () => parse(randomBytes(1 + Math.floor(Math.random() * 300)))); runs++; }
  }
  t.ok(runs > 4000, `${runs} fuzzed inputs, no crash`);
});
