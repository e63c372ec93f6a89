/**
 * The client-facing half. The gateway is the RDP server until it knows who is calling: X.224
 * negotiation selects TLS (PROTOCOL_SSL), TLS with the gateway's certificate, then it answers the
 * MCS connect (its own GCC Conference Create Response, Attach User, Channel Joins) so the client
 * sends its Client Info PDU, whose user name ("target[:role]") and password (the connection secret)
 * are checked BEFORE any connection to the target exists. Refusals end the connection with an MCS
 * Disconnect Provider Ultimatum; the proxy audits why.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Authorized, ListenerAddress, LiveSession, ProtocolContext, ProtocolListener } from '../types.js';
import { credentialsOf, optionsOf, DEFAULT_PORT, roleChannels } from './config.js';
import { RdpProtocolError } from './errors.js';
import {
  CS_CORE, CS_MCS_MSGCHANNEL, CS_MULTITRANSPORT, CS_NET, encodeConferenceCreateResponse, encodeServerCore, encodeServerNetwork,
  encodeServerSecurityNone, parseConferenceCreateRequest, readClientCore, readClientNetwork, SC_CORE, SC_NET, SC_SECURITY,
  type Block, type ChannelDef,
} from './gcc.js';
import { parseClientInfo, rewriteClientInfo, type ClientInfo } from './info.js';
import { encodeConnectResponse, encodeDomainPdu, MCS_GLOBAL_CHANNEL, parseConnectInitial, parseDomainPdu } from './mcs.js';
import { deleteAccount, LEASE_KIND, mintAccount, type RdpCredential } from './provisioner.js';
import { mintSamPassword, rotateSamPassword, SAM_LEASE_KIND, withSamLock } from './samfile.js';
import { FrameReader } from './reader.js';
import { RdpRecorder } from './record.js';
import { RdpRelay, type ChannelMap } from './relay.js';
import { parseSecurityHeader, SEC_INFO_PKT } from './security.js';
import { encodeTpkt, type Frame } from './tpkt.js';
import { UpstreamError, dialUpstream } from './upstream.js';
import {
  encodeConnectionConfirm, encodeData, parseConnectionRequest, parseData, PROTOCOL_HYBRID, PROTOCOL_SSL, SSL_REQUIRED_BY_SERVER,
} from './x224.js';
import { Secret } from '../../auth/secret.js';
import type { AuthOutcome } from '../types.js';
import { credsspServer, NlaError } from './nla.js';
import { parseAddress, lazySecureContext, listenTcp, type Preauth } from '../net.js';

/** Verifier label of a connection secret's NT hash (sealed with the gateway key): NLA from RDP clients. */
export const NT_VERIFIER = 'rdp-nt';
/** The NTLM identity the gateway shows NLA clients. */
const NLA_IDENTITY = { computer: 'TOLLGATE', domain: 'TOLLGATE', dnsComputer: 'tollgate', dnsDomain: 'tollgate' };

/** MCS user id the gateway gives the client (Windows and xrdp use the same). */
export const CLIENT_USER_ID = 1007;
const FIRST_CHANNEL_ID = 1004;

function mcsFrame(pdu: Buffer): Buffer { return encodeTpkt(encodeData(pdu)); }

/** Disconnect Provider Ultimatum (reason rn-provider-initiated / user-requested), the RDP way to hang up. */
export function disconnectFrame(): Buffer {
  return mcsFrame(encodeDomainPdu({ type: 'disconnectProviderUltimatum', reason: 3 }));
}

export async function listenRdp(ctx: ProtocolContext, address: ListenerAddress): Promise<ProtocolListener> {
  const tlsContext = lazySecureContext(ctx);
  return listenTcp(address, ctx.log, 'rdp', (sock, preauth) => handleConnection(ctx, sock, preauth, tlsContext), { clock: ctx.clock });
}

/**
 * A refusal before the handshake (ProtocolModule.refuse). RDP has no words before TLS (X.224's
 * negotiation failure codes say nothing like "busy"): the connection is closed, and the client
 * reports that it could not connect. The login grace time ends connections the same way.
 */
export function refuseRdp(sock: Duplex): void {
  sock.end();
  setTimeout(() => sock.destroy(), 500).unref();
}

interface ClientHello {
  requestedProtocols: number;
  mcsHead: Buffer;
  blocks: Block[];
  channels: ChannelDef[];
  info: ClientInfo;
  cookie: string | null;
}

