/**
 * Hostile and broken input at the gateway's RDP port: garbage, truncated PDUs, absurd lengths, no
 * TLS offered, wrong secrets, a dead target. Each ends with a clean disconnect, the gateway keeps
 * serving, and nothing (session, account) is left behind.
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import { ManualClock } from '../../policies/clock.js';
import { encodeDomainPdu } from '../../protocols/rdp/mcs.js';
import { encodeTpkt } from '../../protocols/rdp/tpkt.js';
import { encodeConnectionRequest, encodeData, parseConnectionConfirm, PROTOCOL_SSL } from '../../protocols/rdp/x224.js';
import { closedWith, connectInitial, mcs, tlsClient as tlsClientAt, login as loginAt, connect as connectAt } from './client.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { mintedAccounts, sleep, waitFor } from './support.js';

const PREFIX = 'tgrh-';
const clock = new ManualClock(Date.now());
let tg: TestGateway;
let port: number;
let deadPort: number;

t.before(async () => {
  deadPort = await new Promise<number>((res) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => res(p)); });
  });
  tg = await startTestGateway({
    clock,
    listeners: ['rdp'],
    targets: [{ name: 'dead', protocol: 'rdp', address: `127.0.0.1:${deadPort}`, roles: [{ name: 'user' }], credentials: { mode: 'local-account', prefix: PREFIX }, options: { connectTimeout: 3 } }],
  });
  port = tg.listener('rdp').port;
});
t.teardown(async () => { await tg?.close(); });

const connect = () => connectAt(port);
const tlsClient = () => tlsClientAt(port);
const login = (u: string, p: string) => loginAt(port, u, p);


async function stillServes(t: Test): Promise<void> {
  const c = await tlsClient();
  t.ok(c.sock.encrypted, 'the gateway still answers new connections with TLS');
  c.sock.destroy();
}

t.test('garbage, truncated and absurd PDUs before TLS', async (t) => {
  for (const [name, bytes] of [
    ['random garbage', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    ['TPKT length under its header', Buffer.from([3, 0, 0, 2, 1, 2, 3])],
    ['X.224 with a length indicator beyond the PDU', encodeTpkt(Buffer.from([200, 0xe0, 0, 0, 0, 0, 0]))],
    ['X.224 data before the connection request', encodeTpkt(encodeData(Buffer.from([1, 2, 3])))],
    ['cookie without end of line', encodeTpkt(Buffer.concat([Buffer.from([6 + 17, 0xe0, 0, 0, 0, 0, 0]), Buffer.from('Cookie: mstshash=')]))],
  ] as const) {
    const s = await connect();
    const done = closedWith(s);
    s.write(bytes);
    await t.resolves(done, `${name}: connection closed`);
  }
  const s = await connect();
  const done = closedWith(s);
  s.write(encodeTpkt(encodeConnectionRequest({ requestedProtocols: 0 })));
  const got = await done;
  const neg = parseConnectionConfirm(got.subarray(4)).negotiation;
  t.same(neg, { type: 'failure', code: 1 }, 'a client without TLS gets "SSL required by server"');

  // An absurd TPKT length with the connection kept open: the login timer closes it.
  const slow = await connect();
  const slowDone = closedWith(slow, 5000);
  slow.write(Buffer.from([3, 0, 0xff, 0xff, 2, 0xf0]));
  await sleep(200);
  clock.advance(31_000);
  await t.resolves(slowDone, 'a PDU that never completes ends at the login timeout');
  await stillServes(t);
});

t.test('garbage after TLS and in the MCS sequence', async (t) => {
  for (const [name, bytes] of [
    ['random bytes', Buffer.from('\x00\x01\x02 not rdp at all')],
    ['Connect-Initial with an absurd BER length', mcs(Buffer.from([0x7f, 0x65, 0x84, 0xff, 0xff, 0xff, 0xff]))],
    ['truncated Connect-Initial', connectInitial().subarray(0, 60)],
    ['a fast-path PDU instead of MCS', Buffer.from([0x04, 0x05, 1, 2, 3])],
  ] as const) {
    const c = await tlsClient();
    c.reader.detach();
    const done = closedWith(c.sock);
    c.sock.write(bytes);
    if (name === 'truncated Connect-Initial') { await sleep(100); c.sock.end(); }
    await t.resolves(done, `${name}: closed`);
  }
  // A valid Connect-Initial followed by an unexpected domain PDU.
  const c = await tlsClient();
  c.sock.write(connectInitial());
  await c.reader.next('Connect-Response');
  c.reader.detach();
  const done = closedWith(c.sock);
  c.sock.write(mcs(encodeDomainPdu({ type: 'sendData', indication: false, initiator: 1007, channelId: 1004, flags: 0x70, data: Buffer.from('early channel data') })));
  await t.resolves(done, 'data on a virtual channel before the Client Info PDU: closed');
  await stillServes(t);
});

t.test('wrong secrets and unknown targets are refused before anything is dialed', async (t) => {
  const before = mintedAccounts(PREFIX).length;
  const grant = await tg.grant('alice', 'dead', 'user');
  await tg.secret('alice', grant.id);
  for (const [user, pw, code] of [['dead', 'wrong-secret', 'bad_secret'], ['nosuchtarget', 'x', 'unknown_target'], ['dead:nosuchrole', 'x', 'unknown_role']]) {
    const c = await login(user!, pw!);
    const got = await closedWith(c.sock);
    t.ok(got.length > 0, `${user}: the gateway hangs up with an MCS Disconnect Provider Ultimatum`);
    const refusals = await waitFor('the refusal audit', async () => (await tg.store.listAudit({ action: 'access.refused' })).filter((a) => a.data.code === code));
    t.ok(refusals.length > 0, `audited as ${code}`);
  }
  t.equal((await tg.store.listSessions({})).length, 0, 'no session opened');
  t.equal(mintedAccounts(PREFIX).length, before, 'no account created');
});

t.test('a dead target: the session ends as target_error and its account is removed', async (t) => {
  const grant = await tg.grant('alice', 'dead', 'user');
  const s = await tg.secret('alice', grant.id);
  const c = await login(s.username, s.secret);
  await closedWith(c.sock, 10_000);
  const ended = await waitFor('the session to end', async () => (await tg.store.listSessions({})).find((x) => x.state === 'ended'));
  t.match(ended.endReason, /^target_error: cannot reach the RDP target/, 'ended as target_error with the reason');
  const leases = await tg.store.listLeases({ sessionId: ended.id } as never);
  t.ok(leases.length >= 1 && leases.every((l) => l.state === 'revoked'), 'the account lease was revoked');
  t.same(mintedAccounts(PREFIX), [], 'no account left behind');
  await stillServes(t);
});
