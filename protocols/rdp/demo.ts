/** `tollgate demo`: an xrdp target (xrdp + sesman with their own config in dir, an xterm as the session). */
import type { Logger } from 'pino';
import type { DemoTargets } from '../types.js';
import { startXrdp, xrdpInstalled } from './xrdp.js';

export async function demo(dir: string, log: Logger): Promise<DemoTargets | null> {
  if (!xrdpInstalled() || process.getuid?.() !== 0) return null;
  try {
    const srv = await startXrdp(dir);
    log.info({ port: srv.port }, 'demo: xrdp started');
    return {
      targets: [{
        name: 'rdp-desktop', protocol: 'rdp', address: `${srv.host}:${srv.port}`, risk: 'medium',
        description: 'demo Linux desktop (xrdp + xterm), a fresh account per session',
        roles: [{ name: 'user', channels: ['cliprdr'] }, { name: 'admin', groups: ['adm'], channels: ['cliprdr', 'rdpdr'] }],
        credentials: { mode: 'local-account', prefix: 'tg-' }, options: {},
      }],
      stop: () => srv.stop(),
    };
  } catch (e) {
    log.warn({ err: (e as Error).message }, 'demo: xrdp did not start');
    return null;
  }
}
