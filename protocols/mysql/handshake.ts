/**
 * The client-facing server handshake: greeting, optional TLS upgrade (SSLRequest), and
 * authentication of the connection secret:
 *   - mysql_native_password: the scramble is checked against the stored verifiers of pending
 *     connection secrets (challenge-response, the secret never crosses the wire);
 *   - caching_sha2_password: fast auth cannot be checked without the secret, so always full auth:
 *     cleartext over TLS, or RSA-OAEP with the gateway's key on plain connections;
 *   - mysql_clear_password: accepted over TLS only.
 */
import { constants, generateKeyPairSync, privateDecrypt, randomInt, type KeyObject } from 'node:crypto';
import { TLSSocket } from 'node:tls';
import type { ProtocolContext, AuthOutcome } from '../types.js';
import { Secret } from '../../auth/secret.js';
import type { PacketConn } from './conn.js';
import type { GreetingOffer } from './flavour.js';
import {
  CAP, ER, GATEWAY_CAPS, STATUS, buildAuthMoreData, buildAuthSwitch, buildErr, buildGreeting, checkNativeToken,
  makeNonce, parseHandshakeResponse, xor, ProtocolError, type ErrSpec, type HandshakeResponse,
} from './packets.js';

export const SERVER_VERSION = '8.0.0-Tollgate';
export const NATIVE = 'mysql_native_password';
export const SHA2 = 'caching_sha2_password';
export const CLEAR = 'mysql_clear_password';

/** A refusal to send as an ERR packet before closing. */
export class Refusal extends Error {
  constructor(readonly spec: ErrSpec, message: string) {
    super(message);
    this.name = 'Refusal';
  }
}

let rsa: { publicPem: string; privateKey: KeyObject } | null = null;
/** The gateway's RSA key for caching_sha2_password on plain connections (made once per process). */
export function rsaKey(): { publicPem: string; privateKey: KeyObject } {
  if (!rsa) {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    rsa = { publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), privateKey };
  }
  return rsa;
}

/** MySQL's ER_SECURE_TRANSPORT_REQUIRED (what require_secure_transport answers). */
export const SECURE_TRANSPORT_REQUIRED: ErrSpec = { code: 3159, state: 'HY000' };

/** Plain (non-TLS) connections are for targets with options.allowPlain: true only. */
function allowsPlain(ctx: ProtocolContext, username: string): boolean {
  return ctx.config.target(username.split(':')[0] ?? '')?.options?.['allowPlain'] === true;
}

function tlsRequired(username: string): string {
  const who = username ? ` for '${username.slice(0, 64).replace(/[^\x20-\x7e]/g, '?')}'` : '';
  return `Tollgate: TLS is required${who}: connect with TLS (mariadb: --ssl, the default; not --skip-ssl; mysql 8: --ssl-mode=REQUIRED or VERIFY_IDENTITY)`;
}

export interface ClientHello {
  response: HandshakeResponse;
  /** The sequence id the next packet to the client must carry. */
  seq: number;
  outcome: AuthOutcome;
  plugin: string;
  /** The connection id the client was told (clients use it for KILL QUERY / Ctrl-C). */
  connectionId: number;
}

// Gateway connection ids start far above server thread ids, so KILL n is never ambiguous.
let nextConnectionId = 0x40000000 + randomInt(0x100000);

function stripNul(b: Buffer): string {
  const end = b.indexOf(0);
  return (end >= 0 ? b.subarray(0, end) : b).toString('utf8');
}

/**
 * Run the handshake; throws Refusal (send it as ERR), ProtocolError or a connection error.
 * offer: the version and capabilities to greet with (what the targets behind this listener have).
 */
