import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { Secret } from '../auth/secret.js';
import type { TlsMaterial } from '../protocols/types.js';

/**
 * The gateway's TLS identity when none is configured: a private CA (kept in dataDir/tls) and a
 * server certificate for the public host, loopback and localhost. Clients may pin ca.pem
 * (GET /api/v1/ca.pem). Made with the openssl CLI (Debian's ca-certificates depends on it).
 */
export function ensureTlsMaterial(dataDir: string, hosts: string[]): TlsMaterial {
  const dir = join(dataDir, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caKey = join(dir, 'ca.key');
  const caPem = join(dir, 'ca.pem');
  const key = join(dir, 'server.key');
  const cert = join(dir, 'server.pem');
  const names = [...new Set(['localhost', '127.0.0.1', '::1', ...hosts])];
  const sanFile = join(dir, 'san.txt');
  const san = `subjectAltName=${names.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',')}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`;
  const run = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (!existsSync(caKey) || !existsSync(caPem)) {
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', caKey, '-out', caPem,
      '-days', '3650', '-subj', '/CN=Tollgate gateway CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    chmodSync(caKey, 0o600);
  }
  const previousSan = existsSync(sanFile) ? readFileSync(sanFile, 'utf8') : '';
  if (!existsSync(key) || !existsSync(cert) || previousSan !== san) {
    const csr = join(dir, 'server.csr');
    // RSA keeps old clients (and TDS/RDP stacks) happy.
    run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${hosts[0] ?? 'localhost'}`);
    chmodSync(key, 0o600);
    writeFileSync(sanFile, san);
    run('x509', '-req', '-in', csr, '-CA', caPem, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '825', '-sha256', '-extfile', sanFile);
  }
  const ca = readFileSync(caPem, 'utf8');
  return { cert: readFileSync(cert, 'utf8') + ca, key: new Secret(readFileSync(key, 'utf8')), ca };
}
