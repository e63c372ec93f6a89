/** What `tollgate connect` runs for an SSH target: ssh, the one-time secret typed through SSH_ASKPASS. */
import type { ClientCommandInfo, NativeClient } from '../types.js';

export function sshNativeClient(info: ClientCommandInfo): NativeClient {
  return {
    argv: ['ssh', '-p', String(info.port), '-o', 'StrictHostKeyChecking=accept-new', '-o', 'PreferredAuthentications=password,keyboard-interactive', `${info.username}@${info.host}`],
    env: {},
    askpass: true,
  };
}