export async function serverHandshake(ctx: ProtocolContext, conn: PacketConn, clientAddr: string, offer?: GreetingOffer): Promise<ClientHello> {
  const nonce = makeNonce();
  const connectionId = nextConnectionId;
  nextConnectionId = nextConnectionId >= 0x7ffffff0 ? 0x40000000 : nextConnectionId + 1;
  const tlsAvailable = !!(ctx.config.tls?.cert && ctx.config.tls?.key);
  const offered = offer?.caps ?? GATEWAY_CAPS;
  const caps = tlsAvailable ? offered | CAP.SSL : offered & ~CAP.SSL;
  conn.send(buildGreeting({
    serverVersion: offer?.version ?? SERVER_VERSION,
    connectionId,
    nonce,
    caps,
    extCaps: offer?.extCaps ?? 0,
    charset: 45,
    status: STATUS.AUTOCOMMIT,
    authPlugin: NATIVE,
  }), 0);

  let p = await conn.read();
  let resp = parseHandshakeResponse(p.payload);
  // A client that does not ask for TLS sent its HandshakeResponse (user name, scramble) in clear:
  // refuse it before any authentication step unless its target allows plain connections.
  if (!resp.sslRequest && tlsAvailable && !allowsPlain(ctx, resp.user)) throw new Refusal(SECURE_TRANSPORT_REQUIRED, tlsRequired(resp.user));
  if (resp.sslRequest) {
    if (!tlsAvailable) throw new Refusal(ER.HANDSHAKE, 'Tollgate: TLS is not configured on this gateway');
    await conn.upgrade((raw) => new TLSSocket(raw, {
      isServer: true,
      cert: ctx.config.tls.cert,
      key: ctx.config.tls.key.reveal(),
    }), 'secure');
    p = await conn.read();
    resp = parseHandshakeResponse(p.payload);
    if (resp.sslRequest) throw new ProtocolError('second SSLRequest');
  }
  let seq = (p.lastSeq + 1) & 0xff;
  const username = resp.user;
  if (!username) throw new Refusal(ER.ACCESS_DENIED, 'Tollgate: log in with the target name as user, e.g. -u app-db');
  const tls = conn.encrypted;
  let plugin = resp.caps & CAP.PLUGIN_AUTH ? (resp.authPlugin ?? NATIVE) : NATIVE;
  let data = resp.authResponse;

  // The target may prefer caching_sha2_password (full auth) over the challenge-response default.
  const targetName = username.split(':')[0] ?? '';
  const preferred = ctx.config.target(targetName)?.options?.['clientAuth'];
  const wanted = preferred === SHA2 || preferred === CLEAR ? preferred : NATIVE;
  const known = plugin === NATIVE || plugin === SHA2 || (plugin === CLEAR && tls);
  // A client whose plugin differs from the greeting's sends no data and waits for a switch with a nonce.
  const restart = plugin === SHA2 && data.length !== 32;
  if (restart || !known || (plugin !== wanted && wanted !== NATIVE)) {
    if (restart && known && (wanted === NATIVE || wanted === SHA2)) plugin = SHA2;
    else plugin = wanted;
    // Never ask for a cleartext password on a plain connection.
    if (plugin === CLEAR && !tls) throw new Refusal(ER.ACCESS_DENIED, 'Tollgate: this target takes cleartext passwords over TLS only (use --ssl)');
    if (!(resp.caps & CAP.PLUGIN_AUTH)) throw new Refusal(ER.ACCESS_DENIED, 'Tollgate: client cannot switch authentication method');
    conn.send(buildAuthSwitch(plugin, plugin === CLEAR ? Buffer.alloc(0) : nonce), seq);
    const r = await conn.read();
    data = r.payload;
    seq = (r.lastSeq + 1) & 0xff;
  }

  const base = { protocol: 'mysql', username, clientAddr };
  let outcome: AuthOutcome;
  if (plugin === NATIVE) {
    const candidates = await ctx.access.pendingSecrets(username, 'mysql', clientAddr);
    const match = candidates.find((c) => {
      const v = c.verifiers[NATIVE];
      return typeof v === 'string' && checkNativeToken(data, nonce, v);
    });
    // Without a match the proxy still decides and audits the refusal (no credential proven).
    outcome = match ? await ctx.access.authenticate({ ...base, provenSecretId: match.id }) : await ctx.access.authenticate(base);
    if (!match && outcome.ok) outcome = { ok: false, code: 'bad_secret', reason: 'the connection secret is wrong, used or expired' };
  } else {
    let secret: Secret;
    if (plugin === CLEAR) {
      if (!tls) throw new Refusal(ER.ACCESS_DENIED, 'Tollgate: cleartext passwords are accepted over TLS only (use --ssl)');
      secret = new Secret(stripNul(data));
    } else {
      // caching_sha2_password: always "perform full authentication".
      conn.send(buildAuthMoreData(Buffer.from([0x04])), seq);
      let r = await conn.read();
      seq = (r.lastSeq + 1) & 0xff;
      if (tls) {
        secret = new Secret(stripNul(r.payload));
      } else if (r.payload.length === 1 && r.payload[0] === 0x02) {
        const key = rsaKey();
        conn.send(buildAuthMoreData(Buffer.from(key.publicPem, 'latin1')), seq);
        r = await conn.read();
        seq = (r.lastSeq + 1) & 0xff;
        let plain: Buffer;
        try {
          plain = privateDecrypt({ key: key.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, r.payload);
        } catch {
          throw new Refusal(ER.ACCESS_DENIED, 'Tollgate: could not decrypt the password (RSA key exchange failed)');
        }
        secret = new Secret(stripNul(xor(plain, nonce)));
      } else {
        throw new Refusal(ER.ACCESS_DENIED,
          'Tollgate: caching_sha2_password needs TLS (--ssl) or the server public key (--get-server-public-key) on this connection');
      }
    }
    outcome = await ctx.access.authenticate({ ...base, secret });
  }
  return { response: resp, seq, outcome, plugin, connectionId };
}
