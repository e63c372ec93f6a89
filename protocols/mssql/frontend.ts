/**
 * The client-facing half: PRELOGIN with encryption negotiation (TLS inside PRELOGIN packets,
 * then for the whole connection; or TDS 8.0 strict TLS from the first byte), LOGIN7 with the
 * user name "target[:role]" and the connection secret as password, then the session: lease,
 * login minted on the server, upstream login, relay. Every refusal is an ERROR token.
 */
import type net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Authorized, EndReason, ListenerAddress, LiveSession, ProtocolContext, ProtocolListener } from '../types.js';
import { formatAddr, listenTcp, type Preauth } from '../net.js';
import { ConnClosedError, TdsConn } from './conn.js';
import { optionsOf, parseAddress, roleOf } from './config.js';
import { ERR, FATAL, errorMessage, loginFailed } from './errors.js';
import { FEATURE, OPT2_INTEGRATED_SECURITY, TDS, parseLogin7, tdsVersionName, type Login7 } from './login7.js';
import { DEFAULT_PACKET_SIZE, MAX_PACKET, PKT, ProtocolError, clampPacketSize, encodeMessage } from './packets.js';
import { ENCRYPT, buildPrelogin, parsePrelogin } from './prelogin.js';
import { LEASE_KIND, createSessionLogin, dropSessionLogin, randomPassword, sessionLoginName } from './provisioner.js';
import { TdsRelay } from './relay.js';
import { UpstreamError, loginUpstream, upstreamLoginFields } from './upstream.js';

/** The server version the gateway announces in PRELOGIN (the real one comes with the server's LOGINACK). */
const GATEWAY_VERSION = { major: 16, minor: 0, build: 1000, subbuild: 0 };
/** Before sign-in nobody makes the gateway hold much: PRELOGIN and LOGIN7 are small. */
const MAX_LOGIN_MESSAGE = 64 * 1024;

class Refusal extends Error {
  constructor(readonly bytes: Buffer, message: string) {
    super(message);
    this.name = 'Refusal';
  }
}

/** The gateway's TLS contexts: TLS 1.2 at most inside PRELOGIN packets (as SQL Server), any version for strict. */
function contexts(ctx: ProtocolContext): { wrapped: () => tls.SecureContext; strict: () => tls.SecureContext } {
  let wrapped: tls.SecureContext | null = null;
  let strict: tls.SecureContext | null = null;
  return {
    wrapped: () => (wrapped ??= tls.createSecureContext({ cert: ctx.config.tls.cert, key: ctx.config.tls.key.reveal(), maxVersion: 'TLSv1.2' })),
    strict: () => (strict ??= tls.createSecureContext({ cert: ctx.config.tls.cert, key: ctx.config.tls.key.reveal() })),
  };
}

export async function listenMssql(ctx: ProtocolContext, address: ListenerAddress): Promise<ProtocolListener> {
  const log = ctx.log.child({ protocol: 'mssql' });
  const tlsContexts = contexts(ctx);
  const listener = await listenTcp(address, log, 'mssql', (sock, preauth) => handleConnection(ctx, sock, preauth, tlsContexts), { clock: ctx.clock });
  log.info({ host: address.host, port: listener.port }, 'mssql listener ready');
  return listener;
}

