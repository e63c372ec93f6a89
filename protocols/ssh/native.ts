/** What `tollgate connect` runs for an SSH target: ssh, the one-time secret typed through SSH_ASKPASS. */
import type { ClientCommandInfo, NativeClient } from '../types.js';

/** ssh options that trust only the gateway key in `file` (from GET /api/v1/ssh/known_hosts). */
export function knownHostsOptions(file: string): string[] {
  return ['-o', `UserKnownHostsFile=${file}`, '-o', 'StrictHostKeyChecking=yes'];
}

export function sshNativeClient(info: ClientCommandInfo): NativeClient {
  return {
    argv: ['ssh', '-p', String(info.port), ...knownHostsOptions(info.files.knownHosts), '-o', 'PreferredAuthentications=password,keyboard-interactive', `${info.username}@${info.host}`],
    env: {},
    askpass: true,
  };
}
