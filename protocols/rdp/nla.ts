/**
 * NLA: CredSSP over the TLS connection, both roles.
 *  - client (towards an NLA target): NEGOTIATE → CHALLENGE → AUTHENTICATE + pubKeyAuth (+ nonce)
 *    → the server's pubKeyAuth checked → TSCredentials with the session's password.
 *  - server (towards an RDP client): CHALLENGE, the AUTHENTICATE verified against candidate NT
 *    hashes (pending connection secrets), pubKeyAuth answered, TSCredentials received.
 */
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import type tls from 'node:tls';
import type { Secret } from '../../auth/secret.js';
import {
  clientBinding, CREDSSP_VERSION, encodeTsCredentials, encodeTsRequest, parseTsCredentials, parseTsRequest, sealToken, serverBinding,
  subjectPublicKey, subjectPublicKeyOfPem, tsRequestLength, unsealToken, type PasswordCreds, type TsRequest,
} from './credssp.js';
import { RdpProtocolError } from './errors.js';
import { ntHash } from './nlmp.js';
import { NtlmClient, NtlmServer, type NtlmCandidate, type ServerIdentity } from './ntlm.js';

export class NlaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NlaError';
  }
}

/** STATUS_LOGON_FAILURE, what a CredSSP server reports for bad credentials (v3+). */
export const STATUS_LOGON_FAILURE = 0xc000006d;

/** Reads whole TSRequests from a stream during the CredSSP exchange; leftover bytes are handed back. */
export class TsRequestReader {
  private buf = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private closed = false;
  private failure: Error | null = null;
  private readonly onData = (c: Buffer) => { this.buf = Buffer.concat([this.buf, c]); if (this.buf.length > 128 * 1024) this.failure = new RdpProtocolError('CredSSP message too long'); this.wake(); };
  private readonly onEnd = () => { this.closed = true; this.wake(); };
  private readonly onError = (e: Error) => { this.failure ??= e; this.wake(); };
  constructor(private readonly sock: Duplex) {
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
    sock.on('error', this.onError);
    sock.resume();
  }
  private wake(): void { const w = this.waiter; this.waiter = null; w?.(); }

  async next(what: string): Promise<TsRequest> {
    for (;;) {
      const n = tsRequestLength(this.buf);
      if (n && this.buf.length >= n) {
        const msg = this.buf.subarray(0, n);
        this.buf = this.buf.subarray(n);
        return parseTsRequest(Buffer.from(msg));
      }
      if (this.failure) throw this.failure instanceof RdpProtocolError ? this.failure : new RdpProtocolError(`connection error while waiting for ${what}: ${this.failure.message}`);
      if (this.closed) throw new NlaError(`the peer closed the connection while the gateway waited for ${what}`);
      await new Promise<void>((res) => { this.waiter = res; });
    }
  }

  /** Stop reading; returns unconsumed bytes. */
  detach(): Buffer {
    this.sock.off('data', this.onData);
    this.sock.off('end', this.onEnd);
    this.sock.off('close', this.onEnd);
    this.sock.off('error', this.onError);
    this.sock.pause();
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }
}

function errorText(code: number): string {
  const known: Record<number, string> = {
    [STATUS_LOGON_FAILURE]: 'logon failure (wrong user name or password)',
    0xc0000072: 'account disabled', 0xc0000071: 'password expired', 0xc0000224: 'password must change',
    0xc000006e: 'account restriction', 0xc0000234: 'account locked out',
  };
  return known[code] ?? `error 0x${code.toString(16).padStart(8, '0')}`;
}

export interface NlaClientCredential { user: string; domain: string; password: Secret }

/**
 * CredSSP as client over an established TLS connection to the target. Resolves when the
 * credentials were delegated; rejects with NlaError when the target refuses them.
 */
