/** The gateway's own SSH host key as known_hosts lines (GET /api/v1/ssh/known_hosts), so clients check it strictly. */
import ssh2 from 'ssh2';
import type { ProtocolContext } from '../types.js';
import { loadOrCreateHostKey } from './frontend.js';

export const KNOWN_HOSTS_PATH = '/api/v1/ssh/known_hosts';

const publicLines = new WeakMap<ProtocolContext, string>();

/** "ssh-ed25519 AAAA..." of the gateway's host key (made on first use, like the listener does). */
export function gatewayHostKey(ctx: ProtocolContext): string {
  let line = publicLines.get(ctx);
  if (!line) {
    const key = ssh2.utils.parseKey(loadOrCreateHostKey(ctx.config.dataDir));
    if (key instanceof Error) throw key;
    line = `${key.type} ${key.getPublicSSH().toString('base64')}`;
    publicLines.set(ctx, line);
  }
  return line;
}

/** One known_hosts line for host:port (OpenSSH writes "[host]:port" unless the port is 22). */
export function knownHosts(ctx: ProtocolContext, host: string, port: number): string {
  const pattern = port === 22 ? host : `[${host}]:${port}`;
  return `${pattern} ${gatewayHostKey(ctx)}\n`;
}
