/**
 * MySQL/MariaDB brokering: clients log in to the gateway with "target[:role]" and a connection
 * secret; the gateway mints a database user for the session, logs in as it and relays packets,
 * checking statements against the session's rules and recording them.
 *
 *   targets:
 *     - name: app-db
 *       protocol: mysql
 *       address: 10.0.0.5:3306
 *       credentials:
 *         admin: { user: tollgate_admin, password: { env: APP_DB_ADMIN_PW } }  # CREATE USER, GRANT OPTION, PROCESS, CONNECTION ADMIN
 *         userHost: '10.0.0.%'          # host part of session users (default '%')
 *       options:
 *         clientAuth: caching_sha2_password   # default mysql_native_password (challenge-response)
 *         tls: { ca: "-----BEGIN CERTIFICATE-----..." }   # gateway -> server TLS, admin connection too (or true: unverified)
 *         allowPlain: false                   # true: accept clients that do not ask for TLS (default: ERROR 3159, TLS is required)
 *       roles:
 *         - { name: read, grants: ["SELECT ON shop.*"], database: shop }
 *         - { name: ops, roles: [shop_operator], allowLoadDataLocal: true }
 *
 * Files: packets.ts (wire format), handshake.ts (client-facing auth), upstream.ts (login to the
 * server), provisioner.ts (session users), relay.ts + inspector.ts (data path), demo.ts.
 */
import type { Socket } from 'node:net';
import { mysqlNativeClient } from './native.js';
import type { Logger } from 'pino';
import type {
  ProtocolModule, ProtocolContext, ListenerAddress, ProtocolListener, TargetConfig, ClientCommandInfo,
  LiveSession, EndReason, RefusalCode,
} from '../types.js';
import type { LeaseRecord } from '../../proxy/store/types.js';
import type { Secret } from '../../auth/secret.js';
import { PacketConn, ConnClosedError } from './conn.js';
import { CAP, COM, ER, GATEWAY_CAPS, ProtocolError, buildErr, frame, nativeVerifier, tg, type ErrSpec } from './packets.js';
import { serverHandshake, Refusal } from './handshake.js';
import { loginUpstream, DEFAULT_PORT, UpstreamError, upstreamTls } from './upstream.js';
import { Flavours, type GreetingOffer } from './flavour.js';
import {
  LEASE_KIND, adminConnect, adminCredential, killThread, dropSessionUser, mintSessionUser, sessionUserName, userHost, validateMysqlTarget,
} from './provisioner.js';
import { MysqlRelay } from './relay.js';
import { startMariadbDemo } from './demo.js';
import { checkStageOf, parseAddress, formatAddr, listenTcp, type Preauth } from '../net.js';
import { shellQuote } from '../shell.js';
import { mysqlAdminRotation } from './rotate.js';

const MAX_CLIENT_PACKET = 64 * 1024 * 1024;
/** Before authentication nobody may make the gateway buffer much. */
const MAX_HANDSHAKE_PACKET = 16 * 1024;

function refusalSpec(code: RefusalCode): ErrSpec {
  switch (code) {
    case 'no_grant':
    case 'grant_expired':
    case 'outside_hours':
    case 'denied':
    case 'locked':
      return ER.DB_ACCESS_DENIED;
    case 'throttled':
      return ER.HOST_BLOCKED; // MySQL's own answer to an address with too many failed connections
    case 'busy':
      return ER.CON_COUNT; // as a MySQL server with too many connections answers
    default:
      return ER.ACCESS_DENIED;
  }
}


/** Gateway connection id -> who holds it and the server thread behind it (for KILL QUERY / Ctrl-C). */
const liveConnections = new Map<number, { sub: string; target: string; thread: number }>();

/** How long the greeting may wait, at listener start, to learn what the targets are. */
const PROBE_TIMEOUT_MS = 5_000;

/**
 * Log in to a MySQL target with its admin credential to learn its greeting (a complete login and
 * COM_QUIT: a bare TCP probe would count as a handshake error on the server).
 */