export async function credsspClient(sock: tls.TLSSocket, cred: NlaClientCredential, opts: { now: () => number }): Promise<{ version: number; rest: Buffer }> {
  const cert = sock.getPeerCertificate(true);
  if (!cert?.raw) throw new NlaError('the target presented no TLS certificate for CredSSP');
  const pubKey = subjectPublicKey(cert.raw);
  const ntlm = new NtlmClient({ user: cred.user, domain: cred.domain, ntHash: ntHash(cred.password.reveal()) }, { now: opts.now });
  const reader = new TsRequestReader(sock);
  try {
    sock.write(encodeTsRequest({ version: CREDSSP_VERSION, negoTokens: [ntlm.negotiate] }));
    const r1 = await reader.next('the CredSSP challenge').catch((e: Error) => { throw new NlaError(`the target ended CredSSP at the NTLM negotiation: ${e.message}`); });
    if (r1.errorCode !== null) throw new NlaError(`the target refused NTLM: ${errorText(r1.errorCode)}`);
    const challenge = r1.negoTokens[0];
    if (!challenge) throw new NlaError('the target sent no NTLM challenge');
    const version = Math.min(CREDSSP_VERSION, r1.version);
    const { message, session } = ntlm.authenticate(challenge);
    const nonce = version >= 5 ? randomBytes(32) : null;
    const pubKeyAuth = sealToken(session, clientBinding(version, nonce, pubKey));
    sock.write(encodeTsRequest({ version: CREDSSP_VERSION, negoTokens: [message], pubKeyAuth, clientNonce: nonce }));
    const r2 = await reader.next('the CredSSP public key answer').catch((e: Error) => {
      // FreeRDP's server hangs up on a wrong password; Windows answers with errorCode (v3+).
      throw new NlaError(`the target refused the NLA credentials (${e.message})`);
    });
    if (r2.errorCode !== null) throw new NlaError(`the target refused the NLA credentials: ${errorText(r2.errorCode)}`);
    if (!r2.pubKeyAuth) throw new NlaError('the target did not prove its public key');
    const proof = unsealToken(session, r2.pubKeyAuth);
    if (!proof.equals(serverBinding(version, nonce, pubKey))) throw new NlaError('the target\'s CredSSP public key proof does not match its TLS certificate');
    const creds = encodeTsCredentials({ domain: cred.domain, user: cred.user, password: cred.password.reveal() });
    sock.write(encodeTsRequest({ version: CREDSSP_VERSION, authInfo: sealToken(session, creds) }));
    return { version, rest: reader.detach() };
  } catch (e) {
    reader.detach();
    if (e instanceof NlaError) throw e;
    throw new NlaError(`CredSSP with the target failed: ${(e as Error).message}`);
  }
}

/**
 * CredSSP as server over the client's TLS connection. `candidates(user, domain)` returns the NT
 * hashes the claimed user may prove. Resolves with the winning candidate and the delegated
 * credentials; on failure the client gets errorCode STATUS_LOGON_FAILURE and NlaError is thrown.
 */
export async function credsspServer(
  sock: tls.TLSSocket,
  opts: {
    certPem: string; identity: ServerIdentity; now: () => number;
    candidates: (user: string, domain: string) => Promise<NtlmCandidate[]>;
    /** Decide on the proven candidate (null: none matched; claimedUser is what NTLM named). False refuses the logon. */
    authorize: (match: { id: string; user: string; domain: string } | null, claimedUser: string) => Promise<boolean>;
  },
): Promise<{ id: string; user: string; domain: string; creds: PasswordCreds; rest: Buffer }> {
  const pubKey = subjectPublicKeyOfPem(opts.certPem);
  const reader = new TsRequestReader(sock);
  const server = new NtlmServer(opts.identity, { now: opts.now });
  try {
    const r1 = await reader.next('the CredSSP negotiate message');
    const neg = r1.negoTokens[0];
    if (!neg) throw new RdpProtocolError('CredSSP: the client sent no NTLM token');
    const peerVersion = r1.version;
    sock.write(encodeTsRequest({ version: CREDSSP_VERSION, negoTokens: [server.challenge(neg)] }));
    const r2 = await reader.next('the CredSSP authenticate message');
    const auth = r2.negoTokens[0];
    if (!auth || !r2.pubKeyAuth) throw new RdpProtocolError('CredSSP: the client sent no NTLM AUTHENTICATE or no public key proof');
    const claimed = NtlmServer.claimed(auth);
    const cands = await opts.candidates(claimed.user, claimed.domain);
    const ok = server.verify(auth, cands);
    const allowed = await opts.authorize(ok ? { id: ok.id, user: ok.user, domain: ok.domain } : null, claimed.user);
    if (!ok || !allowed) {
      if (peerVersion >= 3) sock.write(encodeTsRequest({ version: CREDSSP_VERSION, errorCode: STATUS_LOGON_FAILURE }));
      throw new NlaError(ok ? 'NLA: the login was refused' : 'NLA: no pending connection secret matches the NTLM response');
    }
    const version = Math.min(CREDSSP_VERSION, peerVersion, r2.version);
    const nonce = version >= 5 ? r2.clientNonce : null;
    const proof = unsealToken(ok.session, r2.pubKeyAuth);
    if (!proof.equals(clientBinding(version, nonce, pubKey))) throw new NlaError('NLA: the client\'s public key proof does not match the gateway certificate (a TLS interceptor?)');
    sock.write(encodeTsRequest({ version: CREDSSP_VERSION, pubKeyAuth: sealToken(ok.session, serverBinding(version, nonce, pubKey)) }));
    const r3 = await reader.next('the CredSSP credentials');
    if (!r3.authInfo) throw new RdpProtocolError('CredSSP: the client sent no credentials');
    const creds = parseTsCredentials(unsealToken(ok.session, r3.authInfo));
    return { id: ok.id, user: ok.user, domain: ok.domain, creds, rest: reader.detach() };
  } catch (e) {
    reader.detach();
    throw e;
  }
}
