import { createHash } from 'node:crypto';

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