async function handleConnection(ctx: ProtocolContext, raw: net.Socket, preauth: Preauth, tlsContexts: ReturnType<typeof contexts>): Promise<void> {
  const clientAddr = formatAddr(raw.remoteAddress, raw.remotePort);
  const log = ctx.log.child({ protocol: 'mssql', client: clientAddr });
  const conn = new TdsConn(raw, MAX_PACKET, 2 * MAX_LOGIN_MESSAGE);
  let packetSize = DEFAULT_PACKET_SIZE;
  preauth.onTimeout((message) => {
    // Over TLS a LOGIN7 is expected: answer it with the reason. Before that TDS has no room for one.
    if (conn.encrypted) { conn.write(errorMessage({ number: ERR.UNSUPPORTED, class: FATAL, message }, packetSize)); conn.end(); } else conn.destroy();
  });
  let login: Login7 | null = null;
  let session: LiveSession | null = null;
  try {
    // ---- PRELOGIN and encryption ----
    let strict = false;
    if ((await conn.firstByte()) === 0x16) {
      // TDS 8.0 strict: TLS first (ALPN tds/8.0 offered), then TDS inside it.
      await conn.startTls(false, 'server', (t) => new tls.TLSSocket(t as net.Socket, { isServer: true, secureContext: tlsContexts.strict(), ALPNProtocols: ['tds/8.0'] }));
      strict = true;
    }
    const pl = await conn.message(MAX_LOGIN_MESSAGE);
    if (pl.type === PKT.PRE_TDS7_LOGIN) throw new ProtocolError('a TDS 4.2/5.0 login: Tollgate speaks TDS 7.2 and later');
    if (pl.type !== PKT.PRELOGIN) throw new ProtocolError(`expected PRELOGIN, got a packet of type 0x${pl.type.toString(16)}`);
    const pre = parsePrelogin(pl.payload);
    const asked = (pre.encryption ?? ENCRYPT.OFF) & ~ENCRYPT.CLIENT_CERT;
    // ENCRYPT_OFF (login-only encryption, if the server agrees) is answered with ENCRYPT_REQ, as a SQL
    // Server that forces encryption does: the client then encrypts the whole connection. A client that
    // cannot encrypt (ENCRYPT_NOT_SUP) gets ENCRYPT_REQ too and gives up, before it sends a password.
    conn.write(encodeMessage(PKT.TABULAR_RESULT, buildPrelogin({
      version: GATEWAY_VERSION,
      encryption: strict ? ENCRYPT.NOT_SUP : asked === ENCRYPT.ON ? ENCRYPT.ON : ENCRYPT.REQ,
      instance: '',
      mars: 0,
      ...(pre.fedAuthRequired !== undefined ? { fedAuthRequired: 0 } : {}),
    })));
    if (!strict) {
      if (asked === ENCRYPT.NOT_SUP) {
        // A client that goes on without TLS would send its secret in the clear: never read it.
        log.info('mssql client without encryption refused');
        await conn.packet().catch(() => undefined);
        throw new Refusal(errorMessage({ number: ERR.UNSUPPORTED, class: FATAL, message: 'Tollgate requires encryption: connect with encryption on (sqlcmd -N, Encrypt=True)' }),
          'the client does not support encryption');
      }
      await conn.startTls(true, 'server', (t) => new tls.TLSSocket(t as net.Socket, { isServer: true, secureContext: tlsContexts.wrapped() }));
    }

    // ---- LOGIN7 ----
    const lm = await conn.message(MAX_LOGIN_MESSAGE);
    if (lm.type === PKT.SSPI || lm.type === PKT.FEDAUTH_TOKEN) throw refusal('integrated and Azure AD authentication are not supported: log in with the target name and a connection secret');
    if (lm.type !== PKT.LOGIN7) throw new ProtocolError(`expected LOGIN7, got a packet of type 0x${lm.type.toString(16)}`);
    login = parseLogin7(lm.payload);
    packetSize = clampPacketSize(login.packetSize);
    const tdsOk = login.tdsVersion === TDS.V7_2 || login.tdsVersion === TDS.V7_3A || login.tdsVersion === TDS.V7_3B || login.tdsVersion === TDS.V7_4 || login.tdsVersion === TDS.V8_0;
    if (!tdsOk) throw refusal(`TDS ${tdsVersionName(login.tdsVersion)} is not supported: Tollgate speaks TDS 7.2 to 7.4`);
    if (pre.mars) throw refusal('MARS (MultipleActiveResultSets) is not supported through Tollgate: connect without it');
    if (login.optionFlags2 & OPT2_INTEGRATED_SECURITY || login.sspiLength) throw refusal('integrated (Windows) authentication is not supported: log in with the target name and a connection secret');
    if (login.features.some((f) => f.id === FEATURE.FEDAUTH)) throw refusal('Azure AD authentication is not supported: log in with the target name and a connection secret');
    if (login.changePassword) throw refusal('a connection secret cannot be changed at login');
    if (!login.userName) throw refusal('log in with the target name as user, e.g. -U sales-db');

    const outcome = await ctx.access.authenticate({ protocol: 'mssql', username: login.userName, clientAddr, secret: login.password });
    preauth.signedIn();
    if (!outcome.ok) {
      log.info({ user: login.userName.slice(0, 100), code: outcome.code }, 'mssql login refused');
      throw new Refusal(loginFailed(login.userName, outcome.reason || 'Tollgate: the connection secret is wrong, used or expired.', packetSize), outcome.reason);
    }
    if (outcome.auth.target.protocol !== 'mssql') throw refusal(`target ${outcome.auth.target.name} is not a SQL Server target`);
    session = await ctx.sessions.open(outcome.auth, { protocol: 'mssql', clientAddr }).catch((e: Error) => {
      throw new Refusal(loginFailed(login!.userName, `Tollgate: ${e.message}`, packetSize), e.message);
    });
    await startSession(ctx, session, outcome.auth, conn, login, packetSize, strict);
  } catch (e) {
    preauth.signedIn(); // ending now: the ERROR says why
    if (e instanceof Refusal) {
      conn.write(e.bytes);
      conn.end();
    } else if (e instanceof ConnClosedError || conn.sock.destroyed) {
      conn.destroy();
    } else {
      const message = e instanceof ProtocolError ? `Tollgate: protocol error: ${e.message}` : `Tollgate: ${(e as Error).message}`;
      log.info({ err: (e as Error).message }, 'mssql login failed');
      if (conn.encrypted) {
        conn.write(errorMessage({ number: ERR.UNSUPPORTED, class: FATAL, message }, packetSize));
        conn.end();
      } else conn.destroy();
    }
    if (session && !session.ended) await session.end({ code: 'error', message: (e as Error).message });
  }

  function refusal(reason: string): Refusal {
    return new Refusal(errorMessage({ number: ERR.UNSUPPORTED, class: FATAL, message: `Tollgate: ${reason}` }, packetSize), reason);
  }
}

