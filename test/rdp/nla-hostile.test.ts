/**
 * Hostile input on the NLA path of the gateway's RDP port (the CredSSP server): garbage DER,
 * absurd lengths, broken NTLM messages, a wrong password from a real CredSSP client, a stalled
 * exchange. Each ends with a clean close; the gateway keeps serving; no session is opened.
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { Secret } from '../../auth/secret.js';
import { ManualClock } from '../../policies/clock.js';
import { encodeTsRequest, parseTsRequest } from '../../protocols/rdp/credssp.js';
import { credsspClient, NlaError, STATUS_LOGON_FAILURE } from '../../protocols/rdp/nla.js';
import { NtlmClient } from '../../protocols/rdp/ntlm.js';
import { ntHash } from '../../protocols/rdp/nlmp.js';
import { FrameReader } from '../../protocols/rdp/reader.js';
import { encodeTpkt } from '../../protocols/rdp/tpkt.js';
import { encodeConnectionRequest, parseConnectionConfirm, PROTOCOL_HYBRID, PROTOCOL_SSL } from '../../protocols/rdp/x224.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { closedWith, connect } from './client.js';
import { sleep } from './support.js';

const clock = new ManualClock(Date.now());
let tg: TestGateway;
let port: number;

t.before(async () => {
  const deadPort = await new Promise<number>((res) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => res(p)); });
  });
  tg = await startTestGateway({
    clock,
    listeners: ['rdp'],
    targets: [{ name: 'dead', protocol: 'rdp', address: `127.0.0.1:${deadPort}`, roles: [{ name: 'user' }], credentials: { mode: 'local-account', prefix: 'tgnh-' }, options: { connectTimeout: 3 } }],
  });
  port = tg.listener('rdp').port;
});
t.teardown(async () => { await tg?.close(); });

/** X.224 asking for TLS|NLA, then TLS: the gateway must have selected NLA. */
async function nlaClient(): Promise<tls.TLSSocket> {
  const raw = await connect(port);
  const r0 = new FrameReader();
  r0.attach(raw);
  raw.write(encodeTpkt(encodeConnectionRequest({ cookie: 'x', requestedProtocols: PROTOCOL_SSL | PROTOCOL_HYBRID })));
  const cc = await r0.next('CC');
  const neg = cc.kind === 'tpkt' ? parseConnectionConfirm(cc.payload).negotiation : null;
  if (!neg || neg.type !== 'response' || neg.selectedProtocol !== PROTOCOL_HYBRID) throw new Error(`gateway did not select NLA: ${JSON.stringify(neg)}`);
  r0.detach();
  const sock = tls.connect({ socket: raw, rejectUnauthorized: false });
  await new Promise<void>((res, rej) => { sock.once('secureConnect', res); sock.once('error', rej); });
  return sock;
}

async function stillServes(t: Test): Promise<void> {
  const s = await nlaClient();
  t.ok(s.encrypted, 'the gateway still answers with TLS and NLA');
  s.destroy();
}

t.test('the gateway selects NLA for clients that ask, TLS for the others', async (t) => {
  const s = await nlaClient();
  t.pass('SSL|HYBRID → HYBRID');
  s.destroy();
  const raw = await connect(port);
  const r0 = new FrameReader();
  r0.attach(raw);
  raw.write(encodeTpkt(encodeConnectionRequest({ requestedProtocols: PROTOCOL_SSL })));
  const cc = await r0.next('CC');
  t.same(cc.kind === 'tpkt' ? parseConnectionConfirm(cc.payload).negotiation : null, { type: 'response', flags: 0, selectedProtocol: PROTOCOL_SSL }, 'SSL only → SSL');
  raw.destroy();
});

