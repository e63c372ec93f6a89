import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { Secret } from '../auth/secret.js';
import { syncPaths } from '../auth/durable.js';
import type { TlsMaterial } from '../protocols/types.js';

/** A certificate authority: PEM certificate and its key. */
export interface CaMaterial { cert: string; key: Secret }

const run = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });

/** The subject organisation of node certificates: the internal channel accepts only peers that carry it. */
export const NODE_CERT_ORG = 'Tollgate gateway node';

/**
 * The gateway's CA: the configured one (gateway.ca, shared by every node), else a private CA kept in
 * dataDir/tls, made on first use with the openssl CLI (Debian's ca-certificates depends on it).
 */
export function ensureCa(dataDir: string, configured?: CaMaterial): CaMaterial {
  if (configured) return configured;
  const dir = join(dataDir, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caKey = join(dir, 'ca.key');
  const caPem = join(dir, 'ca.pem');
  if (!existsSync(caKey) || !existsSync(caPem)) {
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', caKey, '-out', caPem,
      '-days', '3650', '-subj', '/CN=Tollgate gateway CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    chmodSync(caKey, 0o600);
    // On the disk before use: clients pin this CA, it cannot be made again (auth/durable.ts).
    syncPaths([caKey, caPem, dir, dataDir]);
  }
  return { cert: readFileSync(caPem, 'utf8'), key: new Secret(readFileSync(caKey, 'utf8')) };
}

/** Sign a CSR with the CA; the CA key exists on disk only for the signature (a private temp dir), when it came from the config. */
function signWithCa(ca: CaMaterial, csr: string, out: string, ext: string, days: number): void {
  const tmp = mkdtempSync(join(out, '..', '.sign-'));
  try {
    const caPem = join(tmp, 'ca.pem');
    const caKey = join(tmp, 'ca.key');
    const extFile = join(tmp, 'ext.txt');
    writeFileSync(caPem, ca.cert);
    writeFileSync(caKey, ca.key.reveal(), { mode: 0o600 });
    writeFileSync(extFile, ext);
    run('x509', '-req', '-in', csr, '-CA', caPem, '-CAkey', caKey, '-CAcreateserial', '-CAserial', join(tmp, 'ca.srl'), '-out', out, '-days', String(days), '-sha256', '-extfile', extFile);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;

/**
 * The gateway's TLS identity when none is configured: a server certificate for the public host,
 * loopback and localhost, from the gateway's CA (ensureCa). Clients may pin ca.pem
 * (GET /api/v1/ca.pem). Re-issued when the names or the CA change.
 */
export function ensureTlsMaterial(dataDir: string, hosts: string[], configuredCa?: CaMaterial): TlsMaterial {
  const ca = ensureCa(dataDir, configuredCa);
  const dir = join(dataDir, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = join(dir, 'server.key');
  const cert = join(dir, 'server.pem');
  const names = [...new Set(['localhost', '127.0.0.1', '::1', ...hosts])];
  const sanFile = join(dir, 'san.txt');
  const san = `subjectAltName=${names.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',')}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`;
  // The marker names the CA too (a comment line openssl ignores): a new gateway.ca re-issues the certificate.
  const marker = `${san}# ca ${fingerprint(ca.cert)}\n`;
  const previous = existsSync(sanFile) ? readFileSync(sanFile, 'utf8') : '';
  const sameCa = previous === marker || (!configuredCa && previous === san);
  if (!existsSync(key) || !existsSync(cert) || !sameCa) {
    const csr = join(dir, 'server.csr');
    // RSA keeps old clients (and TDS/RDP stacks) happy.
    run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${hosts[0] ?? 'localhost'}`);
    chmodSync(key, 0o600);
    signWithCa(ca, csr, cert, san, 825);
    writeFileSync(sanFile, marker);
    syncPaths([key, cert, sanFile, dir]);
  }
  return { cert: readFileSync(cert, 'utf8') + ca.cert, key: new Secret(readFileSync(key, 'utf8')), ca: ca.cert };
}

/** An openssl -subj value: '/' and '\' inside a value are escaped. */
const subjValue = (v: string) => v.replace(/[\\/]/g, (c) => `\\${c}`);

/**
 * A certificate for one node's internal channel (server and client: mutual TLS), from the gateway
 * CA: O=NODE_CERT_ORG, CN=<node id>. Made at every start (the key never touches the disk but for
 * the signature in a private temp dir), valid 30 days.
 */
export function issueNodeCertificate(ca: CaMaterial, nodeId: string, workDir: string): { cert: string; key: Secret } {
  mkdirSync(workDir, { recursive: true, mode: 0o700 });
  const tmp = mkdtempSync(join(workDir, '.node-'));
  try {
    const key = join(tmp, 'node.key');
    const csr = join(tmp, 'node.csr');
    const cert = join(tmp, 'node.pem');
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr,
      '-subj', `/O=${subjValue(NODE_CERT_ORG)}/CN=${subjValue(nodeId)}`);
    signWithCa(ca, csr, cert, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n', 30);
    return { cert: readFileSync(cert, 'utf8'), key: new Secret(readFileSync(key, 'utf8')) };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
