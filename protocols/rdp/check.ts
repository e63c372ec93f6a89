/** "Reachable": X.224 negotiation (TLS, or NLA when allowed) and TLS with the target (verified with options.ca); local-account mode also needs root here, sam-file a writable SAM file. */
import { accessSync, constants } from 'node:fs';
import { dirname } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import type { ProtocolContext, TargetConfig } from '../types.js';
import { credentialsOf, optionsOf, parseAddress, targetTlsOptions } from './config.js';
import { FrameReader } from './reader.js';
import { encodeTpkt } from './tpkt.js';
import { encodeConnectionRequest, parseConnectionConfirm, PROTOCOL_HYBRID, PROTOCOL_SSL } from './x224.js';

export async function checkTarget(ctx: ProtocolContext, target: TargetConfig): Promise<{ ok: boolean; detail: string }> {
  const { host, port } = parseAddress(target.address);
  const opts = optionsOf(target);
  const timeoutMs = opts.connectTimeout * 1000;
  const offered = opts.nla ? PROTOCOL_SSL | PROTOCOL_HYBRID : PROTOCOL_SSL;
  const sock = net.connect({ host, port });
  const timer = ctx.clock.setTimer(timeoutMs, () => sock.destroy(new Error('timed out')));
  try {
    await new Promise<void>((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    const r = new FrameReader();
    r.attach(sock);
    sock.write(encodeTpkt(encodeConnectionRequest({ requestedProtocols: offered })));
    const f = await r.next('the X.224 Connection Confirm');
    if (f.kind !== 'tpkt') return { ok: false, detail: 'not an RDP server' };
    const neg = parseConnectionConfirm(f.payload).negotiation;
    if (!neg || neg.type !== 'response' || !(neg.selectedProtocol === PROTOCOL_SSL || (opts.nla && neg.selectedProtocol === PROTOCOL_HYBRID))) {
      return { ok: false, detail: `the RDP server does not offer TLS${opts.nla ? ' or NLA' : ''} security` };
    }
    const security = neg.selectedProtocol === PROTOCOL_HYBRID ? 'NLA' : 'TLS';
    r.detach();
    const t = tls.connect({ ...targetTlsOptions(host, opts.ca), socket: sock });
    await new Promise<void>((res, rej) => { t.once('secureConnect', res); t.once('error', rej); })
      .catch((e: Error) => { throw new Error(`TLS with the RDP server failed: ${e.message}`); });
    t.destroy();
    const cred = credentialsOf(target);
    if (cred.mode === 'sam-file') {
      try { accessSync(dirname(cred.path), constants.W_OK); } catch {
        return { ok: false, detail: `reachable (${security}), but the SAM file's directory ${dirname(cred.path)} is not writable here` };
      }
      return { ok: true, detail: `reachable, ${security} works; session passwords go to the SAM file ${cred.path}` };
    }
    const root = process.getuid?.() === 0;
    return root
      ? { ok: true, detail: `reachable, ${security} works; session accounts are created on this host (running as root)` }
      : { ok: false, detail: `reachable, ${security} works, but the gateway is not root and cannot create session accounts` };
  } catch (e) {
    return { ok: false, detail: `cannot reach the RDP server at ${host}:${port}: ${(e as Error).message}` };
  } finally {
    timer.cancel();
    sock.destroy();
  }
}
