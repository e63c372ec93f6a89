/** "Reachable": X.224 negotiation and TLS with the target; local-account mode also needs root here. */
import net from 'node:net';
import tls from 'node:tls';
import type { ProtocolContext, TargetConfig } from '../types.js';
import { optionsOf, parseAddress } from './config.js';
import { FrameReader } from './reader.js';
import { encodeTpkt } from './tpkt.js';
import { encodeConnectionRequest, parseConnectionConfirm, PROTOCOL_SSL } from './x224.js';

export async function checkTarget(ctx: ProtocolContext, target: TargetConfig): Promise<{ ok: boolean; detail: string }> {
  const { host, port } = parseAddress(target.address);
  const timeoutMs = optionsOf(target).connectTimeout * 1000;
  const sock = net.connect({ host, port });
  const timer = ctx.clock.setTimer(timeoutMs, () => sock.destroy(new Error('timed out')));
  try {
    await new Promise<void>((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    const r = new FrameReader();
    r.attach(sock);
    sock.write(encodeTpkt(encodeConnectionRequest({ requestedProtocols: PROTOCOL_SSL })));
    const f = await r.next('the X.224 Connection Confirm');
    if (f.kind !== 'tpkt') return { ok: false, detail: 'not an RDP server' };
    const neg = parseConnectionConfirm(f.payload).negotiation;
    if (!neg || neg.type !== 'response' || neg.selectedProtocol !== PROTOCOL_SSL) return { ok: false, detail: 'the RDP server does not offer TLS security' };
    r.detach();
    const t = tls.connect({ socket: sock, rejectUnauthorized: false });
    await new Promise<void>((res, rej) => { t.once('secureConnect', res); t.once('error', rej); });
    t.destroy();
    const root = process.getuid?.() === 0;
    return root
      ? { ok: true, detail: 'reachable, TLS works; session accounts are created on this host (running as root)' }
      : { ok: false, detail: 'reachable, TLS works, but the gateway is not root and cannot create session accounts' };
  } catch (e) {
    return { ok: false, detail: `cannot reach the RDP server at ${host}:${port}: ${(e as Error).message}` };
  } finally {
    timer.cancel();
    sock.destroy();
  }
}