t.test('garbage and broken CredSSP/NTLM messages: clean close, no crash', async (t) => {
  const negotiate = new NtlmClient({ user: 'dead', domain: '', ntHash: ntHash('x') }).negotiate;
  const cases: [string, Buffer[]][] = [
    ['random bytes', [Buffer.from('\x00\x01\x02 not DER at all')]],
    ['a DER length of 16 MB', [Buffer.from([0x30, 0x83, 0xff, 0xff, 0xff, 0x02])]],
    ['a DER length with 4 length bytes', [Buffer.from([0x30, 0x84, 0, 0, 0, 4, 1, 2, 3, 4])]],
    ['a TSRequest without a version', [Buffer.from([0x30, 0x03, 0x04, 0x01, 0x00])]],
    ['a TSRequest without nego tokens', [encodeTsRequest({ version: 6 })]],
    ['an NTLM token that is not NTLM', [encodeTsRequest({ version: 6, negoTokens: [Buffer.from('hello world, not ntlm')] })]],
    ['a truncated NEGOTIATE', [encodeTsRequest({ version: 6, negoTokens: [negotiate.subarray(0, 14)] })]],
    ['a NEGOTIATE without NTLMv2 essentials', [encodeTsRequest({ version: 6, negoTokens: [Buffer.concat([negotiate.subarray(0, 12), Buffer.from([1, 2, 0, 0]), negotiate.subarray(16)])] })]],
  ];
  for (const [name, parts] of cases) {
    const s = await nlaClient();
    const done = closedWith(s);
    for (const p of parts) s.write(p);
    await t.resolves(done, `${name}: closed`);
  }
  // A valid NEGOTIATE, then a broken AUTHENTICATE (absurd field offsets).
  const s = await nlaClient();
  s.write(encodeTsRequest({ version: 6, negoTokens: [negotiate] }));
  const got = await new Promise<Buffer>((res) => s.once('data', res));
  const challenge = parseTsRequest(got).negoTokens[0];
  t.ok(challenge && challenge.subarray(0, 8).toString('latin1') === 'NTLMSSP\0', 'a CHALLENGE comes back');
  const bad = Buffer.alloc(96);
  Buffer.from('NTLMSSP\0', 'latin1').copy(bad);
  bad.writeUInt32LE(3, 8);
  bad.writeUInt16LE(0xffff, 20); bad.writeUInt32LE(0xfffffff0, 24);
  const done = closedWith(s);
  s.write(encodeTsRequest({ version: 6, negoTokens: [bad], pubKeyAuth: Buffer.alloc(32) }));
  await t.resolves(done, 'a broken AUTHENTICATE: closed');
  await stillServes(t);
});

t.test('a real CredSSP client with a wrong secret gets STATUS_LOGON_FAILURE; no session', async (t) => {
  const grant = await tg.grant('alice', 'dead', 'user');
  await tg.secret('alice', grant.id);
  const s = await nlaClient();
  const err = await credsspClient(s, { user: 'dead', domain: '', password: new Secret('wrong-secret') }, { now: Date.now }).then(() => null, (e: Error) => e);
  s.destroy();
  t.ok(err instanceof NlaError, 'CredSSP fails');
  t.match(err?.message, /logon failure/, `the gateway answered with STATUS_LOGON_FAILURE 0x${STATUS_LOGON_FAILURE.toString(16)} (${err?.message})`);
  t.equal((await tg.store.listSessions({})).length, 0, 'no session opened');
  const refusals = (await tg.store.listAudit({ action: 'access.refused' })).filter((a) => a.data.protocol === 'rdp' && a.data.code === 'bad_secret');
  t.ok(refusals.length >= 1, 'the refusal is audited');
});

t.test('a stalled CredSSP exchange ends at the login timeout', async (t) => {
  const s = await nlaClient();
  const done = closedWith(s, 5000);
  s.write(Buffer.from([0x30, 0x82, 0x10])); // a TSRequest that never completes
  await sleep(200);
  clock.advance(31_000);
  await t.resolves(done, 'closed by the login timer');
  await stillServes(t);
});
