/**
 * Client-side OpenSSH certificate support for ssh2 (its issue #551).
 *
 * Two parts:
 * 1. CertAgent, built on ssh2's BaseAgent: getIdentities() returns one key object whose type is
 *    ssh-ed25519-cert-v01@openssh.com and whose public blob is the certificate; sign() signs with the
 *    session's private key.
 * 2. ssh2 writes the signature blob with the *key algorithm* name, which for a certificate is the
 *    cert type, while OpenSSH requires the plain "ssh-ed25519" inside the signature blob
 *    (ssh_ed25519_verify rejects anything else). patchCertPublickey() wraps the connection's
 *    authPK() so a signed publickey request for a certificate is written correctly; every other
 *    request goes to ssh2 unchanged.
 */
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import { CERT_TYPE_ED25519, type ParsedKey } from './cert.js';
import { sendRaw, sshString, type SshProtocolInternals } from './wire.js';

const { BaseAgent } = ssh2 as unknown as { BaseAgent: new () => object };

/** A parsed-key view of a certificate: ssh2 sees a key of the cert type whose public blob is the cert. */
export function certKeyView(privateKey: ParsedKey, certBlob: Buffer): ParsedKey {
  const view = Object.create(privateKey) as ParsedKey & Record<string, unknown>;
  Object.defineProperty(view, 'type', { value: CERT_TYPE_ED25519 });
  Object.defineProperty(view, 'getPublicSSH', { value: () => certBlob });
  return view;
}

export type StreamOpener = (cb: (err: Error | undefined, stream?: Duplex) => void) => void;

export class CertAgent extends (BaseAgent as new () => { getIdentities(cb: unknown): void; sign(...a: unknown[]): void }) {
  /** Set when the role allows agent forwarding: opens a channel to the person's own agent. */
  forwardTo: StreamOpener | null = null;
  constructor(private readonly privateKey: ParsedKey, private readonly certBlob: Buffer) { super(); }
  getStream(cb: (err: Error | undefined, stream?: Duplex) => void): void {
    if (!this.forwardTo) { cb(new Error('agent forwarding is not allowed')); return; }
    this.forwardTo(cb);
  }
  override getIdentities(cb: (err: Error | null, keys?: ParsedKey[]) => void): void {
    cb(null, [certKeyView(this.privateKey, this.certBlob)]);
  }
  override sign(_pub: unknown, data: Buffer, optsOrCb: unknown, maybeCb?: unknown): void {
    const cb = (typeof optsOrCb === 'function' ? optsOrCb : maybeCb) as (err: Error | null, sig?: Buffer) => void;
    const sig = this.privateKey.sign(data);
    if (sig instanceof Error) cb(sig); else cb(null, sig);
  }
}

/** Agent forwarding for sessions that authenticate upstream without an agent: holds no keys itself. */
export class ForwardingAgent extends (BaseAgent as new () => { getIdentities(cb: unknown): void; sign(...a: unknown[]): void }) {
  constructor(private readonly open: StreamOpener) { super(); }
  override getIdentities(cb: (err: Error | null, keys?: ParsedKey[]) => void): void { cb(null, []); }
  override sign(_pub: unknown, _data: Buffer, optsOrCb: unknown, maybeCb?: unknown): void {
    const cb = (typeof optsOrCb === 'function' ? optsOrCb : maybeCb) as (err: Error | null) => void;
    cb(new Error('the gateway signs nothing for forwarded agents'));
  }
  getStream(cb: (err: Error | undefined, stream?: Duplex) => void): void { this.open(cb); }
}

type AuthPK = (username: string, pubKey: unknown, keyAlgo?: unknown, cbSign?: unknown) => void;

/** Install the certificate-aware publickey step on a client's protocol (call right after connect()). */
export function patchCertPublickey(client: unknown): void {
  const proto = (client as { _protocol?: SshProtocolInternals & { authPK: AuthPK } })._protocol;
  if (!proto || typeof proto.authPK !== 'function') throw new Error('ssh2 internals changed: no _protocol.authPK');
  const original = proto.authPK.bind(proto);
  proto.authPK = (username, pubKey, keyAlgo, cbSign) => {
    if (typeof keyAlgo === 'function') { cbSign = keyAlgo; keyAlgo = undefined; }
    const key = pubKey as ParsedKey | undefined;
    if (!key || (key.type as string) !== CERT_TYPE_ED25519 || typeof cbSign !== 'function') {
      original(username, pubKey, keyAlgo, cbSign);
      return;
    }
    const sessionID = proto._kex?.sessionID;
    if (!sessionID) throw new Error('no session id yet');
    // RFC 4252 7: the signed data is the session id followed by the request without signature.
    const request = Buffer.concat([
      Buffer.from([50]), sshString(username), sshString('ssh-connection'), sshString('publickey'),
      Buffer.from([1]), sshString(CERT_TYPE_ED25519), sshString(key.getPublicSSH()),
    ]);
    (cbSign as (data: Buffer, cb: (sig: Buffer) => void) => void)(Buffer.concat([sshString(sessionID), request]), (sig) => {
      const payload = Buffer.concat([request, sshString(Buffer.concat([sshString('ssh-ed25519'), sshString(sig)]))]);
      proto._authsQueue?.push('publickey');
      sendRaw(proto, payload);
    });
  };
}
