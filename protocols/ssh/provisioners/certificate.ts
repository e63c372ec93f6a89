/**
 * 'certificate': the gateway's CA signs a key pair minted for this session, valid for the role's
 * principal until the grant ends. The private key lives only in memory for the session; at the end
 * the key is also appended to the target's RevokedKeys file when one is configured.
 */
import { randomBytes } from 'node:crypto';
import { runScript, sessionHostKey } from '../admin.js';
import { rolePrincipals, PATH_RE } from '../config.js';
import { loadOrCreateCa, mintSessionKey, signCertificate } from '../cert.js';
import { CertAgent } from '../cert-agent.js';
import { shellQuote as shq } from '../../shell.js';
import type { Provisioner, UpstreamCredential } from './types.js';
import type { ProtocolContext, TargetConfig } from '../../types.js';

export const KIND = 'ssh-certificate';

/** Make sure the target trusts the CA (when credentials.trustedCaFile names its TrustedUserCAKeys file). */
export async function ensureCaTrusted(ctx: ProtocolContext, target: TargetConfig): Promise<void> {
  const file = target.credentials.trustedCaFile;
  if (typeof file !== 'string') return;
  if (!PATH_RE.test(file)) throw new Error('credentials.trustedCaFile must be an absolute path');
  const { publicLine } = loadOrCreateCa(ctx.config.dataDir);
  const r = await runScript(ctx, target, `grep -qxF ${shq(publicLine)} ${shq(file)} 2>/dev/null || printf '%s\\n' ${shq(publicLine)} >> ${shq(file)}`);
  if (r.code !== 0) throw new Error(`could not install the CA key on ${target.name}: ${r.stderr.trim()}`);
}

export const certificateProvisioner: Provisioner = {
  kind: KIND,
  holds: 'an SSH certificate for a session key',
  async mint(ctx, session, target, role) {
    const principals = rolePrincipals(role);
    if (!principals.length) throw new Error(`role ${role.name} has no login for certificate mode`);
    const serial = BigInt('0x' + randomBytes(8).toString('hex'));
    const keyId = `tollgate:${session.id}:${session.principal.sub}`.replace(/[^\x20-\x7e]/g, '?');
    // The target checks validity against its own clock: express the grant's remaining time in real time.
    const now = ctx.clock.now();
    const remainingMs = Math.max(0, session.grant.expiresAt - now);
    const validAfter = Math.floor(Date.now() / 1000) - 120;
    const validBefore = Math.ceil((Date.now() + remainingMs) / 1000);
    const { key, publicLine } = mintSessionKey();
    const data = { mode: 'certificate', principals, serial: serial.toString(), keyId, validBefore, publicKey: publicLine };
    const hostKey = await sessionHostKey(ctx, target);
    return session.lease<UpstreamCredential>(KIND, data, async () => {
      await ensureCaTrusted(ctx, target);
      const ca = loadOrCreateCa(ctx.config.dataDir);
      const extensions = ['permit-pty', 'permit-user-rc'];
      if (role.allowPortForwarding === true) extensions.push('permit-port-forwarding');
      if (role.allowAgentForwarding === true) extensions.push('permit-agent-forwarding');
      const cert = signCertificate(ca.key, { publicKey: key.getPublicSSH(), serial, keyId, principals, validAfter, validBefore, extensions });
      session.log.info({ serial: serial.toString(), principals, validBefore }, 'ssh: certificate signed');
      return {
        credential: { username: principals[0]!, agent: new CertAgent(key, cert), certificate: true, hostKey },
        data: { certificate: `ssh-ed25519-cert-v01@openssh.com ${cert.toString('base64')}` },
      };
    });
  },
  async revoke(ctx, target, lease) {
    const file = target.credentials.revokedKeysFile;
    const pub = lease.data.publicKey;
    // Without a revoked-keys file nothing on the target to undo: the private key lived only in this
    // process (the session's agent) and the certificate expires with the grant.
    if (typeof file !== 'string') return { revoked: true, detail: 'the session key lived only in the gateway; its certificate expires with the grant' };
    if (!PATH_RE.test(file)) throw new Error('credentials.revokedKeysFile must be an absolute path');
    if (typeof pub !== 'string' || !/^ssh-ed25519 [A-Za-z0-9+/=]+$/.test(pub)) {
      // A lease without its key (stored by an older version): only an expired certificate is safe.
      const until = Number(lease.data.validBefore);
      if (Number.isFinite(until) && until * 1000 < Date.now()) return { revoked: true, detail: 'no session key recorded; the certificate has expired' };
      throw new Error(`lease ${lease.id}: no session key recorded to put in ${file}, and its certificate has not expired yet`);
    }
    const r = await runScript(ctx, target, `grep -qxF ${shq(pub)} ${shq(file)} 2>/dev/null || printf '%s\\n' ${shq(pub)} >> ${shq(file)}`);
    if (r.code !== 0) throw new Error(`could not revoke the session key on ${target.name}: ${r.stderr.trim()}`);
    ctx.log.info({ target: target.name, serial: lease.data.serial }, 'ssh: session key revoked');
    return { revoked: true, detail: `session key (serial ${String(lease.data.serial)}) listed in ${file}` };
  },
};