function mcsData(f: Frame, what: string): Buffer {
  if (f.kind !== 'tpkt') throw new RdpProtocolError(`expected ${what}, got a fast-path PDU`);
  const d = parseData(f.payload);
  if (!d) throw new RdpProtocolError(`the client disconnected during ${what}`);
  return d;
}

/** X.224, TLS and the MCS connection sequence up to the Client Info PDU. */
async function clientHandshake(
  raw: net.Socket, tlsContext: () => tls.SecureContext, onTls: (t: tls.TLSSocket) => void, nla: ((t: tls.TLSSocket) => Promise<void>) | null,
): Promise<{ hello: ClientHello; sock: tls.TLSSocket; reader: FrameReader }> {
  const r0 = new FrameReader();
  r0.attach(raw);
  const cr = await r0.next('the X.224 Connection Request');
  if (cr.kind !== 'tpkt') throw new RdpProtocolError('expected an X.224 Connection Request');
  const req = parseConnectionRequest(cr.payload);
  const early = r0.detach();
  if (early.frames.length || early.rest.length) throw new RdpProtocolError('data before the connection was confirmed');
  const requested = req.negotiation?.requestedProtocols ?? 0;
  if (!(requested & PROTOCOL_SSL)) {
    raw.end(encodeTpkt(encodeConnectionConfirm({ failure: SSL_REQUIRED_BY_SERVER })));
    throw new RdpProtocolError('the client does not offer TLS security (use /sec:tls)');
  }
  // NLA (CredSSP) for clients that ask for it; TLS only for those that do not.
  const selected = nla && requested & PROTOCOL_HYBRID ? PROTOCOL_HYBRID : PROTOCOL_SSL;
  raw.write(encodeTpkt(encodeConnectionConfirm({ selectedProtocol: selected })));
  const sock = new tls.TLSSocket(raw, { isServer: true, secureContext: tlsContext() });
  onTls(sock);
  if (selected === PROTOCOL_HYBRID && nla) {
    await new Promise<void>((res, rej) => {
      sock.once('secure', () => { sock.off('error', rej); res(); });
      sock.once('error', rej);
    }).catch((e: Error) => { throw new RdpProtocolError(`TLS with the client failed: ${e.message}`); });
    await nla(sock);
  }
  const r = new FrameReader();
  r.attach(sock);

  const ci = parseConnectInitial(mcsData(await r.next('the MCS Connect-Initial'), 'the MCS Connect-Initial'));
  const blocks = parseConferenceCreateRequest(ci.userData);
  const core = blocks.find((b) => b.type === CS_CORE);
  if (!core) throw new RdpProtocolError('MCS Connect-Initial without client core data');
  readClientCore(core.data);
  const netBlock = blocks.find((b) => b.type === CS_NET);
  const channels = netBlock ? readClientNetwork(netBlock.data) : [];
  const clientIds = channels.map((_, i) => FIRST_CHANNEL_ID + i);
  const response = encodeConferenceCreateResponse([
    { type: SC_CORE, data: encodeServerCore(requested) },
    { type: SC_SECURITY, data: encodeServerSecurityNone() },
    { type: SC_NET, data: encodeServerNetwork({ ioChannel: MCS_GLOBAL_CHANNEL, channelIds: clientIds }) },
  ]);
  sock.write(mcsFrame(encodeConnectResponse(response)));
  const joinable = new Set([CLIENT_USER_ID, MCS_GLOBAL_CHANNEL, ...clientIds]);
  for (let n = 0; n < 64; n++) {
    const m = parseDomainPdu(mcsData(await r.next('the MCS connection sequence'), 'the MCS connection sequence'));
    if (m.type === 'erectDomainRequest') continue;
    if (m.type === 'attachUserRequest') {
      sock.write(mcsFrame(encodeDomainPdu({ type: 'attachUserConfirm', result: 0, initiator: CLIENT_USER_ID })));
      continue;
    }
    if (m.type === 'channelJoinRequest') {
      const ok = joinable.has(m.channelId);
      sock.write(mcsFrame(encodeDomainPdu({ type: 'channelJoinConfirm', result: ok ? 0 : 14, initiator: CLIENT_USER_ID, requested: m.channelId, channelId: ok ? m.channelId : null })));
      continue;
    }
    if (m.type === 'disconnectProviderUltimatum') throw new RdpProtocolError('the client disconnected during the MCS connection sequence');
    if (m.type === 'sendData' && m.channelId === MCS_GLOBAL_CHANNEL) {
      const sec = parseSecurityHeader(m.data);
      if (!(sec.flags & SEC_INFO_PKT)) throw new RdpProtocolError('expected the Client Info PDU');
      const info = parseClientInfo(sec.body);
      return { hello: { requestedProtocols: requested, mcsHead: ci.head, blocks, channels, info, cookie: req.cookie }, sock, reader: r };
    }
    throw new RdpProtocolError(`unexpected ${m.type} during the MCS connection sequence`);
  }
  throw new RdpProtocolError('too many PDUs before the Client Info PDU');
}

