/** Dial the target as the minted credential. */
import ssh2 from 'ssh2';
import type { TargetConfig } from '../types.js';
import { DEFAULT_PORT } from './config.js';
import { patchCertPublickey, ForwardingAgent, type StreamOpener } from './cert-agent.js';
import type { UpstreamCredential } from './provisioners/types.js';
import { parseAddress } from '../net.js';

const { Client } = ssh2;

/**
 * The target must present the host key the credential's provisioner checked (cred.hostKey); a
 * session connection never trusts a new key. forwardAgent: set when the role allows agent
 * forwarding (opens a channel back to the person's agent).
 */
export function dialUpstream(target: TargetConfig, cred: UpstreamCredential, forwardAgent?: StreamOpener, timeoutMs = 15_000): Promise<ssh2.Client> {
  const { host, port } = parseAddress(target.address, DEFAULT_PORT);
  return new Promise((resolve, reject) => {
    const c = new Client();
    let settled = false;
    c.once('ready', () => {
      settled = true;
      c.setNoDelay(true); // small interactive packets leave at once (see frontend.ts)
      resolve(c);
    });
    c.on('error', (e: Error & { level?: string }) => {
      if (settled) return;
      settled = true;
      c.end();
      void cred.hostKey.refused().then((hk) => {
        if (hk) return reject(hk);
        const why = e.level === 'client-authentication' ? `the target refused the session credential for ${cred.username}` : e.message;
        reject(new Error(`could not reach ${target.name} (${target.address}): ${why}`));
      });
    });
    const opts: ssh2.ConnectConfig = { host, port, username: cred.username, readyTimeout: timeoutMs, hostVerifier: cred.hostKey.verifier };
    if (cred.password) opts.password = cred.password.reveal();
    if (cred.privateKey) opts.privateKey = cred.privateKey.reveal();
    if (cred.agent) {
      if (forwardAgent) cred.agent.forwardTo = forwardAgent;
      opts.agent = cred.agent as unknown as ssh2.BaseAgent;
    } else if (forwardAgent) {
      opts.agent = new ForwardingAgent(forwardAgent) as unknown as ssh2.BaseAgent;
    }
    try {
      c.connect(opts);
      if (cred.certificate) patchCertPublickey(c);
    } catch (e) {
      settled = true;
      reject(new Error(`could not reach ${target.name}: ${(e as Error).message}`));
    }
  });
}
