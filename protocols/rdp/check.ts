/** "Reachable": X.224 negotiation (TLS, or NLA when allowed) and TLS with the target (verified with options.ca); local-account mode also needs root here, sam-file a writable SAM file. */
import { accessSync, constants } from 'node:fs';
import { dirname } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import type { CheckResult, ProtocolContext, TargetConfig } from '../types.js';
import { RdpProtocolError } from './errors.js';
import { credentialsOf, optionsOf, DEFAULT_PORT, targetTlsOptions } from './config.js';
import { FrameReader } from './reader.js';
import { encodeTpkt } from './tpkt.js';
import { encodeConnectionRequest, parseConnectionConfirm, PROTOCOL_HYBRID, PROTOCOL_SSL } from './x224.js';
import { checkStageOf, parseAddress } from '../net.js';

export async function checkTarget(ctx: ProtocolContext, target: TargetConfig): Promise<CheckResult> {
  const { host, port } = parseAddress(target.address, DEFAULT_PORT);
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
    if (f.kind !== 'tpkt') return { ok: false, stage: 'protocol', detail: 'not an RDP server' };
    const neg = parseConnectionConfirm(f.payload).negotiation;
    if (!neg || neg.type !== 'response' || !(neg.selectedProtocol === PROTOCOL_SSL || (opts.nla && neg.selectedProtocol === PROTOCOL_HYBRID))) {
      return { ok: false, stage: 'tls', detail: `the RDP server does not offer TLS${opts.nla ? ' or NLA' : ''} security` };
    }
    const security = neg.selectedProtocol === PROTOCOL_HYBRID ? 'NLA' : 'TLS';
    r.detach();
    const t = tls.connect({ ...targetTlsOptions(host, opts.ca), socket: sock });
    const failed = await new Promise<void>((res, rej) => { t.once('secureConnect', res); t.once('error', rej); })
      .then(() => null, (e: Error) => `TLS with the RDP server failed: ${e.message}`);
    if (failed) { t.destroy(); return { ok: false, stage: 'tls', detail: failed }; }
    t.destroy();
    const cred = credentialsOf(target);
    if (cred.mode === 'sam-file') {
      try { accessSync(dirname(cred.path), constants.W_OK); } catch {
        return { ok: false, stage: 'provision', detail: `reachable (${security}), but the SAM file's directory ${dirname(cred.path)} is not writable here` };
      }
      return { ok: true, detail: `reachable, ${security} works; session passwords go to the SAM file ${cred.path}` };
    }
    const root = process.getuid?.() === 0;
    return root
      ? { ok: true, detail: `reachable, ${security} works; session accounts are created on this host (running as root)` }
      : { ok: false, stage: 'provision', detail: `reachable, ${security} works, but the gateway is not root and cannot create session accounts` };
  } catch (e) {
    return { ok: false, stage: checkStageOf(e, e instanceof RdpProtocolError ? 'protocol' : 'dial'), detail: `cannot reach the RDP server at ${host}:${port}: ${(e as Error).message}` };
  } finally {
    timer.cancel();
    sock.destroy();
  }
}