async function handleConnection(ctx: ProtocolContext, raw: net.Socket, preauth: Preauth, tlsContext: () => tls.SecureContext): Promise<void> {
  const clientAddr = raw.remoteAddress ?? 'unknown';
  const log = ctx.log.child({ protocol: 'rdp', client: clientAddr });
  let sock: net.Socket = raw;
  preauth.onTimeout(() => { sock.destroy(); raw.destroy(); });
  const hangUp = () => {
    if (!sock.destroyed) {
      sock.end(disconnectFrame());
      setTimeout(() => { sock.destroy(); raw.destroy(); }, 500).unref();
    }
  };
  try {
    // With NLA the person is authenticated inside CredSSP (NTLMv2 against the pending secrets' NT hashes);
    // the proxy decides (and audits) before CredSSP completes, so a refusal is a logon failure for the client.
    let nlaOutcome: AuthOutcome | null = null;
    const nla = async (t: tls.TLSSocket) => {
      await credsspServer(t, {
        certPem: ctx.config.tls.cert, identity: NLA_IDENTITY, now: () => ctx.clock.now(),
        candidates: async (user) => (await ctx.access.pendingSecrets(user, 'rdp', clientAddr)).flatMap((c) => {
          const sealed = c.verifiers[NT_VERIFIER];
          const v = sealed ? ctx.crypto.unseal<{ h: string }>(sealed) : null;
          return v && typeof v.h === 'string' && /^[0-9a-f]{32}$/.test(v.h) ? [{ id: c.id, ntHash: Buffer.from(v.h, 'hex') }] : [];
        }),
        authorize: async (m, claimed) => {
          let o: AuthOutcome = m
            ? await ctx.access.authenticate({ protocol: 'rdp', username: m.user, clientAddr, provenSecretId: m.id })
            // No pending secret answers the NTLM response: the proxy still decides and audits the refusal.
            : await ctx.access.authenticate({ protocol: 'rdp', username: claimed, clientAddr, secret: new Secret('') });
          if (!m && o.ok) o = { ok: false, code: 'bad_secret', reason: 'the connection secret is wrong, used or expired' };
          nlaOutcome = o;
          return o.ok && o.auth.target.protocol === 'rdp';
        },
      });
    };
    const { hello, sock: t, reader } = await clientHandshake(raw, tlsContext, (s) => {
      sock = s;
      s.on('error', (e) => log.debug({ err: e.message }, 'rdp client TLS error'));
    }, nla);
    let outcome: AuthOutcome;
    let username = '';
    if (nlaOutcome) {
      outcome = nlaOutcome;
    } else {
      username = hello.info.userName || hello.cookie || '';
      if (!username) {
        log.info('rdp login without a user name');
        hangUp();
        return;
      }
      outcome = await ctx.access.authenticate({ protocol: 'rdp', username, clientAddr, secret: hello.info.password });
    }
    if (!outcome.ok) {
      log.info({ user: username.slice(0, 64), code: outcome.code }, 'rdp login refused');
      hangUp();
      return;
    }
    preauth.signedIn();
    if (outcome.auth.target.protocol !== 'rdp') {
      log.info({ target: outcome.auth.target.name }, 'rdp login for a target of another protocol');
      hangUp();
      return;
    }
    // withSession ends the session on every path: the relay's end, a failure while starting, the client leaving.
    await ctx.sessions.withSession(outcome.auth, { protocol: 'rdp', clientAddr, client: raw }, async (session) => {
      try {
        await startSession(ctx, session, outcome.auth, t, reader, hello);
        return await session.ending;
      } catch (e) {
        loginEnded(e);
        return { code: e instanceof UpstreamError ? 'target_error' : 'error', message: (e as Error).message };
      }
    });
  } catch (e) {
    loginEnded(e);
  }

  function loginEnded(e: unknown): void {
    preauth.signedIn(); // ending now
    const quiet = (e instanceof RdpProtocolError || e instanceof NlaError) && /closed the connection/.test(e.message);
    if (!quiet) log.info({ err: (e as Error).message }, 'rdp connection ended during login');
    hangUp();
  }
}