async function learnTarget(ctx: ProtocolContext, flavours: Flavours, log: Logger, name: string): Promise<void> {
  const target = ctx.config.target(name);
  if (!target) return;
  try {
    const admin = await adminCredential(ctx, target);
    const up = await loginUpstream({
      address: parseAddress(target.address, DEFAULT_PORT), user: admin.user, password: admin.password.reveal(), database: null,
      clientCaps: GATEWAY_CAPS, charset: 45, maxPacket: 16 * 1024 * 1024, allowLocalFiles: false,
      tls: upstreamTls(target), clock: ctx.clock, timeoutMs: PROBE_TIMEOUT_MS,
      onGreeting: (g) => flavours.learn(target.name, g),
    });
    up.conn.send(Buffer.from([COM.QUIT]), 0);
    up.conn.end();
  } catch (e) {
    if (!flavours.known(target.name)) log.info({ target: target.name, err: (e as Error).message }, 'could not learn the MySQL target\'s version (the greeting stays generic until it is reached)');
  }
}

/** Learn the MySQL targets not known yet (see Flavours.ensure). */
function learnTargets(ctx: ProtocolContext, flavours: Flavours, log: Logger): Promise<void> {
  return flavours.ensure(mysqlTargets(ctx).map((t) => t.name), (name) => learnTarget(ctx, flavours, log, name), ctx.clock.now());
}

function mysqlTargets(ctx: ProtocolContext): TargetConfig[] {
  return ctx.config.targets().filter((t) => t.protocol === 'mysql');
}

async function handleConnection(ctx: ProtocolContext, sock: Socket, preauth: Preauth, log: Logger, flavours: Flavours): Promise<void> {
  const clientAddr = formatAddr(sock.remoteAddress, sock.remotePort);
  const client = new PacketConn(sock, MAX_HANDSHAKE_PACKET);
  const refuse = (spec: ErrSpec, message: string) => {
    client.send(buildErr(spec, message), client.lastReadSeq + 1);
    client.end();
  };
  preauth.onTimeout((message) => refuse(ER.HANDSHAKE, message));

  let hello;
  let offer: GreetingOffer;
  try {
    await learnTargets(ctx, flavours, log);
    offer = flavours.offer(mysqlTargets(ctx).map((t) => t.name));
    hello = await serverHandshake(ctx, client, clientAddr, offer);
  } catch (e) {
    preauth.signedIn(); // ending now: the ERR below says why
    if (e instanceof Refusal) {
      log.info({ clientAddr, reason: e.message }, 'mysql login refused');
      return refuse(e.spec, e.message);
    }
    if (e instanceof ConnClosedError || client.sock.destroyed) return client.destroy();
    log.info({ clientAddr, err: (e as Error).message }, 'mysql handshake failed');
    return refuse(ER.HANDSHAKE, e instanceof ProtocolError ? `Tollgate: bad handshake: ${e.message}` : 'Tollgate: bad handshake');
  }
  preauth.signedIn();
  const { outcome, response } = hello;
  if (!outcome.ok) {
    log.info({ clientAddr, user: response.user.slice(0, 100), code: outcome.code }, 'mysql login refused');
    return refuse(refusalSpec(outcome.code), `Tollgate: access denied for '${response.user.slice(0, 100)}': ${outcome.reason.replace(/^Tollgate:\s*/, '')}`);
  }
  const auth = outcome.auth;
  let session: LiveSession;
  try {
    session = await ctx.sessions.open(auth, { protocol: 'mysql', clientAddr, socket: sock });
  } catch (e) {
    log.info({ clientAddr, err: (e as Error).message }, 'mysql session refused');
    return refuse(ER.DB_ACCESS_DENIED, tg((e as Error).message));
  }

  // Until the relay runs, "end now" closes the half-built session.
  let relay: MysqlRelay | null = null;
  let early: EndReason | null = null;
  session.onTerminate((reason) => {
    if (relay) return relay.terminate(reason);
    early = reason;
    refuse(ER.CONNECTION_KILLED, tg(reason.message));
  });
  const fail = async (code: EndReason['code'], message: string, toClient: string) => {
    refuse(ER.UNKNOWN, tg(toClient));
    await session.end({ code, message }).catch((err) => session.log.error({ err }, 'session end failed'));
  };
  client.onClose(() => {
    if (!relay && !early) early = { code: 'client_exit', message: 'client left during login' };
  });

  const target = auth.target;
  const role = auth.role;
  const user = sessionUserName(auth.principal.sub);
  const host = userHost(target);
  let password: string;
  try {
    password = await mintSessionUser(ctx, session, target, role, user, host);
  } catch (e) {
    session.log.error({ err: (e as Error).message }, 'could not create the session user');
    return fail('target_error', `could not create the session user: ${(e as Error).message}`, mintFailure(target.name, e as Error));
  }
  if (early || client.closed) {
    await session.end(early ?? { code: 'client_exit', message: 'client left during login' });
    return;
  }

  let up;
  try {
    const roleDb = typeof role['database'] === 'string' ? (role['database'] as string) : null;
    up = await loginUpstream({
      address: parseAddress(target.address, DEFAULT_PORT),
      user,
      password,
      database: response.database || roleDb,
      clientCaps: response.caps,
      clientExtCaps: response.extCaps & offer.extCaps,
      attrs: response.attrsRaw,
      onGreeting: (g) => flavours.learn(target.name, g),
      charset: response.charset,
      maxPacket: response.maxPacket || MAX_CLIENT_PACKET,
      allowLocalFiles: role['allowLoadDataLocal'] === true && !!(response.caps & CAP.LOCAL_FILES),
      tls: upstreamTls(target),
      clock: ctx.clock,
    });
  } catch (e) {
    const msg = (e as Error).message;
    session.log.warn({ err: msg }, 'upstream login failed');
    if (e instanceof UpstreamError && e.server) {
      // The server's own refusal (e.g. unknown database) is what the person needs to see.
      refuse({ code: e.server.code, state: e.server.state }, e.server.message);
      await session.end({ code: 'target_error', message: msg });
      return;
    }
    return fail('target_error', msg, `cannot log in to ${target.name}: ${msg}`);
  }
  if (early || client.closed) {
    up.conn.destroy();
    await session.end(early ?? { code: 'client_exit', message: 'client left during login' });
    return;
  }
  session.audit('mysql.login', { user, server: up.greeting.serverVersion, tls: client.encrypted, plugin: hello.plugin });
  client.send(up.ok, hello.seq);
  client.setMaxPacket(MAX_CLIENT_PACKET);
  const mine = { sub: auth.principal.sub, target: target.name, thread: up.greeting.connectionId };
  liveConnections.set(hello.connectionId, mine);
  relay = new MysqlRelay({
    killGatewayConnection: async (id, queryOnly) => {
      const other = liveConnections.get(id);
      if (!other || other.sub !== mine.sub || other.target !== mine.target) return false;
      session.audit('mysql.kill', { connection: id, queryOnly });
      await killThread(ctx, target, other.thread, queryOnly);
      return true;
    },
    onEnd: () => { liveConnections.delete(hello.connectionId); },
    session,
    client,
    upstream: up.conn,
    clientCaps: response.caps,
    extCaps: up.extCaps,
    allowLoadDataLocal: role['allowLoadDataLocal'] === true,
  });
  relay.start();
}

