/**
 * The viewer-facing half: RFB 3.3/3.7/3.8 handshake, VeNCrypt X509Plain (TLS with the gateway's
 * certificate, then username = target[:role], password = connection secret) or, when a target
 * enables it, classic VNC authentication matched against pending 8-character VNC secrets.
 * The upstream is dialled (with a password minted and installed for the session) BEFORE the
 * SecurityResult, so every refusal and failure reaches the viewer as RFB's reason string.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { Secret } from '../../auth/secret.js';
import { SessionEndedError, type AuthOutcome, type EndReason, type LiveSession, type ListenerAddress, type ProtocolContext, type ProtocolListener, type RefusalCode } from '../types.js';
import { ScreenWriter } from '../../recorder/screen/index.js';
import { ByteReader, ProtocolError } from './reader.js';
import {
  encodeNegotiationFailure, encodeSecurityResult, encodeServerInit, MAX_CREDENTIAL, parseVersion, SEC, SERVER_VERSION, u32, u8, VENCRYPT,
} from './handshake.js';
import { vncAuthResponse } from './des.js';
import { clipboardOf, credentialsOf, optionsOf, DEFAULT_PORT, viewOnlyOf } from './config.js';
import { dialUpstream, installPassword, mintPassword, UpstreamError, withTargetLock, type Upstream } from './upstream.js';
import { ServerStreamState } from './server-messages.js';
import { VncRelay } from './relay.js';
import { parseAddress, lazySecureContext, listenTcp, type Preauth } from '../net.js';

export const LEASE_KIND = 'vnc-password';

export class Refusal extends Error {}

export async function listenVnc(ctx: ProtocolContext, address: ListenerAddress): Promise<ProtocolListener> {
  const tlsContext = lazySecureContext(ctx);
  return listenTcp(address, ctx.log, 'vnc', (sock, preauth) => handleConnection(ctx, sock, preauth, tlsContext), { clock: ctx.clock });
}

/** A refusal before the handshake (ProtocolModule.refuse): RFB's way is a security-negotiation failure with a reason, right after the versions. */
export function refuseVnc(sock: Duplex, _code: RefusalCode, reason: string): void {
  sock.write(SERVER_VERSION);
  let got = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => {
    got = Buffer.concat([got, d]).subarray(0, 12);
    if (got.length < 12) return;
    sock.removeAllListeners('data');
    let minor = 8;
    try { minor = parseVersion(got); } catch { sock.destroy(); return; }
    sock.end(encodeNegotiationFailure(minor, reason));
  });
}

/** Classic VNC auth: find the pending VNC secret (of any target that enables it) that answers the challenge. */
async function classicMatch(ctx: ProtocolContext, challenge: Buffer, response: Buffer, clientAddr: string): Promise<{ username: string; id: string } | null> {
  for (const t of ctx.config.targets()) {
    if (t.protocol !== 'vnc' || !optionsOf(t).classicAuth) continue;
    for (const c of await ctx.access.pendingSecrets(t.name, 'vnc', clientAddr)) {
      const sealed = c.verifiers['vnc-des'];
      const v = sealed ? ctx.crypto.unseal<{ k: string }>(sealed) : null;
      if (!v || typeof v.k !== 'string') continue;
      const expected = vncAuthResponse(v.k, challenge);
      if (expected.length === response.length && timingSafeEqual(expected, response)) return { username: t.name, id: c.id };
    }
  }
  return null;
}

/**
 * In the session: mint and install the session password under a lease, dial the VNC server and
 * read its ServerInit (the upstream socket is left paused).
 */
export async function startUpstream(ctx: ProtocolContext, s: LiveSession): Promise<Upstream> {
  const target = s.target;
  const cred = credentialsOf(target);
  const opts = optionsOf(target);
  const { host, port } = parseAddress(target.address, DEFAULT_PORT);
  const up = await withTargetLock(target.name, async () => {
    const password = await s.lease<Secret>(LEASE_KIND, { target: target.name }, async () => {
      const p = new Secret(mintPassword());
      await installPassword(cred, p);
      return { credential: p };
    });
    return dialUpstream({ host, port, password, timeoutMs: opts.connectTimeout * 1000, clock: ctx.clock });
  });
  if (s.ended) {
    up.socket.destroy();
    throw new Refusal('Tollgate: the session was ended while it was starting');
  }
  up.socket.pause();
  return up;
}

