/**
 * Hostile and broken input at the gateway's RDP port: garbage, truncated PDUs, absurd lengths, no
 * TLS offered, wrong secrets, a dead target. Each ends with a clean disconnect, the gateway keeps
 * serving, and nothing (session, account) is left behind.
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { Secret } from '../../auth/secret.js';
import { ManualClock } from '../../policies/clock.js';
import { encodeClientNetwork, encodeConferenceCreateRequest, CS_CORE, CS_NET, CS_SECURITY } from '../../protocols/rdp/gcc.js';
import { encodeClientInfo, INFO_UNICODE } from '../../protocols/rdp/info.js';
import { encodeConnectInitial, encodeDomainPdu, parseConnectResponse, parseDomainPdu } from '../../protocols/rdp/mcs.js';
import { FrameReader } from '../../protocols/rdp/reader.js';
import { encodeSecurityHeader, SEC_INFO_PKT } from '../../protocols/rdp/security.js';
import { encodeTpkt } from '../../protocols/rdp/tpkt.js';
import { encodeConnectionRequest, encodeData, parseConnectionConfirm, parseData, PROTOCOL_SSL } from '../../protocols/rdp/x224.js';
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

/** Resolves with what the gateway sent once it closed the connection (or rejects after ms). */
function closedWith(sock: net.Socket | tls.TLSSocket, ms = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    sock.on('data', (d: Buffer) => got.push(d));
    sock.on('error', () => { /* reset counts as closed */ });
    const timer = setTimeout(() => reject(new Error('the gateway did not close the connection')), ms);
    sock.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(got)); });
    sock.resume();
  });
}

function connect(): Promise<net.Socket> {
  return new Promise((res, rej) => { const s = net.connect({ host: '127.0.0.1', port }, () => res(s)); s.once('error', rej); });
}

/** X.224 + TLS like a real client; returns the TLS socket and a frame reader on it. */
async function tlsClient(): Promise<{ sock: tls.TLSSocket; reader: FrameReader }> {
  const raw = await connect();
  const r0 = new FrameReader();
  r0.attach(raw);
  raw.write(encodeTpkt(encodeConnectionRequest({ cookie: 'x', requestedProtocols: PROTOCOL_SSL })));
  const cc = await r0.next('CC');
  const neg = cc.kind === 'tpkt' ? parseConnectionConfirm(cc.payload).negotiation : null;
  if (!neg || neg.type !== 'response' || neg.selectedProtocol !== PROTOCOL_SSL) throw new Error('gateway did not select TLS');
  r0.detach();
  const sock = tls.connect({ socket: raw, rejectUnauthorized: false });
  await new Promise<void>((res, rej) => { sock.once('secureConnect', res); sock.once('error', rej); });
  const reader = new FrameReader();
  reader.attach(sock);
  return { sock, reader };
}

const mcs = (pdu: Buffer) => encodeTpkt(encodeData(pdu));

function connectInitial(): Buffer {
  const core = Buffer.alloc(212);
  core.writeUInt32LE(0x00080004, 0);
  core.writeUInt16LE(800, 4);
  core.writeUInt16LE(600, 6);
  const head = Buffer.from(`040101040101${'0101ff'}3019${'020122020102020100020101020100020101'}0202ffff020102`
    + `3019${'020101'.repeat(4)}02010002010102020420020102301c0202ffff0202fc170202ffff0201010201000201010202ffff020102`, 'hex');
  return mcs(encodeConnectInitial({ head, userData: encodeConferenceCreateRequest([
    { type: CS_CORE, data: core }, { type: CS_SECURITY, data: Buffer.alloc(8) },
    { type: CS_NET, data: encodeClientNetwork([{ name: 'cliprdr', options: 0 }]) },
  ]) }));
}

/** Walk the MCS sequence as a client and send a Client Info PDU with these credentials. */
async function login(userName: string, password: string): Promise<{ sock: tls.TLSSocket; reader: FrameReader }> {
  const c = await tlsClient();
  c.sock.write(connectInitial());
  const resp = await c.reader.next('Connect-Response');
  if (resp.kind !== 'tpkt') throw new Error('fast-path?');
  parseConnectResponse(parseData(resp.payload)!);
  c.sock.write(mcs(encodeDomainPdu({ type: 'erectDomainRequest' })));
  c.sock.write(mcs(encodeDomainPdu({ type: 'attachUserRequest' })));
  const auc = parseDomainPdu(parseData((await c.reader.next('AUC') as { payload: Buffer }).payload)!);
  if (auc.type !== 'attachUserConfirm' || auc.initiator === null) throw new Error('no attach user confirm');
  for (const ch of [auc.initiator, 1003, 1004]) {
    c.sock.write(mcs(encodeDomainPdu({ type: 'channelJoinRequest', initiator: auc.initiator, channelId: ch })));
    const cjc = parseDomainPdu(parseData((await c.reader.next('CJC') as { payload: Buffer }).payload)!);
    if (cjc.type !== 'channelJoinConfirm' || cjc.result !== 0) throw new Error(`join ${ch} refused`);
  }
  const info = encodeSecurityHeader(SEC_INFO_PKT, encodeClientInfo({
    codePage: 0, flags: INFO_UNICODE, domain: '', userName, password: new Secret(password), alternateShell: '', workingDir: '', extra: Buffer.alloc(0),
  }));
  c.reader.detach();
  c.sock.write(mcs(encodeDomainPdu({ type: 'sendData', indication: false, initiator: auc.initiator, channelId: 1003, flags: 0x70, data: info })));
  return c;
}

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
