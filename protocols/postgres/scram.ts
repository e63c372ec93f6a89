/**
 * SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL uses it, both halves:
 *  - server side (clients authenticating to the gateway against stored verifiers), and
 *  - client side (the gateway authenticating upstream as the per-session role).
 * Pure functions and small state machines over strings; no sockets.
 */
import { X509Certificate, createHash, createHmac, pbkdf2, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import certSignatures from 'pg/lib/crypto/cert-signatures.js';

const { signatureAlgorithmHashFromCertificate } = certSignatures;

export const SCRAM = 'SCRAM-SHA-256';
/** With channel binding (tls-server-end-point): proves the client's TLS session ends at the gateway. */
export const SCRAM_PLUS = 'SCRAM-SHA-256-PLUS';
const CB_TYPE = 'tls-server-end-point';
export const SCRAM_ITERATIONS = 4096;

export class ScramError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScramError';
  }
}

const hmac = (key: Buffer, data: string | Buffer) => createHmac('sha256', key).update(data).digest();
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();

function xor(a: Buffer, b: Buffer): Buffer {
  if (a.length !== b.length) throw new ScramError('proof has the wrong length');
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/** SASLprep is the identity for printable ASCII (what Tollgate's secrets are); other input is NFKC-normalised. */
function prep(password: string): string {
  return /^[\x20-\x7e]*$/.test(password) ? password : password.normalize('NFKC');
}

export function saltedPassword(password: string, salt: Buffer, iterations: number): Buffer {
  return pbkdf2Sync(prep(password), salt, iterations, 32, 'sha256');
}

/** saltedPassword in libuv's thread pool: 4,096 (or a server's up to 100,000) iterations never block the event loop. */
export function saltedPasswordAsync(password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  return new Promise((resolve, reject) => pbkdf2(prep(password), salt, iterations, 32, 'sha256', (e, key) => (e ? reject(e) : resolve(key))));
}

export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/** The verifier string stored with a connection secret: "<iterations>:<salt>:<StoredKey>:<ServerKey>" (base64). */
export function makeVerifier(password: string, salt: Buffer, iterations = SCRAM_ITERATIONS): string {
  return verifierOf(saltedPassword(password, salt, iterations), salt, iterations);
}

/** makeVerifier with the key derivation off the event loop (a role minted per session). */
export async function makeVerifierAsync(password: string, salt: Buffer, iterations = SCRAM_ITERATIONS): Promise<string> {
  return verifierOf(await saltedPasswordAsync(password, salt, iterations), salt, iterations);
}

function verifierOf(sp: Buffer, salt: Buffer, iterations: number): string {
  const clientKey = hmac(sp, 'Client Key');
  const storedKey = sha256(clientKey);
  const serverKey = hmac(sp, 'Server Key');
  return `${iterations}:${salt.toString('base64')}:${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

export function parseVerifier(v: string): ScramVerifier | null {
  const m = /^(\d+):([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(v);
  if (!m) return null;
  const storedKey = Buffer.from(m[3]!, 'base64');
  const serverKey = Buffer.from(m[4]!, 'base64');
  if (storedKey.length !== 32 || serverKey.length !== 32) return null;
  return { iterations: Number(m[1]), salt: Buffer.from(m[2]!, 'base64'), storedKey, serverKey };
}

function attributes(s: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of s.split(',')) {
    if (part.length < 2 || part[1] !== '=') throw new ScramError(`malformed SCRAM attribute "${part.slice(0, 20)}"`);
    out.set(part[0]!, part.slice(2));
  }
  return out;
}

const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;

/**
 * Server side of one SCRAM exchange. The salt and iteration count are the same for every
 * secret of a target, so one server-first message fits all candidate verifiers; the proof
 * then picks which verifier (if any) the client knows.
 */
export class ScramServer {
  private clientFirstBare = '';
  private gs2Header = '';
  private nonce = '';
  private serverFirst = '';
  private authMessage = '';
  private proof: Buffer | null = null;
  private cbData: Buffer = Buffer.alloc(0);

  /**
   * channelBinding: the tls-server-end-point data of the gateway's certificate when the client
   * connection is TLS (the server then offers SCRAM-SHA-256-PLUS as well), else null.
   */
  constructor(private readonly salt: Buffer, private readonly iterations = SCRAM_ITERATIONS, private readonly channelBinding: Buffer | null = null) {}

  /** Consume client-first for the mechanism the client chose, return server-first. */
  clientFirst(data: string, mechanism = SCRAM): string {
    // gs2-header: "n,," | "y,," | "p=<cb>,," ; then client-first-bare "n=<user>,r=<nonce>[,ext]"
    const m = /^([nyp][^,]*),([^,]*),(.*)$/s.exec(data);
    if (!m) throw new ScramError('malformed SCRAM client-first message');
    const flag = m[1]!;
    if (mechanism === SCRAM_PLUS) {
      if (!this.channelBinding) throw new ScramError(`${SCRAM_PLUS} was not offered on this connection`);
      if (flag !== `p=${CB_TYPE}`) throw new ScramError(`${SCRAM_PLUS} needs channel binding type ${CB_TYPE}`);
      this.cbData = this.channelBinding;
    } else if (mechanism === SCRAM) {
      if (flag.startsWith('p')) throw new ScramError(`channel binding requires ${SCRAM_PLUS}`);
      if (flag === 'y' && this.channelBinding) throw new ScramError('the client believes the gateway lacks channel binding, but it was offered (possible downgrade)');
      if (flag !== 'n' && flag !== 'y') throw new ScramError('malformed SCRAM gs2 header');
    } else {
      throw new ScramError(`unsupported SASL mechanism ${mechanism}`);
    }
    if (m[2] !== '') throw new ScramError('SCRAM authorization identity is not supported');
    this.gs2Header = `${flag},${m[2]},`;
    this.clientFirstBare = m[3]!;
    const bare = this.clientFirstBare;
    const rPos = bare.indexOf(',r=');
    if (!bare.startsWith('n=') || rPos < 0) throw new ScramError('malformed SCRAM client-first message');
    const rest = bare.slice(rPos + 3);
    const cnonce = rest.split(',')[0]!;
    if (!cnonce || !PRINTABLE.test(cnonce)) throw new ScramError('invalid SCRAM client nonce');
    this.nonce = cnonce + randomBytes(18).toString('base64');
    this.serverFirst = `r=${this.nonce},s=${this.salt.toString('base64')},i=${this.iterations}`;
    return this.serverFirst;
  }

  /** Consume client-final; throws on a malformed message or a nonce/binding mismatch. */
  clientFinal(data: string): void {
    const pPos = data.lastIndexOf(',p=');
    if (pPos < 0) throw new ScramError('malformed SCRAM client-final message');
    const withoutProof = data.slice(0, pPos);
    const attrs = attributes(withoutProof);
    const c = attrs.get('c');
    const r = attrs.get('r');
    if (c === undefined || r === undefined) throw new ScramError('malformed SCRAM client-final message');
    if (c !== Buffer.concat([Buffer.from(this.gs2Header), this.cbData]).toString('base64')) throw new ScramError('SCRAM channel binding mismatch');
    if (r !== this.nonce) throw new ScramError('SCRAM nonce mismatch');
    const proof = Buffer.from(data.slice(pPos + 3), 'base64');
    if (proof.length !== 32) throw new ScramError('malformed SCRAM proof');
    this.proof = proof;
    this.authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
  }

  /** Does the client's proof match this verifier? */
  matches(v: ScramVerifier): boolean {
    if (!this.proof) return false;
    if (!v.salt.equals(this.salt) || v.iterations !== this.iterations) return false;
    const clientSignature = hmac(v.storedKey, this.authMessage);
    const clientKey = xor(this.proof, clientSignature);
    return timingSafeEqual(sha256(clientKey), v.storedKey);
  }

  /** server-final ("v=<ServerSignature>") for the verifier that matched. */
  serverFinal(v: ScramVerifier): string {
    return `v=${hmac(v.serverKey, this.authMessage).toString('base64')}`;
  }
}

/** Client side: the gateway logging in upstream as the per-session role. */
export class ScramClient {
  private readonly cnonce = randomBytes(18).toString('base64');
  private clientFirstBare = '';
  private expectedServerSignature = '';

  /** channelBinding: tls-server-end-point data to bind to (SCRAM-SHA-256-PLUS), or null. */
  constructor(private readonly password: string, private readonly maxIterations = 100_000, private readonly channelBinding: Buffer | null = null) {}

  private get gs2Header(): string { return this.channelBinding ? `p=${CB_TYPE},,` : 'n,,'; }

  clientFirst(): string {
    this.clientFirstBare = `n=*,r=${this.cnonce}`;
    return `${this.gs2Header}${this.clientFirstBare}`;
  }

  /** Consume server-first, return client-final. */
  serverFirst(data: string): string {
    const { r, salt, i } = this.checkServerFirst(data);
    return this.clientFinal(data, r, saltedPassword(this.password, salt, i));
  }

  /** serverFirst with the key derivation in the thread pool (the gateway's upstream login). */
  async serverFirstAsync(data: string): Promise<string> {
    const { r, salt, i } = this.checkServerFirst(data);
    return this.clientFinal(data, r, await saltedPasswordAsync(this.password, salt, i));
  }

  private checkServerFirst(data: string): { r: string; salt: Buffer; i: number } {
    const a = attributes(data);
    const r = a.get('r');
    const s = a.get('s');
    const i = Number(a.get('i'));
    if (!r || !s || !Number.isInteger(i) || i < 1) throw new ScramError('malformed SCRAM server-first message');
    if (!r.startsWith(this.cnonce) || r.length === this.cnonce.length) throw new ScramError('SCRAM server nonce does not extend ours');
    if (i > this.maxIterations) throw new ScramError(`SCRAM iteration count ${i} is above the limit`);
    return { r, salt: Buffer.from(s, 'base64'), i };
  }

  private clientFinal(data: string, r: string, sp: Buffer): string {
    const clientKey = hmac(sp, 'Client Key');
    const storedKey = sha256(clientKey);
    const cbind = Buffer.concat([Buffer.from(this.gs2Header), this.channelBinding ?? Buffer.alloc(0)]).toString('base64');
    const withoutProof = `c=${cbind},r=${r}`;
    const authMessage = `${this.clientFirstBare},${data},${withoutProof}`;
    const proof = xor(clientKey, hmac(storedKey, authMessage));
    this.expectedServerSignature = hmac(hmac(sp, 'Server Key'), authMessage).toString('base64');
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Check server-final; throws when the server did not prove it knows the password. */
  serverFinal(data: string): void {
    const a = attributes(data);
    if (a.has('e')) throw new ScramError(`SCRAM error from server: ${a.get('e')}`);
    const v = a.get('v');
    if (!v || v !== this.expectedServerSignature) throw new ScramError('SCRAM server signature mismatch');
  }
}

/**
 * tls-server-end-point channel binding data (RFC 5929): the hash of the server certificate (DER),
 * with the certificate's signature hash, MD5 and SHA-1 upgraded to SHA-256. Null when the
 * certificate cannot be read.
 */
export function tlsServerEndPoint(certPem: string): Buffer | null {
  try {
    const x = new X509Certificate(certPem);
    const alg = signatureAlgorithmHashFromCertificate(x.raw);
    const name = ({ 'SHA-384': 'sha384', 'SHA-512': 'sha512', 'SHA-224': 'sha224' } as Record<string, string>)[alg] ?? 'sha256';
    return createHash(name).update(x.raw).digest();
  } catch {
    return null;
  }
}
