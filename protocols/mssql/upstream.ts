/**
 * The gateway's own TDS login to the database as the session login: PRELOGIN, TLS (inside
 * PRELOGIN packets, or TDS 8.0 strict), LOGIN7 built from what the client asked for (its
 * version, packet size, database, application, language) with the minted credential, and the
 * login response, whose packets are passed on to the client as they came.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Clock } from '../../policies/clock.js';
import { ConnClosedError, TdsConn } from './conn.js';
import { FEATURE, TDS, buildLogin7, type Login7, type Login7Fields } from './login7.js';
import { DEFAULT_PACKET_SIZE, PKT, ProtocolError, clampPacketSize, encodeMessage, MAX_PACKET, type Packet } from './packets.js';
import { ENCRYPT, buildPrelogin, parsePrelogin } from './prelogin.js';
import { ENV, ResponseTracker, type LoginAck, type ServerMessage } from './tokens.js';

export class UpstreamError extends Error {
  constructor(message: string, readonly server: ServerMessage | null = null) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export interface UpstreamTls {
  strict: boolean;
  ca?: string;
  servername?: string;
  rejectUnauthorized: boolean;
}

export interface UpstreamLogin {
  /** The TLS socket to the server (the relay's upstream). */
  sock: Duplex;
  /** Bytes read after the login response. */
  rest: Buffer;
  /** The login response packets, to forward to the client. */
  response: Packet[];
  ack: LoginAck;
  packetSize: number;
  database: string | null;
}

/** The TDS version the gateway asks the server for: the client's, 7.2 at least, 7.4 at most. */
export function upstreamVersion(client: number): number {
  if (client === TDS.V7_2 || client === TDS.V7_3A || client === TDS.V7_3B) return client;
  return TDS.V7_4;
}

/** Features passed on to the server: only those that do not change what the gateway parses. */
const PASSED_FEATURES = new Set<number>([FEATURE.UTF8_SUPPORT]);

export function upstreamLoginFields(client: Login7, user: string, password: string, database: string, serverName: string): Login7Fields {
  return {
    tdsVersion: upstreamVersion(client.tdsVersion),
    packetSize: clampPacketSize(client.packetSize),
    clientProgVer: client.clientProgVer,
    clientPid: client.clientPid,
    optionFlags1: client.optionFlags1,
    optionFlags2: client.optionFlags2,
    typeFlags: client.typeFlags,
    optionFlags3: client.optionFlags3,
    clientTimeZone: client.clientTimeZone,
    clientLcid: client.clientLcid,
    hostName: client.hostName,
    userName: user,
    password,
    appName: client.appName,
    serverName,
    cltIntName: client.cltIntName,
    language: client.language,
    database,
    clientId: client.clientId,
    features: client.features.filter((f) => PASSED_FEATURES.has(f.id)),
  };
}

const MAX_LOGIN_RESPONSE = 1 << 20;

function connectTcp(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const timer = setTimeout(() => { s.destroy(); reject(new UpstreamError(`no connection to ${host}:${port} within ${timeoutMs / 1000} s`)); }, timeoutMs);
    s.once('connect', () => { clearTimeout(timer); s.setNoDelay(true); resolve(s); });
    s.once('error', (e) => { clearTimeout(timer); reject(new UpstreamError(`cannot connect to ${host}:${port}: ${e.message}`)); });
  });
}

export async function loginUpstream(o: {
  host: string; port: number; login: Login7Fields; tls: UpstreamTls; timeoutMs: number; clock: Clock;
}): Promise<UpstreamLogin> {
  const raw = await connectTcp(o.host, o.port, o.timeoutMs);
  const conn = new TdsConn(raw, MAX_PACKET, 2 * MAX_LOGIN_RESPONSE);
  const timer = o.clock.setTimer(o.timeoutMs, () => conn.destroy());
  const tlsOptions = (socket: Duplex): tls.ConnectionOptions => ({
    socket,
    servername: o.tls.servername ?? (net.isIP(o.host) ? undefined : o.host),
    ca: o.tls.ca,
    rejectUnauthorized: o.tls.rejectUnauthorized,
    ...(o.tls.strict ? { ALPNProtocols: ['tds/8.0'] } : { maxVersion: 'TLSv1.2' as const }),
  });
  try {
    if (o.tls.strict) await conn.startTls(false, 'client', (t) => tls.connect(tlsOptions(t)));
    conn.write(encodeMessage(PKT.PRELOGIN, buildPrelogin({
      version: { major: 16, minor: 0, build: 0, subbuild: 0 },
      encryption: o.tls.strict ? ENCRYPT.OFF : ENCRYPT.ON,
      instance: '',
      threadId: process.pid,
      mars: 0,
    })));
    const pl = await conn.message(64 * 1024);
    if (pl.type !== PKT.TABULAR_RESULT) throw new UpstreamError(`the server answered PRELOGIN with a packet of type 0x${pl.type.toString(16)}`);
    const reply = parsePrelogin(pl.payload);
    if (!o.tls.strict) {
      const enc = (reply.encryption ?? ENCRYPT.NOT_SUP) & ~ENCRYPT.CLIENT_CERT;
      if (enc !== ENCRYPT.ON && enc !== ENCRYPT.REQ) {
        throw new UpstreamError(enc === ENCRYPT.NOT_SUP
          ? 'the server does not support encryption; Tollgate connects to SQL Server over TLS only'
          : 'the server offered login-only encryption; Tollgate encrypts the whole connection');
      }
      await conn.startTls(true, 'client', (t) => tls.connect(tlsOptions(t)));
    }
    conn.write(encodeMessage(PKT.LOGIN7, buildLogin7(o.login), DEFAULT_PACKET_SIZE));
    let ack: LoginAck | null = null;
    let error: ServerMessage | null = null;
    let packetSize = o.login.packetSize || DEFAULT_PACKET_SIZE;
    let database: string | null = null;
    let routed = false;
    const tracker = new ResponseTracker({
      onLoginAck: (a) => { ack = a; },
      onError: (m) => { error ??= m; },
      onEnvChange: (type, value) => {
        if (type === ENV.PACKET_SIZE && value && /^\d+$/.test(value)) packetSize = Number(value);
        if (type === ENV.DATABASE && value) database = value;
        if (type === ENV.ROUTING) routed = true;
      },
    });
    const response: Packet[] = [];
    let size = 0;
    for (;;) {
      const p = await conn.packet();
      size += p.payload.length;
      if (size > MAX_LOGIN_RESPONSE) throw new UpstreamError('the login response is too long');
      response.push(p);
      tracker.feed(p.payload);
      if (p.status & 0x01) break;
    }
    tracker.end();
    if (!ack) {
      const e = error as ServerMessage | null;
      throw new UpstreamError(e ? `the server refused the login: ${e.message} (error ${e.number})` : 'the server did not acknowledge the login', e);
    }
    if (routed) throw new UpstreamError('the server redirected the login (Azure routing), which Tollgate does not follow');
    const { sock, rest } = conn.release();
    return { sock, rest, response, ack, packetSize, database };
  } catch (e) {
    conn.destroy();
    if (e instanceof UpstreamError) throw e;
    if (e instanceof ConnClosedError) throw new UpstreamError('the server closed the connection during login');
    if (e instanceof ProtocolError) throw new UpstreamError(`the server sent something that is not TDS: ${e.message}`);
    throw new UpstreamError(`TLS to the server failed: ${(e as Error).message}`);
  } finally {
    timer.cancel();
  }
}
