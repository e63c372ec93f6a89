/**
 * VNC brokering: TigerVNC's vncviewer (VeNCrypt X509Plain), classic-auth viewers where a target
 * allows it; a password minted and installed for each session; screen recording with keyframes.
 */
import type { ClientCommandInfo, ProtocolModule } from '../types.js';
import { Secret } from '../../auth/secret.js';
import { credentialsOf, optionsOf, parseAddress, validateTarget } from './config.js';
import { demo } from './demo.js';
import { mountBrowser } from './browser.js';
import { LEASE_KIND, listenVnc } from './frontend.js';
import { dialUpstream, installPassword, mintPassword, withTargetLock } from './upstream.js';

/** How long a sealed classic-auth key stays readable (secrets never outlive their grant anyway). */
const CLASSIC_SEAL_MS = 31 * 86_400_000;

function sh(v: string): string {
  return /^[A-Za-z0-9_.:\/@+=-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`;
}

export const vncModule: ProtocolModule = {
  name: 'vnc',
  defaultPort: 5900,
  validateTarget,
  listen: (ctx, address) => listenVnc(ctx, address),
  mountHttp: (ctx, front) => mountBrowser(ctx, front),

  async checkTarget(ctx, target) {
    // Install a throwaway password, log in with it, then replace it again.
    const cred = credentialsOf(target);
    return withTargetLock(target.name, async () => {
    try {
      const p = new Secret(mintPassword());
      await installPassword(cred, p);
      const { host, port } = parseAddress(target.address);
      const up = await dialUpstream({ host, port, password: p, timeoutMs: optionsOf(target).connectTimeout * 1000, clock: ctx.clock });
      up.socket.destroy();
      return { ok: true, detail: `reachable, password install works (${up.init.width}x${up.init.height} "${up.init.name.slice(0, 80)}")` };
    } catch (e) {
      return { ok: false, detail: (e as Error).message };
    } finally {
      await installPassword(cred, new Secret(mintPassword())).catch(() => undefined);
    }
    });
  },

  async revokeLease(_ctx, target, lease) {
    if (lease.kind !== LEASE_KIND) return;
    // A fresh random password nobody sees: the minted one is dead.
    await withTargetLock(target.name, () => installPassword(credentialsOf(target), new Secret(mintPassword())));
  },

  secretLength(target) {
    return optionsOf(target).classicAuth ? 8 : undefined;
  },

  secretVerifiers(ctx, target, secret) {
    if (!optionsOf(target).classicAuth) return {} as Record<string, string>;
    // Classic VNC auth needs the key itself: kept sealed with the gateway key, never plain.
    return { 'vnc-des': ctx.seal({ k: secret.reveal() }, CLASSIC_SEAL_MS) };
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
