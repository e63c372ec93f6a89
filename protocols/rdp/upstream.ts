/**
 * The target-facing half: TCP, X.224 negotiation asking for TLS, TLS, MCS Connect-Initial built
 * from the client's (serverSelectedProtocol patched, GFX cleared, only the role's channels), Erect
 * Domain, Attach User, Channel Joins, then the Client Info PDU with the minted credential and
 * auto-logon. Returns the connected TLS socket and the target's channel numbering.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Clock } from '../../policies/clock.js';
import { RdpProtocolError } from './errors.js';
import { targetTlsOptions } from './config.js';
import {
  CS_CORE, CS_NET, encodeClientNetwork, encodeConferenceCreateRequest, parseConferenceCreateResponse, patchClientCore,
  readServerNetwork, SC_NET, type Block, type ChannelDef,
} from './gcc.js';
import { encodeClientInfo, type ClientInfo } from './info.js';
import { encodeConnectInitial, encodeDomainPdu, parseConnectResponse, parseDomainPdu, MCS_GLOBAL_CHANNEL } from './mcs.js';
import { FrameReader } from './reader.js';
import { encodeSecurityHeader, SEC_INFO_PKT } from './security.js';
import { encodeTpkt, type Frame } from './tpkt.js';
import { credsspClient, NlaError, type NlaClientCredential } from './nla.js';
import {
  encodeConnectionRequest, encodeData, parseConnectionConfirm, parseData, PROTOCOL_HYBRID, PROTOCOL_SSL,
} from './x224.js';

export class UpstreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export interface UpstreamPlan {
  host: string;
  port: number;
  timeoutMs: number;
  clock: Clock;
  /** The target's CA: its certificate chain and host name are checked; null = not verified. */
  ca: string | null;
  /** MCS Connect-Initial head (domain parameters) from the client, verbatim. */
  mcsHead: Buffer;
  /** The client's GCC blocks (core, security, cluster, monitor...); network data is replaced. */
  blocks: Block[];
  /** Channels the target gets (the role's allowed subset of the client's). */
  channels: ChannelDef[];
  info: ClientInfo;
  /** Offer NLA too (SSL|HYBRID) and use this credential for CredSSP when the target selects it; null = TLS only. */
  nla: NlaClientCredential | null;
}

export interface UpstreamConnection {
  socket: tls.TLSSocket;
  userId: number;
  ioChannel: number;
  /** Target channel id per channel name, in plan order. */
  channelIds: number[];
  frames: Frame[];
  rest: Buffer;
  /** The security protocol the target selected (PROTOCOL_SSL or PROTOCOL_HYBRID). */
  selectedProtocol: number;
}

function mcsFrame(pdu: Buffer): Buffer { return encodeTpkt(encodeData(pdu)); }

function dataOf(f: Frame, what: string): Buffer {
  if (f.kind !== 'tpkt') throw new RdpProtocolError(`expected ${what}, got a fast-path PDU`);
  const d = parseData(f.payload);
  if (!d) throw new UpstreamError(`the target disconnected while the gateway waited for ${what}`);
  return d;
}