export const mysqlModule: ProtocolModule = {
  name: 'mysql',
  defaultPort: 3306,

  validateTarget(target: TargetConfig) {
    return validateMysqlTarget(target);
  },

  // Before the greeting: an ERR packet instead of it, as a MySQL server that will not take the connection sends.
  refuse(sock, code, message) {
    sock.end(frame(buildErr(refusalSpec(code), message, false), 0).bytes);
  },

  async listen(ctx: ProtocolContext, address: ListenerAddress): Promise<ProtocolListener> {
    const log = ctx.log.child({ protocol: 'mysql' });
    const flavours = new Flavours();
    void learnTargets(ctx, flavours, log); // ready before the first client, usually
    const listener = await listenTcp(address, log, 'mysql', (sock, preauth) => handleConnection(ctx, sock, preauth, log, flavours), { clock: ctx.clock });
    log.info({ host: address.host, port: listener.port }, 'mysql listener ready');
    return listener;
  },

  async checkTarget(ctx: ProtocolContext, target: TargetConfig) {
    try {
      const c = await adminConnect(ctx, target);
      try {
        const [rows] = await c.query('SELECT VERSION() AS v, CURRENT_USER() AS u');
        const r = (rows as { v: string; u: string }[])[0];
        return { ok: true, detail: `reachable, admin credential works (${r?.u} on ${r?.v})` };
      } finally {
        await c.end().catch(() => c.destroy());
      }
    } catch (e) {
      const err = e as { code?: string; errno?: number; message: string };
      // 1045 ER_ACCESS_DENIED_ERROR, 1044 ER_DBACCESS_DENIED_ERROR, 1698 ER_ACCESS_DENIED_NO_PASSWORD_ERROR
      const stage = err.errno === 1045 || err.errno === 1044 || err.errno === 1698 ? 'auth' : checkStageOf(e, 'auth');
      return { ok: false, stage, detail: `cannot log in as admin: ${err.code ?? ''} ${err.message}`.trim() };
    }
  },

  adminRotation: mysqlAdminRotation,

  leaseKinds: {
    [LEASE_KIND]: {
      holds: 'a MySQL/MariaDB user',
      async revoke(ctx: ProtocolContext, target: TargetConfig, lease: LeaseRecord) {
        const user = lease.data['user'];
        const host = lease.data['host'];
        if (typeof user !== 'string' || typeof host !== 'string') throw new Error(`lease ${lease.id}: no user/host to revoke`);
        const { killed } = await dropSessionUser(ctx, target, user, host);
        ctx.log.info({ lease: lease.id, user, killed }, 'mysql session user dropped');
        return { revoked: true, detail: `user '${user}'@'${host}' dropped (${killed} connection(s) killed)` };
      },
    },
  },

  secretVerifiers(_ctx: ProtocolContext, _target: TargetConfig, secret: Secret) {
    return { mysql_native_password: nativeVerifier(secret.reveal()) };
  },

  nativeClient: mysqlNativeClient,

  clientCommands(info: ClientCommandInfo) {
    const h = shellQuote(info.host);
    const u = shellQuote(info.username);
    const pw = shellQuote(info.secret);
    const ca = shellQuote(info.files.ca);
    const auth = info.target.options['clientAuth'];
    // The gateway switches the client to the target's method itself; cleartext needs the client's consent.
    const clear = auth === 'mysql_clear_password' ? ' --enable-cleartext-plugin' : '';
    const db = info.target.roles.map((r) => r['database']).find((d) => typeof d === 'string') as string | undefined;
    // The client checks the gateway's certificate (the CA from the API) and its host name.
    const fetch = `curl -fsS ${shellQuote(info.caUrl)} -o ${ca} &&`;
    const verify = `--ssl-ca=${ca} --ssl-verify-server-cert`;
    // sysbench 1.0 (--mysql-ssl=on) reads cacert.pem and a client key pair from the current directory;
    // the gateway asks for no client certificate, so a throwaway pair does.
    const sysbenchFiles = `mkdir -p tollgate-sysbench && cd tollgate-sysbench && curl -fsS ${shellQuote(info.caUrl)} -o cacert.pem && { [ -f client-key.pem ] || `
      + 'openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client-key.pem -out client-cert.pem -subj /CN=sysbench -days 30 2>/dev/null; } &&';
    const plain = info.target.options['allowPlain'] === true;
    return {
      mariadb: `${fetch} mariadb -h ${h} -P ${info.port} -u ${u} -p${pw} ${verify}${clear}`,
      mysql: `${fetch} mysql -h ${h} -P ${info.port} -u ${u} -p${pw} ${verify}${clear}`,
      'mysql (MySQL 8 client)': `${fetch} mysql -h ${h} -P ${info.port} -u ${u} -p${pw} --ssl-mode=VERIFY_IDENTITY --ssl-ca=${ca}${clear}`,
      'mysql2 (Node.js; add ssl: { ca } from the gateway CA)': `mysql://${encodeURIComponent(info.username)}:${encodeURIComponent(info.secret)}@${info.host}:${info.port}/${db ? encodeURIComponent(db) : ''}`,
      sysbench: `${plain ? '' : `${sysbenchFiles} `}sysbench oltp_read_only --mysql-host=${h} --mysql-port=${info.port} --mysql-user=${u} --mysql-password=${pw}${db ? ` --mysql-db=${shellQuote(db)}` : ''}${plain ? '' : ' --mysql-ssl=on'} --time=60 run   # needs a reusable secret`,
    };
  },

  demo(dir: string, log: Logger) {
    return startMariadbDemo(dir, log);
  },
};

/**
 * What the client is told when its session user cannot be made: the server is unreachable, it
 * refuses the admin credential, or it refused a statement (the user is then dropped by the lease's revoke).
 */
export function mintFailure(target: string, e: Error): string {
  const m = e.message;
  const why = 'could not create a database user for this session';
  if (/^1045 /.test(m)) return `${why}: the database server of ${target} refused the admin credential (access denied); ask an administrator to check the target's admin credential`;
  const net = /\b(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EPIPE)\b/.exec(m);
  if (net) return `${why}: the database server of ${target} cannot be reached (${net[1]})`;
  return `${why} on ${target}: ${m.slice(0, 300)}`;
}