async function startSession(ctx: ProtocolContext, session: LiveSession, auth: Authorized, client: tls.TLSSocket, reader: FrameReader, hello: ClientHello): Promise<void> {
  const target = auth.target;
  const { host, port } = parseAddress(target.address, DEFAULT_PORT);
  const opts = optionsOf(target);
  const allowed = roleChannels(auth.role);
  const recorder = new RdpRecorder(session.recording, ctx.clock, session.log);
  const signal = { aborted: false };
  let relay: RdpRelay | null = null;
  let pendingEnd: { code: string; message: string } | null = null;
  session.onTerminate((reason) => {
    signal.aborted = true;
    pendingEnd = reason;
    if (relay) relay.close(disconnectFrame());
    else { client.end(disconnectFrame()); setTimeout(() => client.destroy(), 50).unref(); }
    recorder.close();
    void session.end(reason);
  });
  const kept = hello.channels.map((c, i) => ({ c, id: FIRST_CHANNEL_ID + i })).filter(({ c }) => allowed.has(c.name));
  const refused = hello.channels.filter((c) => !allowed.has(c.name)).map((c) => c.name);
  const credMode = credentialsOf(target);
  const dial = async (cred: RdpCredential) => {
    if (session.ended || signal.aborted) throw new RdpProtocolError('the session ended while it was starting');
    return dialUpstream({
      host, port, timeoutMs: opts.connectTimeout * 1000, clock: ctx.clock, ca: opts.ca, mcsHead: hello.mcsHead,
      blocks: hello.blocks.filter((b) => b.type !== CS_MCS_MSGCHANNEL && b.type !== CS_MULTITRANSPORT),
      channels: kept.map(({ c }) => c),
      info: rewriteClientInfo(hello.info, { username: cred.username, password: cred.password, domain: cred.domain }),
      nla: opts.nla ? { user: cred.username, domain: cred.domain ?? '', password: cred.password } : null,
    }, signal);
  };
  // A SAM account has one password at a time: mint and log in under the file's lock, so another
  // session's rotation cannot slip in between.
  const { cred, up } = credMode.mode === 'sam-file'
    ? await withSamLock(credMode.path, async () => { const c = await mintSamPassword(session, target); return { cred: c, up: await dial(c) }; })
    : await (async () => { const c = await mintAccount(session, target, auth.role); return { cred: c, up: await dial(c) }; })();
  if (session.ended || signal.aborted) {
    up.socket.destroy();
    throw new RdpProtocolError('the session ended while it was starting');
  }
  const map: ChannelMap = {
    up: new Map([[MCS_GLOBAL_CHANNEL, up.ioChannel], [CLIENT_USER_ID, up.userId]]),
    down: new Map([[up.ioChannel, MCS_GLOBAL_CHANNEL]]),
    names: new Map(),
    clientIo: MCS_GLOBAL_CHANNEL,
    clientUser: CLIENT_USER_ID,
    upstreamUser: up.userId,
  };
  hello.channels.forEach((c, i) => { map.up.set(FIRST_CHANNEL_ID + i, null); map.names.set(FIRST_CHANNEL_ID + i, c.name); });
  kept.forEach(({ id }, k) => { map.up.set(id, up.channelIds[k]!); map.down.set(up.channelIds[k]!, id); });
  const early = reader.detach();
  session.audit('rdp.connect', { account: cred.username, security: up.selectedProtocol === PROTOCOL_SSL ? 'tls' : 'nla', channels: kept.map(({ c }) => c.name), refusedChannels: refused });
  session.log.info({ account: cred.username, refused }, 'rdp session started');
  relay = new RdpRelay({
    client, upstream: up.socket, map, recorder,
    upstreamFrames: up.frames, upstreamRest: up.rest,
    clientRest: Buffer.concat([...early.frames.map((f) => f.raw), early.rest]),
    onBytes: (u, d) => session.addBytes(u, d),
    onConfirmActive: (changed) => { if (changed.length) session.audit('rdp.capabilities_stripped', { stripped: changed }); },
    onEnd: (code, message) => {
      recorder.close();
      if (recorder.undecoded) session.log.info({ undecoded: recorder.undecoded, decoded: recorder.decoded }, 'rdp: some screen updates were not recorded');
      void session.end({ code, message });
    },
  });
  if (pendingEnd) { relay.close(disconnectFrame()); return; }
  relay.start();
}

export { deleteAccount, LEASE_KIND, rotateSamPassword, SAM_LEASE_KIND };
