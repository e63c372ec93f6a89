/** RDP brokering: xfreerdp / mstsc through Tollgate with TLS, a per-session Linux account on xrdp, screen recording. */
import type { ClientCommandInfo, ProtocolModule } from '../types.js';
import { validateTarget } from './config.js';
import { demo } from './demo.js';
import { deleteAccount, LEASE_KIND, listenRdp, NT_VERIFIER, refuseRdp, rotateSamPassword, SAM_LEASE_KIND } from './frontend.js';
import { ntHash } from './nlmp.js';

/** How long the sealed NT hash of a connection secret stays usable (secrets expire well before). */
const NT_SEAL_MS = 31 * 86_400_000;
import { checkTarget } from './check.js';
import { shellQuote as sh } from '../shell.js';


/**
 * xfreerdp accepts exactly the gateway's certificate (its SHA-256) and nothing else: no prompt, no
 * trust on first use, no fallback to the certificate store.
 */
function certPin(info: ClientCommandInfo): string {
  return `/cert:deny,fingerprint:sha256:${info.certSha256}`;
}

export const rdpModule: ProtocolModule = {
  name: 'rdp',
  defaultPort: 3389,
  validateTarget,
  listen: listenRdp,
  refuse: refuseRdp,
  checkTarget,

  leaseKinds: {
    [LEASE_KIND]: { holds: 'a Linux account on the gateway host (xrdp)', revoke: deleteAccount },
    [SAM_LEASE_KIND]: { holds: 'a per-session password in a SAM file', revoke: rotateSamPassword },
  },

  secretVerifiers(ctx, _target, secret) {
    // NLA from RDP clients proves the secret with NTLMv2, which needs its NT hash (password-equivalent):
    // kept sealed with the gateway key, never plain.
    return { [NT_VERIFIER]: ctx.crypto.seal({ h: ntHash(secret.reveal()).toString('hex') }, NT_SEAL_MS) };
  },

  clientCommands(info: ClientCommandInfo) {
    const v = `${info.host}:${info.port}`;
    const pin = certPin(info);
    return {
      xfreerdp: `xfreerdp /v:${sh(v)} /sec:tls /u:${sh(info.username)} /p:${sh(info.secret)} ${pin}`,
      'xfreerdp (NLA)': `xfreerdp /v:${sh(v)} /sec:nla /u:${sh(info.username)} /p:${sh(info.secret)} ${pin}`,
      'mstsc (.rdp file)': [
        `full address:s:${v}`, `username:s:${info.username}`, 'authentication level:i:0', 'enablecredsspsupport:i:0',
        'prompt for credentials:i:0', 'negotiate security layer:i:1',
      ].join('\n'),
    };
  },

  nativeClient(info) {
    return { argv: ['xfreerdp', `/v:${info.host}:${info.port}`, '/sec:tls', `/u:${info.username}`, `/p:${info.secret}`, certPin(info)], env: {} };
  },

  demo,
};

export default rdpModule;
