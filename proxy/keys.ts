import { createHash, randomUUID } from 'node:crypto';
import type { Clock } from '../policies/clock.js';
import type { GatewayKey } from '../auth/keys.js';
import { parseSshPublicKey, verifySshSignature } from '../auth/sshsig.js';
import type { PublicKeyRecord, Store } from './store/types.js';
import type { AuditLog } from './audit.js';
import { RefusedError } from './errors.js';

/**
 * Registered SSH public keys for native sign-in. Registering one proves possession of its private
 * key: the gateway seals a challenge naming the identity and the key, the person signs it with
 * `ssh-keygen -Y sign -n tollgate-key-registration` (tollgate keys add does it), and the gateway
 * checks the SSHSIG signature against the key before storing it.
 */

/** SSHSIG namespace of key registration challenges, and how long a challenge may be used. */
export const KEY_NAMESPACE = 'tollgate-key-registration';
const KEY_CHALLENGE_TTL_MS = 5 * 60_000;

const KEY_TYPES = new Set(['ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com']);

/** Parse an OpenSSH public key line; returns its canonical "type base64" form and SHA256 fingerprint. */
export function publicKeyFingerprint(line: string): { line: string; fingerprint: string } | null {
  const parts = line.trim().split(/\s+/);
  if (parts.length < 2 || !KEY_TYPES.has(parts[0]!)) return null;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(parts[1]!)) return null;
  const blob = Buffer.from(parts[1]!, 'base64');
  // The blob starts with the key type as an SSH string.
  if (blob.length < 4) return null;
  const n = blob.readUInt32BE(0);
  if (n > blob.length - 4 || blob.subarray(4, 4 + n).toString() !== parts[0]) return null;
  return { line: `${parts[0]} ${parts[1]}`, fingerprint: `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}` };
}

/** A key line the gateway accepts for registration, or a refusal naming publicKey. */
function usableKey(line: string): { line: string; fingerprint: string; blob: Buffer } {
  const fp = publicKeyFingerprint(line);
  if (!fp) throw new RefusedError('invalid', 'publicKey: an OpenSSH public key line such as "ssh-ed25519 AAAA... comment"', 'publicKey');
  if (fp.line.startsWith('sk-')) throw new RefusedError('invalid', 'publicKey: security-key (sk-…) keys cannot prove possession here yet; register an ed25519, ECDSA or RSA key', 'publicKey');
  const blob = Buffer.from(fp.line.split(' ')[1]!, 'base64');
  let parsed: ReturnType<typeof parseSshPublicKey>;
  try { parsed = parseSshPublicKey(blob); } catch (e) {
    throw new RefusedError('invalid', `publicKey: not a usable key (${(e as Error).message})`, 'publicKey');
  }
  if (parsed.bits !== undefined && parsed.bits < 2048) throw new RefusedError('invalid', `publicKey: RSA keys must have at least 2048 bits (this one has ${parsed.bits})`, 'publicKey');
  return { ...fp, blob };
}

export class SshKeys {
  constructor(private readonly deps: {
    store: Store;
    clock: Clock;
    audit: Pick<AuditLog, 'append'>;
    key: Pick<GatewayKey, 'seal' | 'unseal'>;
  }) {}

  /** A challenge for `sub` to sign with the key to register. */
  challenge(sub: string, publicKey: string): { challenge: string; namespace: string; fingerprint: string; expiresAt: string; command: string } {
    const k = usableKey(publicKey);
    const expiresAt = this.deps.clock.now() + KEY_CHALLENGE_TTL_MS;
    const challenge = this.deps.key.seal({ p: 'key-registration', s: sub, f: k.fingerprint, n: randomUUID() }, KEY_CHALLENGE_TTL_MS);
    return {
      challenge, namespace: KEY_NAMESPACE, fingerprint: k.fingerprint, expiresAt: new Date(expiresAt).toISOString(),
      command: `printf %s '<challenge>' > challenge && ssh-keygen -Y sign -n ${KEY_NAMESPACE} -f <private key> challenge`,
    };
  }

  /** Register a key for `sub` after checking the signed challenge; each refusal is audited as key.refused. */
  async register(sub: string, b: { publicKey: string; name: string; challenge?: string; signature?: string }): Promise<PublicKeyRecord> {
    const k = usableKey(b.publicKey);
    const refuse = async (field: string, message: string): Promise<never> => {
      await this.deps.audit.append(sub, 'key.refused', null, { fingerprint: k.fingerprint, reason: message });
      throw new RefusedError('invalid', `${field}: ${message}`, field);
    };
    if (!b.challenge || !b.signature) {
      return refuse('signature', `proof of possession is required: get a challenge (POST /api/v1/keys/challenge), sign it with ssh-keygen -Y sign -n ${KEY_NAMESPACE}, and send challenge and signature (tollgate keys add does this)`);
    }
    const c = this.deps.key.unseal<{ p?: string; s?: string; f?: string }>(b.challenge);
    if (!c || c.p !== 'key-registration') return refuse('challenge', 'expired or not issued by this gateway; ask for a new one');
    if (c.s !== sub) return refuse('challenge', 'issued to another identity');
    if (c.f !== k.fingerprint) return refuse('challenge', 'issued for another key');
    const message = Buffer.from(b.challenge, 'utf8');
    let v = verifySshSignature(b.signature, message, KEY_NAMESPACE, k.blob);
    // `echo challenge | ssh-keygen -Y sign` signs it with a trailing newline: the same proof.
    if (!v.ok && v.reason === 'the signature does not verify') {
      const nl = verifySshSignature(b.signature, Buffer.concat([message, Buffer.from('\n')]), KEY_NAMESPACE, k.blob);
      if (nl.ok) v = nl;
    }
    if (!v.ok) return refuse('signature', v.reason);
    if ((await this.deps.store.listPublicKeys({ fingerprint: k.fingerprint })).length) throw new RefusedError('conflict', 'this key is already registered');
    const rec: PublicKeyRecord = { id: randomUUID(), identity: sub, publicKey: k.line, fingerprint: k.fingerprint, name: b.name, createdAt: this.deps.clock.now() };
    await this.deps.store.insertPublicKey(rec);
    await this.deps.audit.append(sub, 'key.registered', rec.id, { fingerprint: k.fingerprint, name: b.name, proof: 'sshsig' });
    return rec;
  }

  list(sub: string): Promise<PublicKeyRecord[]> {
    return this.deps.store.listPublicKeys({ identity: sub });
  }

  /** Remove one of `sub`'s keys (audited); refused when it is not theirs. */
  async remove(sub: string, id: string): Promise<void> {
    const mine = (await this.list(sub)).find((k) => k.id === id);
    if (!mine) throw new RefusedError('not_found', 'no such key');
    await this.deps.store.deletePublicKey(mine.id);
    await this.deps.audit.append(sub, 'key.removed', mine.id, { fingerprint: mine.fingerprint });
  }
}
