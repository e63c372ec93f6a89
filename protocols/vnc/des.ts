/**
 * VNC's DES: single DES with the key's bytes bit-reversed (VNC's d3des quirk), through OpenSSL's
 * des-ede-ecb with the key repeated (K‖K = single DES), since OpenSSL 3 refuses des-ecb.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';

/** The fixed key VNC uses to obfuscate stored password files. */
const PASSWD_FILE_KEY = Buffer.from([23, 82, 107, 6, 35, 78, 88, 7]);

function reverseBits(b: number): number {
  let r = 0;
  for (let i = 0; i < 8; i++) r |= ((b >> i) & 1) << (7 - i);
  return r;
}

/** The 8-byte key VNC derives from a password: first 8 bytes, zero padded. */
export function passwordKey(password: string): Buffer {
  const k = Buffer.alloc(8);
  Buffer.from(password, 'latin1').copy(k, 0, 0, 8);
  return k;
}

function desKey(key8: Buffer): Buffer {
  const k = Buffer.from(key8.map(reverseBits));
  return Buffer.concat([k, k]);
}

export function vncDesEncrypt(key8: Buffer, data: Buffer): Buffer {
  if (key8.length !== 8 || data.length % 8 !== 0) throw new RangeError('VNC DES needs an 8-byte key and whole blocks');
  const c = createCipheriv('des-ede-ecb', desKey(key8), null);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

export function vncDesDecrypt(key8: Buffer, data: Buffer): Buffer {
  const d = createDecipheriv('des-ede-ecb', desKey(key8), null);
  d.setAutoPadding(false);
  return Buffer.concat([d.update(data), d.final()]);
}

/** The response to a 16-byte VNC authentication challenge. */
export function vncAuthResponse(password: string, challenge: Buffer): Buffer {
  return vncDesEncrypt(passwordKey(password), challenge);
}

/** Contents of a VNC password file (x11vnc -rfbauth, TigerVNC PasswordFile) for a password. */
export function vncPasswdFile(password: string): Buffer {
  return vncDesEncrypt(PASSWD_FILE_KEY, passwordKey(password));
}

/** The password stored in a VNC password file (first 8 bytes). */
export function readVncPasswdFile(file: Buffer): string {
  if (file.length < 8) throw new Error('a VNC password file has at least 8 bytes');
  return vncDesDecrypt(PASSWD_FILE_KEY, file.subarray(0, 8)).toString('latin1').replace(/\0+$/, '');
}