async function startSession(ctx: ProtocolContext, session: LiveSession, auth: Authorized, conn: TdsConn, login: Login7, packetSize: number, strict: boolean): Promise<void> {
  const target = auth.target;
  const role = roleOf(auth.role);
  const opts = optionsOf(target);
  const fail = async (reason: EndReason, toClient: string) => {
    const message = /^Tollgate\b/.test(toClient) ? toClient : `Tollgate: ${toClient}`;
    conn.write(errorMessage({ number: early ? ERR.SESSION_ENDED : ERR.TARGET, class: FATAL, message }, packetSize));
    conn.end();
    await session.end(reason);
  };
  // Until the relay runs, "end now" ends the half-built session.
  let relay: TdsRelay | null = null;
  let early: EndReason | null = null;
  session.onTerminate((reason) => {
    if (relay) return relay.terminate(reason);
    early ??= reason;
  });
  const userDb = login.database && login.database.toLowerCase() !== target.name.toLowerCase() ? login.database : '';
  const database = userDb || role.defaultDatabase || role.databases[0]?.name || 'master';
  const loginName = sessionLoginName(auth.principal.sub);
  const databases = role.databases.map((d) => d.name);
  let password: string;
  try {
    password = await session.lease<string>(LEASE_KIND, { login: loginName, databases }, async () => {
      const pw = randomPassword();
      await createSessionLogin(ctx, target, role, loginName, pw);
      return { credential: pw };
    });
  } catch (e) {
    // Ended while the login was being made (the teardown may have dropped it under our feet): say why it ended.
    if (early) return fail(early, (early as EndReason).message);
    session.log.error({ err: (e as Error).message }, 'could not create the session login');
    return fail({ code: 'target_error', message: `could not create the session login: ${(e as Error).message}` }, `could not create a login on ${target.name} for this session; see the gateway log`);
  }
  const gone = () => early ?? (conn.closed || conn.sock.destroyed ? { code: 'client_exit' as const, message: 'the client left during login' } : null);
  if (gone()) {
    // Ended while the login was being made: the teardown may have run before it existed.
    await dropSessionLogin(ctx, target, loginName, databases).catch((e) => session.log.error({ err: (e as Error).message }, 'could not drop the session login'));
    return fail(gone()!, gone()!.message);
  }
  const { host, port } = parseAddress(target.address);
  const ca = opts.ca !== undefined ? ctx.config.resolveSecret(opts.ca, `targets.${target.name}.options.ca`).reveal() : undefined;
  let up;
  try {
    up = await loginUpstream({
      host, port,
      login: upstreamLoginFields(login, loginName, password, database, opts.serverName ?? host),
      tls: { strict: opts.encrypt === 'strict', ca, servername: opts.serverName, rejectUnauthorized: !opts.trustServerCertificate },
      timeoutMs: opts.connectTimeout * 1000,
      clock: ctx.clock,
    });
  } catch (e) {
    const msg = (e as Error).message;
    session.log.warn({ err: msg }, 'mssql upstream login failed');
    const server = e instanceof UpstreamError ? e.server : null;
    return fail({ code: 'target_error', message: msg }, server ? `${target.name} refused the session: ${server.message}` : `cannot log in to ${target.name}: ${msg}`);
  }
  const g = gone();
  if (g) {
    up.sock.destroy();
    return fail(g, g.message);
  }
  const client = conn.release();
  // The client sees the server's own login answer (LOGINACK, ENVCHANGEs, messages).
  for (const p of up.response) client.sock.write(p.raw);
  session.audit('mssql.login', {
    login: loginName, database: up.database ?? database, server: `${up.ack.progName} ${up.ack.version}`,
    tds: tdsVersionName(up.ack.tdsVersion), encryption: strict ? 'strict' : 'tls', app: login.appName.slice(0, 128),
  });
  session.log.info({ login: loginName, database }, 'mssql session started');
  relay = new TdsRelay({
    session, client: client.sock as Duplex, upstream: up.sock, clientRest: client.rest, upstreamRest: up.rest,
    packetSize: clampPacketSize(up.packetSize || packetSize),
  });
  relay.start();
}
