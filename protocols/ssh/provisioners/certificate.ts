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

/** How long a target's confirmed CA trust is taken as given before the next session checks again. */
export const CA_TRUST_TTL_MS = 60_000;
/** Per target and file: the check (or install) of the CA key in flight or done, and when it was confirmed. */
const caTrusted = new Map<string, { check: Promise<void>; at: number }>();

/**
 * Make sure the target trusts the CA (when credentials.trustedCaFile names its TrustedUserCAKeys
 * file). A confirmed check holds for CA_TRUST_TTL_MS, and sessions starting together share one
 * check: without that every session start opened an admin connection of its own just to grep the file.
 * `fresh`: check on the target now (a target test).
 */
export async function ensureCaTrusted(ctx: ProtocolContext, target: TargetConfig, opts: { fresh?: boolean } = {}): Promise<void> {
  const file = target.credentials.trustedCaFile;
  if (typeof file !== 'string') return;
  if (!PATH_RE.test(file)) throw new Error('credentials.trustedCaFile must be an absolute path');
  const { publicLine } = loadOrCreateCa(ctx.config.dataDir);
  const key = `${target.name}\0${target.address}\0${file}\0${publicLine}`;
  const known = caTrusted.get(key);
  if (known && !opts.fresh && Date.now() - known.at < CA_TRUST_TTL_MS) return known.check;
  const check = (async () => {
    const r = await runScript(ctx, target, `grep -qxF ${shq(publicLine)} ${shq(file)} 2>/dev/null || printf '%s\\n' ${shq(publicLine)} >> ${shq(file)}`);
    if (r.code !== 0) throw new Error(`could not install the CA key on ${target.name}: ${r.stderr.trim()}`);
  })();
  const entry = { check, at: Date.now() };
  caTrusted.set(key, entry);
  // A failed check is not remembered: the next session tries again.
  check.then(() => { entry.at = Date.now(); }, () => { if (caTrusted.get(key) === entry) caTrusted.delete(key); });
  return check;
}

/**
 * Session keys to append to a target's revoked-keys file, in one admin script per batch (group
 * commit): while one batch is being written, the keys of every session that ends meanwhile wait for
 * the next one. So 1,000 sessions ending together cost a few admin connections, not 1,000.
 */
const revokedQueued = new Map<string, { keys: Set<string>; written: Promise<void> }>();
const revokedWriting = new Map<string, Promise<void>>();

function appendRevokedKey(ctx: ProtocolContext, target: TargetConfig, file: string, pub: string): Promise<void> {
  const key = `${target.name}\0${file}`;
  const queued = revokedQueued.get(key);
  if (queued) { queued.keys.add(pub); return queued.written; }
  const keys = new Set([pub]);
  const before = revokedWriting.get(key) ?? Promise.resolve();
  const written = before.catch(() => undefined).then(() => {
    revokedQueued.delete(key);
    return writeRevokedKeys(ctx, target, file, [...keys]);
  });
  revokedQueued.set(key, { keys, written });
  revokedWriting.set(key, written);
  const forget = () => { if (revokedWriting.get(key) === written) revokedWriting.delete(key); };
  written.then(forget, forget);
  return written;
}

async function writeRevokedKeys(ctx: ProtocolContext, target: TargetConfig, file: string, keys: string[]): Promise<void> {
  // The keys are checked (ssh-ed25519 and base64 only), so the quoted here-document holds them as they are;
  // grep -vxF -f keeps those the file does not list yet (an empty file lists none).
  const script = [
    `f=${shq(file)}`,
    '[ -e "$f" ] || : >> "$f" || exit 1',
    `new=$(grep -vxF -f "$f" <<'TOLLGATE_KEYS'`,
    ...keys,
    'TOLLGATE_KEYS',
    ')',
    '[ -z "$new" ] || printf \'%s\\n\' "$new" >> "$f"',
  ].join('\n');
  const r = await runScript(ctx, target, script);
  if (r.code !== 0) throw new Error(`could not revoke the session key on ${target.name}: ${r.stderr.trim()}`);
  ctx.log.info({ target: target.name, keys: keys.length }, 'ssh: session keys revoked');
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
    await appendRevokedKey(ctx, target, file, pub);
    ctx.log.debug({ target: target.name, serial: lease.data.serial }, 'ssh: session key revoked');
    return { revoked: true, detail: `session key (serial ${String(lease.data.serial)}) listed in ${file}` };
  },
};
