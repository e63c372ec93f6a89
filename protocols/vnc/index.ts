/**
 * VNC brokering: TigerVNC's vncviewer (VeNCrypt X509Plain), classic-auth viewers where a target
 * allows it; a password minted and installed for each session; screen recording with keyframes.
 */
import type { CheckResult, ClientCommandInfo, ProtocolModule } from '../types.js';
import { Secret } from '../../auth/secret.js';
import { credentialsOf, optionsOf, DEFAULT_PORT, validateTarget } from './config.js';
import { demo } from './demo.js';
import { mountBrowser } from './browser.js';
import { LEASE_KIND, listenVnc, refuseVnc } from './frontend.js';
import { dialUpstream, installPassword, mintPassword, withTargetLock } from './upstream.js';
import { shellQuote as sh } from '../shell.js';
import { checkStageOf, parseAddress } from '../net.js';

/** How long a sealed classic-auth key stays readable (secrets never outlive their grant anyway). */
const CLASSIC_SEAL_MS = 31 * 86_400_000;


export const vncModule: ProtocolModule = {
  name: 'vnc',
  defaultPort: 5900,
  validateTarget,
  listen: (ctx, address) => listenVnc(ctx, address),
  refuse: refuseVnc,
  mountHttp: (ctx, front) => mountBrowser(ctx, front),

  async checkTarget(ctx, target): Promise<CheckResult> {
    // Install a throwaway password, log in with it, then replace it again.
    const cred = credentialsOf(target);
    return withTargetLock(target.name, async (): Promise<CheckResult> => {
    try {
      const p = new Secret(mintPassword());
      try { await installPassword(cred, p); } catch (e) { return { ok: false, stage: 'provision', detail: (e as Error).message }; }
      const { host, port } = parseAddress(target.address, DEFAULT_PORT);
      const up = await dialUpstream({ host, port, password: p, timeoutMs: optionsOf(target).connectTimeout * 1000, clock: ctx.clock });
      up.socket.destroy();
      return { ok: true, detail: `reachable, password install works (${up.init.width}x${up.init.height} "${up.init.name.slice(0, 80)}")` };
    } catch (e) {
      const msg = (e as Error).message;
      return { ok: false, stage: /refused the session password/.test(msg) ? 'auth' : /garbage|does not offer/.test(msg) ? 'protocol' : checkStageOf(e, 'protocol'), detail: msg };
    } finally {
      await installPassword(cred, new Secret(mintPassword())).catch(() => undefined);
    }
    });
  },

  leaseKinds: {
    [LEASE_KIND]: {
      holds: 'the VNC server password of one session',
      async revoke(_ctx, target) {
        // A fresh random password nobody sees: the minted one is dead.
        await withTargetLock(target.name, () => installPassword(credentialsOf(target), new Secret(mintPassword())));
        return { revoked: true, detail: `the password of ${target.name} was replaced by one nobody knows` };
      },
    },
  },

  secretLength(target) {
    return optionsOf(target).classicAuth ? 8 : undefined;
  },

  secretVerifiers(ctx, target, secret) {
    if (!optionsOf(target).classicAuth) return {} as Record<string, string>;
    // Classic VNC auth needs the key itself: kept sealed with the gateway key, never plain.
    return { 'vnc-des': ctx.crypto.seal({ k: secret.reveal() }, CLASSIC_SEAL_MS) };
  },

  clientCommands(info: ClientCommandInfo) {
    const env = `VNC_USERNAME=${sh(info.username)} VNC_PASSWORD=${sh(info.secret)}`;
    const cmds: Record<string, string> = {
      vncviewer: `curl -fsS ${sh(info.caUrl)} -o ${sh(info.files.ca)} && ${env} vncviewer -SecurityTypes X509Plain -X509CA ${sh(info.files.ca)} ${sh(`${info.host}::${info.port}`)}`,
    };
    if (optionsOf(info.target).classicAuth && info.secret.length <= 8) {
      cmds['vncviewer (classic VNC auth, weak)'] = `vncviewer -SecurityTypes VncAuth ${sh(`${info.host}::${info.port}`)}  # password: ${info.secret}`;
    }
    return cmds;
  },

  nativeClient(info) {
    return {
      argv: ['vncviewer', '-SecurityTypes', 'X509Plain', '-X509CA', info.files.ca, `${info.host}::${info.port}`],
      env: { VNC_USERNAME: info.username, VNC_PASSWORD: info.secret },
    };
  },

  demo,
};

export default vncModule;
