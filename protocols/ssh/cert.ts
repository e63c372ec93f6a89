/**
 * OpenSSH user certificates (PROTOCOL.certkeys), written here: the gateway's CA (an ed25519 key
 * under dataDir) signs an ed25519 key pair minted for one session.
 */
import { randomBytes, createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { sshString } from './wire.js';
import { noteIssued } from '../../auth/secret.js';
import { writeFileDurable } from '../../auth/durable.js';

const { utils } = ssh2;
export type ParsedKey = ssh2.ParsedKey;

export const CERT_TYPE_ED25519 = 'ssh-ed25519-cert-v01@openssh.com';
export const SSH_CERT_TYPE_USER = 1;

function u32(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; }
function u64(n: bigint): Buffer { const b = Buffer.alloc(8); b.writeBigUInt64BE(n); return b; }

/** Read consecutive SSH strings from a buffer (throws on truncation). */
export function readStrings(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let p = 0;
  while (p < buf.length) {
    if (p + 4 > buf.length) throw new Error('truncated string length');
    const n = buf.readUInt32BE(p);
    if (p + 4 + n > buf.length) throw new Error('truncated string');
    out.push(buf.subarray(p + 4, p + 4 + n));
    p += 4 + n;
  }
  return out;
}

export function fingerprintOf(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/** The raw 32-byte ed25519 public key inside an "ssh-ed25519" public key blob. */
export function ed25519Raw(pubBlob: Buffer): Buffer {
  const [type, raw] = readStrings(pubBlob);
  if (!type || type.toString() !== 'ssh-ed25519' || !raw || raw.length !== 32) throw new Error('not an ssh-ed25519 public key');
  return raw;
}

export interface CertificateSpec {
  /** The session key's "ssh-ed25519" public blob. */
  publicKey: Buffer;
  serial: bigint;
  keyId: string;
  principals: string[];
  /** Unix seconds. */
  validAfter: number;
  validBefore: number;
  criticalOptions?: Record<string, string>;
  /** Extension names (flags with empty data), e.g. permit-pty. */
  extensions?: string[];
}

/** Build and sign an ssh-ed25519-cert-v01@openssh.com certificate blob with the CA key. */
export function signCertificate(ca: ParsedKey, spec: CertificateSpec): Buffer {
  if (ca.type !== 'ssh-ed25519') throw new Error('the CA must be an ed25519 key');
  const principals = Buffer.concat(spec.principals.map((p) => sshString(p)));
  const crit = Object.keys(spec.criticalOptions ?? {}).sort()
    .map((k) => Buffer.concat([sshString(k), sshString(sshString(spec.criticalOptions![k]!))]));
  const exts = [...new Set(spec.extensions ?? [])].sort().map((k) => Buffer.concat([sshString(k), sshString('')]));
  const body = Buffer.concat([
    sshString(CERT_TYPE_ED25519),
    sshString(randomBytes(32)),
    sshString(ed25519Raw(spec.publicKey)),
    u64(spec.serial),
    u32(SSH_CERT_TYPE_USER),
    sshString(spec.keyId),
    sshString(principals),
    u64(BigInt(Math.max(0, Math.floor(spec.validAfter)))),
    u64(BigInt(Math.max(0, Math.floor(spec.validBefore)))),
    sshString(Buffer.concat(crit)),
    sshString(Buffer.concat(exts)),
    sshString(''),
    sshString(ca.getPublicSSH()),
  ]);
  const sig = ca.sign(body);
  if (sig instanceof Error) throw sig;
  return Buffer.concat([body, sshString(Buffer.concat([sshString('ssh-ed25519'), sshString(sig)]))]);
}

export interface CertificateInfo {
  type: string; serial: bigint; certType: number; keyId: string; principals: string[];
  validAfter: number; validBefore: number; extensions: string[]; caKey: Buffer; publicKey: Buffer;
}

/** Parse an ed25519 certificate blob (used by tests and by revocation). */
export function parseCertificate(blob: Buffer): CertificateInfo {
  let p = 0;
  const str = (): Buffer => {
    const n = blob.readUInt32BE(p); const s = blob.subarray(p + 4, p + 4 + n); p += 4 + n;
    if (s.length !== n) throw new Error('truncated certificate');
    return s;
  };
  const type = str().toString();
  if (type !== CERT_TYPE_ED25519) throw new Error(`unsupported certificate type ${type}`);
  str(); // nonce
  const pk = str();
  const serial = blob.readBigUInt64BE(p); p += 8;
  const certType = blob.readUInt32BE(p); p += 4;
  const keyId = str().toString();
  const principals = readStrings(str()).map((b) => b.toString());
  const validAfter = Number(blob.readBigUInt64BE(p)); p += 8;
  const validBefore = Number(blob.readBigUInt64BE(p)); p += 8;
  str(); // critical options
  const extRaw = readStrings(str());
  const extensions = extRaw.filter((_, i) => i % 2 === 0).map((b) => b.toString());
  str(); // reserved
  const caKey = str();
  return {
    type, serial, certType, keyId, principals, validAfter, validBefore, extensions, caKey,
    publicKey: Buffer.concat([sshString('ssh-ed25519'), sshString(pk)]),
  };
}

/**
 * An ed25519 key pair in OpenSSH format that ssh2 can read back. ssh2's generateKeyPairSync drops a
 * leading zero byte of the public key (about 1 key in 256 comes out malformed), so such keys are
 * discarded and generated again.
 */
export function generateEd25519(comment?: string): { private: string; public: string; key: ParsedKey } {
  for (let i = 0; i < 32; i++) {
    const kp = utils.generateKeyPairSync('ed25519', comment ? { comment } : undefined);
    const key = utils.parseKey(kp.private);
    if (key instanceof Error || Array.isArray(key)) continue;
    try { ed25519Raw(key.getPublicSSH()); } catch { continue; }
    return { private: kp.private, public: kp.public, key };
  }
  throw new Error('ed25519 key generation failed');
}

/** The gateway's SSH CA: an ed25519 key kept under dataDir/ssh (mode 0600), created on first use. */
export function loadOrCreateCa(dataDir: string): { key: ParsedKey; publicLine: string } {
  const dir = join(dataDir, 'ssh');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'ca_ed25519');
  if (!existsSync(file)) {
    const kp = generateEd25519('tollgate-ssh-ca');
    // Synced before use: targets trust this CA (auth/durable.ts).
    writeFileDurable(file, kp.private, { mode: 0o600, exclusive: true });
    writeFileDurable(`${file}.pub`, kp.public + '\n', { mode: 0o644 });
  }
  chmodSync(file, 0o600);
  const key = utils.parseKey(readFileSync(file, 'utf8'));
  if (key instanceof Error || Array.isArray(key)) throw new Error('the SSH CA key under the data directory is unreadable');
  return { key, publicLine: `ssh-ed25519 ${key.getPublicSSH().toString('base64')} tollgate-ssh-ca` };
}

/** A fresh ed25519 key pair for one session (never written to disk). */
export function mintSessionKey(): { key: ParsedKey; publicLine: string; privateText: string } {
  const kp = generateEd25519();
  const key = kp.key;
  return { key, publicLine: `ssh-ed25519 ${key.getPublicSSH().toString('base64')}`, privateText: noteIssued('ssh_session_private_key', kp.private) };
}
