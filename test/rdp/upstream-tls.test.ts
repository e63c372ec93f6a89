/**
 * The gateway's TLS towards an RDP target with options.ca: the certificate must chain to that CA and
 * name the host of the target's address. The target here is the front of an RDP server (X.224
 * negotiation selecting TLS, then a real TLS handshake with openssl-made certificates); what is
 * checked is the gateway side: `targets check` and the session dial.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import pino from 'pino';
import { ManualClock } from '../../policies/clock.js';
import { Secret } from '../../auth/secret.js';
import { rdpModule } from '../../protocols/rdp/index.js';
import { dialUpstream } from '../../protocols/rdp/upstream.js';
import { encodeConnectionConfirm, PROTOCOL_SSL } from '../../protocols/rdp/x224.js';
import { encodeTpkt } from '../../protocols/rdp/tpkt.js';
import type { ProtocolContext, TargetConfig } from '../../protocols/types.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-rdp-tls-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });

function makeCa(name: string): { pem: string; key: string } {
  const key = join(dir, `${name}.key`);
  const pem = join(dir, `${name}.pem`);
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-keyout', key, '-out', pem, '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  return { pem, key };
}

/** A server certificate signed by ca for the given subjectAltName. */
function leaf(ca: { pem: string; key: string }, name: string, san: string): { cert: string; key: string } {
  const key = join(dir, `${name}.key`);
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', join(dir, `${name}.csr`), '-subj', `/CN=${name}`);
  openssl('x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', ca.pem, '-CAkey', ca.key, '-CAcreateserial', '-out', join(dir, `${name}.pem`), '-days', '1', '-extfile', join(dir, `${name}.ext`));
  return { cert: readFileSync(join(dir, `${name}.pem`), 'utf8'), key: readFileSync(key, 'utf8') };
}

/** Answers the X.224 Connection Request selecting TLS, completes TLS with `pair`, then hangs up. */
async function rdpTlsFront(pair: { cert: string; key: string }): Promise<{ port: number; handshakes: () => number; close(): void }> {
  let handshakes = 0;
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', () => {
      sock.write(encodeTpkt(encodeConnectionConfirm({ selectedProtocol: PROTOCOL_SSL })));
      const s = new tls.TLSSocket(sock, { isServer: true, cert: pair.cert, key: pair.key });
      s.on('error', () => {});
      s.on('secure', () => { handshakes++; setTimeout(() => s.destroy(), 50); });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as net.AddressInfo).port, handshakes: () => handshakes, close: () => server.close() };
}

const ca = makeCa('rdp-ca');
const otherCa = makeCa('other-ca');
const caPem = readFileSync(ca.pem, 'utf8');
const right = await rdpTlsFront(leaf(ca, 'right', 'IP:127.0.0.1'));
const wrongName = await rdpTlsFront(leaf(ca, 'wrong-name', 'DNS:rdp.elsewhere.test'));
t.teardown(() => { right.close(); wrongName.close(); });

const clock = new ManualClock(Date.now());
const ctx = { clock, log: pino({ level: 'silent' }) } as unknown as ProtocolContext;
const target = (port: number, caOption: string | undefined): TargetConfig => ({
  name: 'desk', protocol: 'rdp', address: `127.0.0.1:${port}`, risk: 'low', roles: [{ name: 'user' }],
  credentials: { mode: 'local-account', prefix: 'tg-' }, options: { nla: false, ...(caOption ? { ca: caOption } : {}) },
});
const dial = (port: number, caOption: string | null) => dialUpstream({
  host: '127.0.0.1', port, timeoutMs: 5000, clock, ca: caOption, mcsHead: Buffer.alloc(0), blocks: [], channels: [], nla: null,
  info: { codePage: 0, flags: 0, domain: '', userName: 'u', password: new Secret('p'), alternateShell: '', workingDir: '', extra: Buffer.alloc(0) },
}, { aborted: false }).then(() => null, (e: Error) => e);

t.test('targets check: the CA and the host name are checked', async (t) => {
  const ok = await rdpModule.checkTarget!(ctx, target(right.port, caPem));
  t.match(ok.detail, /^reachable, TLS works/, 'a certificate from the CA for 127.0.0.1 passes');
  const name = await rdpModule.checkTarget!(ctx, target(wrongName.port, caPem));
  t.equal(name.ok, false);
  t.match(name.detail, /TLS with the RDP server failed: Hostname\/IP does not match certificate's altnames: IP: 127\.0\.0\.1 is not in the cert's list/,
    'a certificate from the CA for another name is refused');
  const other = await rdpModule.checkTarget!(ctx, target(right.port, readFileSync(otherCa.pem, 'utf8')));
  t.equal(other.ok, false);
  t.match(other.detail, /TLS with the RDP server failed: .*(unable to verify|self[- ]signed|certificate)/i, 'a certificate from another CA is refused');
  const unverified = await rdpModule.checkTarget!(ctx, target(wrongName.port, undefined));
  t.match(unverified.detail, /^reachable, TLS works/, 'without options.ca nothing is verified (documented)');
});

t.test('the session dial: refused at TLS for the wrong name, past TLS for the right one', async (t) => {
  const before = wrongName.handshakes();
  const e = await dial(wrongName.port, caPem);
  t.match(e?.message, /^TLS with the RDP target failed: Hostname\/IP does not match certificate's altnames/, 'the host name is checked with a CA');
  t.equal(wrongName.handshakes(), before, 'the gateway never completed TLS with it');
  const handshakes = right.handshakes();
  const past = await dial(right.port, caPem);
  t.ok(past, 'this front hangs up after TLS, so the dial fails later');
  t.notMatch(past?.message, /TLS/, `but not at TLS (${past?.message})`);
  t.equal(right.handshakes(), handshakes + 1, 'TLS completed with the right certificate');
});