/** The reason a viewer is told, and the session's end, for an error while the session starts. */
export function startFailure(e: unknown): EndReason {
  const message = e instanceof Refusal ? e.message
    : e instanceof SessionEndedError ? `Tollgate: ${e.message}`
    : e instanceof UpstreamError ? `Tollgate: ${e.message}`
    : e instanceof ProtocolError ? `Tollgate: protocol error: ${e.message}`
    : `Tollgate: gateway error: ${(e as Error).message}`;
  return { code: e instanceof UpstreamError ? 'target_error' : 'error', message };
}

/** A screen writer for the session's recording (null frame sizes refuse the session). */
export function screenWriterFor(ctx: ProtocolContext, s: LiveSession, width: number, height: number, tee?: (type: string, data: Record<string, unknown>) => void): ScreenWriter {
  const rec = s.recording.screen({ width, height });
  const out = tee ? { write: (type: string, data: Record<string, unknown>) => { rec.write(type, data); tee(type, data); }, close: () => rec.close() } : rec;
  return new ScreenWriter(out, ctx.clock, width, height, { keyframeIntervalMs: optionsOf(s.target).keyframeInterval * 1000 });
}

async function handleConnection(ctx: ProtocolContext, raw: net.Socket, preauth: Preauth, tlsContext: () => tls.SecureContext): Promise<void> {
  const clientAddr = raw.remoteAddress ?? 'unknown';
  const log = ctx.log.child({ protocol: 'vnc', client: clientAddr });
  let sock: Duplex = raw;
  const reader = new ByteReader(raw, 'the viewer');
  let minor = 8;
  let stage: 'version' | 'security' | 'result' | 'done' = 'version';
  let upstreamSock: net.Socket | null = null;
  const refuse = (reason: string) => {
    if (stage === 'version') return;
    const msg = stage === 'security' ? encodeNegotiationFailure(minor, reason) : encodeSecurityResult(minor, false, reason);
    sock.end(msg);
    setTimeout(() => raw.destroy(), 1000).unref();
  };
  // The login grace time: the reason goes where RFB has room for one (none before the versions).
  preauth.onTimeout((message) => (stage === 'version' ? raw.destroy() : refuse(message)));
  try {
    raw.write(SERVER_VERSION);
    minor = parseVersion(await reader.read(12));
    stage = 'security';
    const classicTargets = ctx.config.targets().filter((t) => t.protocol === 'vnc' && optionsOf(t).classicAuth);
    const offered = classicTargets.length ? [SEC.VeNCrypt, SEC.VncAuth] : [SEC.VeNCrypt];
    let chosen: number;
    if (minor === 3) {
      // 3.3: the server picks, and only classic auth fits.
      if (!classicTargets.length) throw new Refusal('this gateway requires VeNCrypt (RFB 3.7 or later): use a viewer that supports VeNCrypt X509Plain');
      chosen = SEC.VncAuth;
      raw.write(u32(SEC.VncAuth));
    } else {
      raw.write(Buffer.from([offered.length, ...offered]));
      chosen = await reader.u8();
      if (!offered.includes(chosen as 2 | 19)) throw new ProtocolError(`the viewer chose security type ${chosen}, which was not offered`);
    }
    let outcome: AuthOutcome;
    if (chosen === SEC.VeNCrypt) {
      raw.write(Buffer.from([0, 2]));
      const v = await reader.read(2);
      if (v[0] !== 0 || v[1] !== 2) {
        raw.write(u8(1));
        throw new ProtocolError(`VeNCrypt version ${v[0]}.${v[1]} is not supported (0.2 is)`);
      }
      raw.write(u8(0));
      raw.write(Buffer.concat([u8(1), u32(VENCRYPT.X509Plain)]));
      const sub = await reader.u32();
      if (sub !== VENCRYPT.X509Plain) throw new ProtocolError(`the viewer chose VeNCrypt sub-type ${sub}, only X509Plain (262) is offered`);
      raw.write(u8(1));
      if (reader.buffered) throw new ProtocolError('unencrypted data before the TLS handshake');
      reader.detach();
      const t = new tls.TLSSocket(raw, { isServer: true, secureContext: tlsContext() });
      t.on('error', (e) => log.debug({ err: e.message }, 'vnc client TLS error'));
      await new Promise<void>((res, rej) => {
        t.once('secure', () => res());
        t.once('error', (e) => rej(new ProtocolError(`TLS handshake failed: ${e.message}`)));
        t.once('close', () => rej(new ProtocolError('the viewer closed the connection during the TLS handshake')));
      });
      sock = t;
      reader.attach(t);
      stage = 'result';
      const ulen = await reader.u32();
      const plen = await reader.u32();
      if (ulen > MAX_CREDENTIAL || plen > MAX_CREDENTIAL) throw new ProtocolError('VeNCrypt Plain credentials are too long');
      const username = (await reader.read(ulen)).toString('utf8');
      const secret = new Secret((await reader.read(plen)).toString('utf8'));
      if (!username) throw new Refusal('no user name given: connect with the target name (or target:role) as user name');
      outcome = await ctx.access.authenticate({ protocol: 'vnc', username, clientAddr, secret });
    } else {
      const challenge = randomBytes(16);
      raw.write(challenge);
      stage = 'result';
      const response = await reader.read(16);
      const match = await classicMatch(ctx, challenge, response, clientAddr);
      if (!match) {
        const o = await ctx.access.authenticate({ protocol: 'vnc', username: classicTargets[0]!.name, clientAddr, secret: new Secret('') });
        outcome = o.ok ? { ok: false, code: 'bad_secret', reason: 'wrong connection secret' } : o.code === 'throttled' ? o : {
          ok: false, code: 'bad_secret',
          reason: 'Tollgate: the connection secret is wrong, already used or expired; ask for a new one',
        };
      } else {
        outcome = await ctx.access.authenticate({ protocol: 'vnc', username: match.username, clientAddr, provenSecretId: match.id });
      }
    }
    if (!outcome.ok) {
      log.info({ code: outcome.code }, 'vnc login refused');
      throw new Refusal(outcome.reason);
    }
    preauth.signedIn();
    const auth = outcome.auth;
    if (auth.target.protocol !== 'vnc') throw new Refusal(`Tollgate: target ${auth.target.name} is not a VNC target`);

    // ---- session, minted password, upstream: withSession ends it on every path ----
    await ctx.sessions.withSession(auth, { protocol: 'vnc', clientAddr, client: raw }, async (s) => {
      try {
        const up = await startUpstream(ctx, s);
        upstreamSock = up.socket;
        const target = auth.target;

        // ---- tell the viewer, read ClientInit, send ServerInit ----
        sock.write(encodeSecurityResult(minor, true));
        await reader.u8(); // shared flag: the gateway always connects shared
        stage = 'done';
        const state = new ServerStreamState(up.init.width, up.init.height, up.init.pf);
        let writer: ScreenWriter | null = null;
        try {
          writer = screenWriterFor(ctx, s, up.init.width, up.init.height);
        } catch (e) {
          log.warn({ err: (e as Error).message }, 'vnc screen recording unavailable for this frame size');
          throw new Refusal(`Tollgate: the desktop size ${up.init.width}x${up.init.height} cannot be recorded`);
        }
        sock.write(encodeServerInit({ ...up.init, name: `${target.name} via Tollgate` }));
        reader.detach();
        const role = auth.role;
        s.audit('vnc.connect', { width: up.init.width, height: up.init.height, name: up.init.name.slice(0, 200), clipboard: clipboardOf(role), viewOnly: viewOnlyOf(role) });
        s.log.info({ width: up.init.width, height: up.init.height }, 'vnc session started');
        new VncRelay({
          ctx, session: s, client: sock, upstream: up.socket, state, writer, clipboard: clipboardOf(role), viewOnly: viewOnlyOf(role),
          clientRest: reader.take(), upstreamRest: up.rest,
        }).start();
        return await s.ending;
      } catch (e) {
        const end = startFailure(e);
        loginFailed(e, end.message);
        return end;
      }
    });
  } catch (e) {
    loginFailed(e, startFailure(e).message);
  }

  /** Tell the viewer where RFB has room for it, close the upstream. */
  function loginFailed(e: unknown, reason: string): void {
    preauth.signedIn(); // ending now: the refusal says why
    if (!(e instanceof Refusal) && !(e instanceof ProtocolError && /closed the connection/.test(e.message))) {
      log.warn({ err: (e as Error).message }, 'vnc login failed');
    }
    upstreamSock?.destroy();
    if (stage === 'done' || stage === 'version') raw.destroy();
    else refuse(reason);
  }
}