export async function dialUpstream(plan: UpstreamPlan, signal: { aborted: boolean }): Promise<UpstreamConnection> {
  const raw = net.connect({ host: plan.host, port: plan.port });
  raw.setNoDelay(true);
  let sock: net.Socket = raw;
  const timer = plan.clock.setTimer(plan.timeoutMs, () => sock.destroy(new Error(`no answer from ${plan.host}:${plan.port} within ${plan.timeoutMs / 1000}s`)));
  try {
    await new Promise<void>((res, rej) => {
      raw.once('connect', () => { raw.off('error', rej); res(); });
      raw.once('error', rej);
    }).catch((e: Error) => { throw new UpstreamError(`cannot reach the RDP target at ${plan.host}:${plan.port}: ${e.message}`); });
    const reader = new FrameReader();
    reader.attach(raw);
    const offered = plan.nla ? PROTOCOL_SSL | PROTOCOL_HYBRID : PROTOCOL_SSL;
    raw.write(encodeTpkt(encodeConnectionRequest({ requestedProtocols: offered })));
    const cc = await reader.next('the X.224 Connection Confirm');
    if (cc.kind !== 'tpkt') throw new UpstreamError('the target answered the connection request with a fast-path PDU');
    const neg = parseConnectionConfirm(cc.payload).negotiation;
    if (!neg || neg.type === 'failure') {
      throw new UpstreamError(neg
        ? `the target refused the offered security (negotiation failure ${neg.code}${plan.nla ? '' : '; NLA is switched off for this target'})`
        : 'the target does not support TLS security');
    }
    const selected = neg.selectedProtocol;
    if (selected !== PROTOCOL_SSL && !(selected === PROTOCOL_HYBRID && plan.nla)) {
      throw new UpstreamError(`the target selected security protocol ${selected}, not ${plan.nla ? 'TLS or NLA' : 'TLS'}`);
    }
    reader.detach();
    const t = tls.connect({ ...targetTlsOptions(plan.host, plan.ca), socket: raw });
    sock = t;
    await new Promise<void>((res, rej) => {
      t.once('secureConnect', () => { t.off('error', rej); res(); });
      t.once('error', rej);
    }).catch((e: Error) => { throw new UpstreamError(`TLS with the RDP target failed: ${e.message}`); });
    t.setNoDelay(true);
    if (selected === PROTOCOL_HYBRID && plan.nla) {
      const done = await credsspClient(t, plan.nla, { now: () => plan.clock.now() }).catch((e: Error) => {
        throw new UpstreamError(e instanceof NlaError ? e.message : `CredSSP with the target failed: ${e.message}`);
      });
      if (done.rest.length) throw new UpstreamError('the target sent data before the MCS connection');
    }
    const r = new FrameReader();
    r.attach(t);

    // MCS Connect-Initial (serverSelectedProtocol = what the target selected; FreeRDP rejects a mismatch)
    const blocks = plan.blocks.map((b) => b.type === CS_CORE ? { type: b.type, data: patchClientCore(b.data, selected) } : b)
      .filter((b) => b.type !== CS_NET);
    blocks.push({ type: CS_NET, data: encodeClientNetwork(plan.channels) });
    t.write(mcsFrame(encodeConnectInitial({ head: plan.mcsHead, userData: encodeConferenceCreateRequest(blocks) })));
    const resp = parseConnectResponse(dataOf(await r.next('the MCS Connect-Response'), 'the MCS Connect-Response'));
    if (resp.result !== 0) throw new UpstreamError(`the target refused the MCS connection (result ${resp.result})`);
    const sblocks = parseConferenceCreateResponse(resp.userData);
    const net_ = sblocks.find((b) => b.type === SC_NET);
    const sn = net_ ? readServerNetwork(net_.data) : { ioChannel: MCS_GLOBAL_CHANNEL, channelIds: [] };
    if (sn.channelIds.length < plan.channels.length) throw new UpstreamError('the target assigned fewer channels than requested');

    t.write(mcsFrame(encodeDomainPdu({ type: 'erectDomainRequest' })));
    t.write(mcsFrame(encodeDomainPdu({ type: 'attachUserRequest' })));
    const auc = parseDomainPdu(dataOf(await r.next('the MCS Attach User Confirm'), 'the MCS Attach User Confirm'));
    if (auc.type !== 'attachUserConfirm' || auc.result !== 0 || auc.initiator === null) throw new UpstreamError('the target refused the MCS Attach User');
    const userId = auc.initiator;
    const join = [userId, sn.ioChannel, ...sn.channelIds.slice(0, plan.channels.length)];
    for (const ch of join) {
      t.write(mcsFrame(encodeDomainPdu({ type: 'channelJoinRequest', initiator: userId, channelId: ch })));
      const cjc = parseDomainPdu(dataOf(await r.next('an MCS Channel Join Confirm'), 'an MCS Channel Join Confirm'));
      if (cjc.type !== 'channelJoinConfirm' || cjc.result !== 0) throw new UpstreamError(`the target refused to join channel ${ch}`);
    }
    if (signal.aborted) throw new UpstreamError('the session ended while the target connection was starting');
    // Client Info with the minted credential.
    const info = encodeSecurityHeader(SEC_INFO_PKT, encodeClientInfo(plan.info));
    t.write(mcsFrame(encodeDomainPdu({ type: 'sendData', indication: false, initiator: userId, channelId: sn.ioChannel, flags: 0x70, data: info })));
    const { frames, rest } = r.detach();
    return { socket: t, userId, ioChannel: sn.ioChannel, channelIds: sn.channelIds.slice(0, plan.channels.length), frames, rest, selectedProtocol: selected };
  } catch (e) {
    sock.destroy();
    if (e instanceof UpstreamError) throw e;
    throw new UpstreamError(`RDP target handshake failed: ${(e as Error).message}`);
  } finally {
    timer.cancel();
  }
}
