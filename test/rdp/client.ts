/** A minimal scripted RDP client for the tests: X.224, TLS, MCS connect, Client Info. */
import net from 'node:net';
import tls from 'node:tls';
import { Secret } from '../../auth/secret.js';
import { encodeClientNetwork, encodeConferenceCreateRequest, CS_CORE, CS_NET, CS_SECURITY } from '../../protocols/rdp/gcc.js';
import { encodeClientInfo, INFO_UNICODE } from '../../protocols/rdp/info.js';
import { encodeConnectInitial, encodeDomainPdu, parseConnectResponse, parseDomainPdu } from '../../protocols/rdp/mcs.js';
import { FrameReader } from '../../protocols/rdp/reader.js';
import { encodeSecurityHeader, SEC_INFO_PKT } from '../../protocols/rdp/security.js';
import { encodeTpkt } from '../../protocols/rdp/tpkt.js';
import { encodeConnectionRequest, encodeData, parseConnectionConfirm, parseData, PROTOCOL_SSL } from '../../protocols/rdp/x224.js';

/** Resolves with what the gateway sent once it closed the connection (or rejects after ms). */
export function closedWith(sock: net.Socket | tls.TLSSocket, ms = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    sock.on('data', (d: Buffer) => got.push(d));
    sock.on('error', () => { /* reset counts as closed */ });
    const timer = setTimeout(() => reject(new Error('the gateway did not close the connection')), ms);
    sock.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(got)); });
    sock.resume();
  });
}

export function connect(port: number): Promise<net.Socket> {
  return new Promise((res, rej) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => res(s));
    s.once('error', rej);
    s.on('error', () => { /* a reset after connecting is the gateway hanging up: the reader sees the close */ });
  });
}

/** X.224 + TLS like a real client; returns the TLS socket and a frame reader on it. */
export async function tlsClient(port: number): Promise<{ sock: tls.TLSSocket; reader: FrameReader }> {
  const raw = await connect(port);
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

export const mcs = (pdu: Buffer) => encodeTpkt(encodeData(pdu));

export function connectInitial(): Buffer {
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
export async function login(port: number, userName: string, password: string): Promise<{ sock: tls.TLSSocket; reader: FrameReader }> {
  const c = await tlsClient(port);
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

