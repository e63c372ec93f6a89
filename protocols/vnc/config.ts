/** VNC target configuration: address, how the session password is installed, options, role fields. */
import type { RoleConfig, TargetConfig } from '../types.js';
import { parseAddress } from '../net.js';

export interface VncCredentials {
  /** A VNC password file the gateway rewrites itself (x11vnc -rfbauth, TigerVNC PasswordFile). */
  passwordFile?: string;
  /** A local command (argv) that installs the password it reads on stdin, e.g. ["sh","-c","vncpasswd -f > /srv/vnc/passwd"]. */
  installCommand?: string[];
}

export interface VncOptions {
  /** Offer classic VNC authentication (type 2, DES, weak) besides VeNCrypt X509Plain. */
  classicAuth: boolean;
  /** Seconds between PNG keyframes in the screen recording. */
  keyframeInterval: number;
  /** Seconds to reach the VNC server. */
  connectTimeout: number;
}

export type Clipboard = 'both' | 'to-client' | 'to-server' | 'none';

export const DEFAULT_PORT = 5900;

export function credentialsOf(t: TargetConfig): VncCredentials {
  const c = (t.credentials ?? {}) as Record<string, unknown>;
  const out: VncCredentials = {};
  if (typeof c.passwordFile === 'string') out.passwordFile = c.passwordFile;
  if (Array.isArray(c.installCommand) && c.installCommand.every((s) => typeof s === 'string')) out.installCommand = c.installCommand as string[];
  return out;
}

export function optionsOf(t: TargetConfig): VncOptions {
  const o = (t.options ?? {}) as Record<string, unknown>;
  return {
    classicAuth: o.classicAuth === true,
    keyframeInterval: typeof o.keyframeInterval === 'number' && o.keyframeInterval > 0 ? o.keyframeInterval : 10,
    connectTimeout: typeof o.connectTimeout === 'number' && o.connectTimeout > 0 ? o.connectTimeout : 10,
  };
}

export function clipboardOf(r: RoleConfig): Clipboard {
  const c = r.clipboard;
  return c === 'to-client' || c === 'to-server' || c === 'none' ? c : c === undefined || c === 'both' ? 'both' : 'none';
}

export function viewOnlyOf(r: RoleConfig): boolean {
  return r.viewOnly === true;
}

export function validateTarget(t: TargetConfig): { path: string; expected: string } | null {
  try { parseAddress(t.address, DEFAULT_PORT); } catch { return { path: 'address', expected: 'host[:port] of the VNC server' }; }
  const c = (t.credentials ?? {}) as Record<string, unknown>;
  if (c.passwordFile !== undefined && (typeof c.passwordFile !== 'string' || !c.passwordFile.startsWith('/'))) {
    return { path: 'credentials.passwordFile', expected: 'an absolute path of the VNC server\'s password file' };
  }
  if (c.installCommand !== undefined && (!Array.isArray(c.installCommand) || !c.installCommand.length || !c.installCommand.every((s) => typeof s === 'string'))) {
    return { path: 'credentials.installCommand', expected: 'an argv list that reads the new password on stdin' };
  }
  if (c.passwordFile === undefined && c.installCommand === undefined) {
    return { path: 'credentials', expected: 'passwordFile and/or installCommand, to install a password minted for each session' };
  }
  const o = (t.options ?? {}) as Record<string, unknown>;
  if (o.classicAuth !== undefined && typeof o.classicAuth !== 'boolean') return { path: 'options.classicAuth', expected: 'true or false' };
  for (const k of ['keyframeInterval', 'connectTimeout']) {
    if (o[k] !== undefined && (typeof o[k] !== 'number' || !((o[k] as number) > 0))) return { path: `options.${k}`, expected: 'a positive number of seconds' };
  }
  for (const [i, r] of t.roles.entries()) {
    if (r.clipboard !== undefined && !['both', 'to-client', 'to-server', 'none'].includes(r.clipboard as string)) {
      return { path: `roles[${i}].clipboard`, expected: 'both, to-client, to-server or none' };
    }
    if (r.viewOnly !== undefined && typeof r.viewOnly !== 'boolean') return { path: `roles[${i}].viewOnly`, expected: 'true or false' };
  }
  return null;
}
