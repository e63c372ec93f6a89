/**
 * The client-facing half: start-up (SSLRequest -> TLS with the gateway's certificate,
 * GSSENCRequest -> 'N', CancelRequest), authentication of the connection secret (SCRAM-SHA-256
 * against stored verifiers, or cleartext over TLS), then session, lease, upstream and relay.
 * Every refusal is an ErrorResponse with a SQLSTATE.
 */
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { Secret } from '../../auth/secret.js';
import {
  SessionEndedError,
  type AuthOutcome, type Authorized, type LiveSession, type ProtocolContext, type ProtocolListener, type ListenerAddress, type RefusalCode,
} from '../types.js';
import {
  FrameSplitter, ProtocolViolation, readStartup, decodePassword, decodeSaslInitial, encodeAuthCleartext, encodeAuthOk,
  encodeAuthSasl, encodeAuthSaslContinue, encodeAuthSaslFinal, encodeBackendKey, encodeError, encodeNegotiateProtocolVersion, encodeReadyForQuery,
  PROTOCOL_3,
  type ErrorSpec, type Frame, type StartupPacket,
} from './framing.js';
import { CancelRegistry } from './cancel.js';
import { credentialsOf, grantsOf, optionsOf, optionsSchema, DEFAULT_PORT, type PgOptions } from './config.js';
import { PgRelay } from './inspector.js';
import { databaseRules, ensureEventTrigger, roleNote } from './enforce.js';
import { LEASE_KIND, adminClient, createSessionRole, sessionRoleName, upstreamTlsOf, type SessionRole } from './provisioner.js';
import { SCRAM, SCRAM_PLUS, ScramError, ScramServer, parseVerifier, SCRAM_ITERATIONS, tlsServerEndPoint } from './scram.js';
import { UpstreamError, dialUpstream, sendCancel } from './upstream.js';
import type { Client as PgClient } from 'pg';
import { parseAddress, lazySecureContext, listenTcp, type Preauth } from '../net.js';
import { SocketReader } from '../reader.js';

/** The per-target SCRAM salt: the same for every secret of a target, so one server-first fits all. */
export function scramSalt(ctx: ProtocolContext, targetName: string): Buffer {
  return ctx.crypto.deriveKey(`pg-scram:${targetName}`).subarray(0, 16);
}

const MAX_AUTH_MESSAGE = 10_000;

class Refusal extends Error {
  constructor(readonly spec: ErrorSpec) {
    super(spec.message);
    this.name = 'Refusal';
  }
}

const fatal = (code: string, message: string, hint?: string) => new Refusal({ severity: 'FATAL', code, message, hint });

function refusalSqlstate(code: RefusalCode): string {
  switch (code) {
    case 'bad_secret': case 'secret_used': case 'secret_expired': return '28P01';
    case 'throttled': case 'busy': return '53300'; // too_many_connections: what PostgreSQL says when it will not take this connection now
    default: return '28000';
  }
}

/** The client's bytes during start-up and authentication (the shared socket reader): start-up packets and typed frames on demand. */
class Incoming extends SocketReader {
  constructor() {
    super({ closed: () => new ProtocolViolation('the client closed the connection'), highWater: 4 * MAX_AUTH_MESSAGE });
  }

  /** The first byte without consuming it. */
  first(): Promise<number> {
    return this.until(() => (this.q.length ? this.q.peek(1)[0]! : null));
  }

  startup(): Promise<StartupPacket> {
    return this.until(() => {
      if (this.q.length < 4) return null;
      // Only the bytes the packet says it has (readStartup refuses a bad length from the first four).
      const r = readStartup(this.q.peek(Math.min(this.q.length, Math.max(4, this.q.peek(4).readUInt32BE(0)))));
      if (!r) return null;
      this.q.skip(r.used);
      return r.packet;
    });
  }

  frame(): Promise<Frame> {
    return this.until(() => {
      if (this.q.length < 5) return null;
      const head = this.q.peek(5);
      const len = head.readUInt32BE(1);
      if (len < 4 || len > MAX_AUTH_MESSAGE) new FrameSplitter(MAX_AUTH_MESSAGE).push(head); // throws the violation
      if (this.q.length < 1 + len) return null;
      const raw = Buffer.from(this.q.take(1 + len));
      return { type: String.fromCharCode(raw[0]!), body: raw.subarray(5), raw };
    });
  }

  /** The client closed its side (seen while attached). */
  get clientGone(): boolean { return this.peerClosed; }
}

export interface PgListenerDeps {
  ctx: ProtocolContext;
  cancels: CancelRegistry;
}

export async function listenPostgres(ctx: ProtocolContext, address: ListenerAddress, cancels = new CancelRegistry()): Promise<ProtocolListener> {
  let cbData: Buffer | null | undefined;
  const tlsContext = lazySecureContext(ctx);
  const channelBinding = () => (cbData === undefined ? (cbData = tlsServerEndPoint(ctx.config.tls.cert)) : cbData);
  return listenTcp(address, ctx.log, 'postgres', (sock, preauth) => handleConnection(ctx, sock, preauth, cancels, tlsContext, channelBinding), {
    clock: ctx.clock,
  });
}

/**
 * A refusal before the start-up (ProtocolModule.refuse): an ErrorResponse straight away, no TLS
 * handshake spent on it (recent libpq then prints only "server sent an error response during SSL
 * exchange"; plain clients show the text).
 */
export function refusePostgres(sock: Duplex, code: RefusalCode, message: string): void {
  sendFatal(sock, { severity: 'FATAL', code: refusalSqlstate(code), message });
}

async function handleConnection(
  ctx: ProtocolContext, raw: net.Socket, preauth: Preauth, cancels: CancelRegistry, tlsContext: () => tls.SecureContext, channelBinding: () => Buffer | null,
): Promise<void> {
  const clientAddr = raw.remoteAddress ?? 'unknown';
  const log = ctx.log.child({ protocol: 'postgres', client: clientAddr });
  let sock: net.Socket = raw;
  let secure = false;
  const input = new Incoming();
  input.attach(sock);
  // The login grace time: the ErrorResponse goes over TLS once the connection is encrypted.
  preauth.onTimeout((message) => sendFatal(sock, { severity: 'FATAL', code: '08006', message }));
  let session: LiveSession | null = null;
  try {
    // ---- start-up ----
    if ((await input.first()) === 0x16) {
      // Direct TLS (libpq sslnegotiation=direct, PostgreSQL 17+): a TLS ClientHello instead of an
      // SSLRequest. As PostgreSQL does, require the ALPN protocol "postgresql".
      input.detach();
      const t = new tls.TLSSocket(replay(raw, input.take()), { isServer: true, secureContext: tlsContext(), ALPNProtocols: ['postgresql'] });
      t.on('error', (e) => log.debug({ err: e.message }, 'postgres client TLS error'));
      await new Promise<void>((res, rej) => {
        t.once('secure', res);
        t.once('error', rej);
        t.once('close', () => rej(new ProtocolViolation('the client closed the connection')));
      });
      if (t.alpnProtocol !== 'postgresql') {
        t.destroy();
        throw new ProtocolViolation('direct TLS without the ALPN protocol "postgresql"');
      }
      sock = t;
      secure = true;
      input.attach(sock);
    }
    let params: Record<string, string> | null = null;
    let version = PROTOCOL_3;
    while (!params) {
      const p = await input.startup();
      if (p.kind === 'ssl') {
        if (secure) throw fatal('08P01', 'protocol violation: SSLRequest on an encrypted connection');
        if (input.buffered) throw fatal('08P01', 'protocol violation: unencrypted data after SSLRequest');
        input.detach();
        sock.write('S');
        const t = new tls.TLSSocket(sock, { isServer: true, secureContext: tlsContext() });
        t.on('error', (e) => log.debug({ err: e.message }, 'postgres client TLS error'));
        sock = t;
        secure = true;
        input.attach(sock);
      } else if (p.kind === 'gssenc') {
        sock.write('N');
      } else if (p.kind === 'cancel') {
        const entry = cancels.lookup(p.pid, p.key);
        if (entry) {
          entry.onCancel?.();
          await sendCancel(entry.upstream);
        } else {
          log.debug('postgres cancel request with an unknown key');
        }
        sock.end();
        return;
      } else {
        params = p.params;
        version = p.version;
      }
    }
    // As PostgreSQL 15 answers: a newer 3.x minor version or `_pq_.` protocol options get
    // NegotiateProtocolVersion (3.0, the options not understood), and the session goes on in 3.0.
    const pqOptions = Object.keys(params).filter((k) => k.startsWith('_pq_.'));
    if ((version & 0xffff) !== 0 || pqOptions.length) sock.write(encodeNegotiateProtocolVersion(PROTOCOL_3, pqOptions));

    const username = params.user ?? '';
    if (!username) throw fatal('28000', 'no user name given: connect with user=<target> or user=<target>:<role>');
    if (params.replication && !/^(false|off|no|0)$/i.test(params.replication)) {
      throw fatal('28000', 'replication connections are not supported through Tollgate');
    }
    const targetName = username.split(':')[0]!;
    const target = ctx.config.target(targetName);
    const pgTarget = target && target.protocol === 'postgres' ? target : undefined;
    const parsed = optionsSchema.safeParse(pgTarget?.options ?? {});
    const opts: PgOptions = parsed.success ? parsed.data : optionsSchema.parse({});
    if (!secure && !opts.allowPlain) {
      throw fatal('28000', 'this gateway requires an encrypted connection: connect with sslmode=require', 'add sslmode=require to the connection string');
    }

    // ---- authentication ----
    let outcome: AuthOutcome;
    if (opts.clientAuth === 'scram-sha-256') {
      outcome = await scramLogin(ctx, sock, input, username, targetName, clientAddr, secure ? channelBinding() : null);
    } else {
      sock.write(encodeAuthCleartext());
      const f = await input.frame();
      if (f.type !== 'p') throw fatal('08P01', `protocol violation: expected a password message, got '${f.type}'`);
      const secret = new Secret(decodePassword(f.body));
      outcome = await ctx.access.authenticate({ protocol: 'postgres', username, clientAddr, secret });
    }
    if (!outcome.ok) {
      log.info({ user: username, code: outcome.code }, 'postgres login refused');
      throw fatal(refusalSqlstate(outcome.code), outcome.reason);
    }
    const auth = outcome.auth;
    if (auth.target.protocol !== 'postgres') throw fatal('28000', `target "${auth.target.name}" is not a PostgreSQL target`);

    // ---- session, lease, upstream ----
    preauth.signedIn(); // from here on the lease and dial have their own time limits
    session = await ctx.sessions.open(auth, { protocol: 'postgres', clientAddr, socket: raw });
    // Ended while still being set up (a revoke, kill or lock during provisioning or the dial): the
    // client hears why and the connection closes now; once the relay runs, its handler does this.
    const phase = { relayed: false };
    const client = sock;
    session.onTerminate((r) => { if (!phase.relayed) sendFatal(client, { severity: 'FATAL', code: '57P01', message: r.message || 'terminating connection by Tollgate' }); });
    await startSession(ctx, session, auth, sock, input, params, cancels, phase);
  } catch (e) {
    preauth.signedIn(); // ending now: the ErrorResponse below says why, the grace timer has nothing to add
    const spec: ErrorSpec = e instanceof Refusal ? e.spec
      : e instanceof UpstreamError && e.fields ? { severity: 'FATAL', code: e.fields.code, message: `database server refused the session: ${e.fields.message}` }
      : e instanceof UpstreamError ? { severity: 'FATAL', code: '08006', message: e.message }
      : e instanceof ProtocolViolation || e instanceof ScramError ? { severity: 'FATAL', code: '08P01', message: `protocol violation: ${(e as Error).message}` }
      : { severity: 'FATAL', code: 'XX000', message: `gateway error: ${(e as Error).message}` };
    if (!(e instanceof Refusal) && !(e instanceof ProtocolViolation && /closed the connection/.test(e.message))) {
      log.warn({ err: (e as Error).message }, 'postgres login failed');
    }
    sendFatal(sock, spec);
    if (session && !session.ended) await session.end({ code: e instanceof UpstreamError ? 'target_error' : 'error', message: spec.message });
  }
}

/** A duplex over the raw socket that first replays bytes already read from it (for a TLS layer on top). */
function replay(raw: net.Socket, pre: Buffer): Duplex {
  const d = new Duplex({
    read() { raw.resume(); },
    write(chunk: Buffer, _enc, cb) { raw.write(chunk, cb); },
    final(cb) { raw.end(); cb(); },
    destroy(err, cb) { raw.destroy(); cb(err); },
  });
  if (pre.length) d.push(pre);
  raw.on('data', (c: Buffer) => { if (!d.push(c)) raw.pause(); });
  raw.on('end', () => d.push(null));
  raw.on('close', () => d.destroy());
  raw.on('error', () => d.destroy());
  raw.resume();
  return d;
}

function sendFatal(sock: Duplex, spec: ErrorSpec): void {
  if (sock.destroyed || sock.writableEnded) return;
  sock.end(encodeError(spec));
  setTimeout(() => sock.destroy(), 1000).unref();
}

/** SCRAM-SHA-256 against the stored verifiers of the pending connection secrets. */
async function scramLogin(
  ctx: ProtocolContext, sock: net.Socket, input: Incoming, username: string, targetName: string, clientAddr: string, cb: Buffer | null,
): Promise<AuthOutcome> {
  // Over TLS, SCRAM-SHA-256-PLUS binds the proof to the gateway's certificate (libpq prefers it).
  const offered = cb ? [SCRAM_PLUS, SCRAM] : [SCRAM];
  sock.write(encodeAuthSasl(offered));
  const f1 = await input.frame();
  if (f1.type !== 'p') throw fatal('08P01', `protocol violation: expected SASLInitialResponse, got '${f1.type}'`);
  const init = decodeSaslInitial(f1.body);
  if (!offered.includes(init.mechanism)) throw fatal('28000', `SASL mechanism ${init.mechanism} is not supported; the gateway offers ${offered.join(', ')}`);
  const server = new ScramServer(scramSalt(ctx, targetName), SCRAM_ITERATIONS, cb);
  sock.write(encodeAuthSaslContinue(server.clientFirst(init.data.toString('utf8'), init.mechanism)));
  const f2 = await input.frame();
  if (f2.type !== 'p') throw fatal('08P01', `protocol violation: expected SASLResponse, got '${f2.type}'`);
  server.clientFinal(f2.body.toString('utf8'));
  const candidates = await ctx.access.pendingSecrets(username, 'postgres', clientAddr);
  let matched: { id: string; verifier: NonNullable<ReturnType<typeof parseVerifier>> } | null = null;
  for (const c of candidates) {
    const v = parseVerifier(c.verifiers['scram-sha-256'] ?? '');
    if (v && server.matches(v)) { matched = { id: c.id, verifier: v }; break; }
  }
  if (!matched) {
    // Let the gateway audit the refusal the same way as a wrong typed secret.
    const o = await ctx.access.authenticate({ protocol: 'postgres', username, clientAddr, secret: new Secret('') });
    return o.ok ? { ok: false, code: 'bad_secret', reason: 'wrong connection secret' } : {
      ok: false,
      code: o.code === 'bad_secret' || o.code === 'secret_used' || o.code === 'secret_expired' ? 'bad_secret' : o.code,
      reason: o.code === 'bad_secret' || o.code === 'secret_used' || o.code === 'secret_expired'
        ? `password authentication failed for user "${username}": the connection secret is wrong, already used or expired`
        : o.reason,
    };
  }
  const outcome = await ctx.access.authenticate({ protocol: 'postgres', username, clientAddr, provenSecretId: matched.id });
  if (outcome.ok) sock.write(encodeAuthSaslFinal(server.serverFinal(matched.verifier)));
  return outcome;
}

/** The error for a database server that cannot be reached at all (as opposed to one that answers with an error). */
function unreachable(target: string, err: Error & { code?: string }): UpstreamError | null {
  return err.code && /^E[A-Z]+$/.test(err.code) || /timeout/i.test(err.message)
    ? new UpstreamError(null, `Tollgate cannot reach the database server of ${target} (${err.code ?? err.message})`) : null;
}

async function startSession(
  ctx: ProtocolContext, session: LiveSession, auth: Authorized, sock: net.Socket, input: Incoming,
  params: Record<string, string>, cancels: CancelRegistry, phase: { relayed: boolean },
): Promise<void> {
  const target = auth.target;
  const cred = credentialsOf(target);
  const opts = optionsOf(target);
  const grants = grantsOf(auth.role);
  const username = params.user!;
  // libpq defaults the database to the user name, which here is the target name.
  const database = !params.database || params.database === username || params.database === target.name ? cred.database : params.database;
  const roleName = sessionRoleName(auth.principal.sub);
  // VALID UNTIL is judged by the database server's own clock: translate the grant's remaining time.
  const remaining = Math.max(0, auth.grant.expiresAt - ctx.clock.now());
  const validUntil = new Date(Date.now() + remaining + 60_000);
  // DDL kinds the rules deny are refused by the server too (event trigger, before the role exists).
  const inDatabase = opts.enforceInDatabase === 'off' ? [] : databaseRules(session.commandRules);
  let enforced = false;
  if (inDatabase.length) {
    try {
      const admin = await adminClient(ctx, target, database);
      try { await ensureEventTrigger(admin); } finally { await admin.end().catch(() => {}); }
      enforced = true;
    } catch (e) {
      const reason = (e as Error).message;
      session.audit('postgres.enforcement', { database, inDatabase: false, kinds: inDatabase.map((r) => r.k), reason });
      session.log.warn({ database, err: reason }, 'postgres: could not install the event trigger; statement rules are checked by the gateway only');
      if (opts.enforceInDatabase === 'required') {
        throw fatal('42501', `Tollgate could not enforce the statement rules in database ${database} (${reason}); the target requires it`);
      }
    }
  }
  // The admin connection is open before the lease is stored: a server that is down or refuses the
  // admin credential leaves no lease (nothing to retry), only the client's error.
  let admin: PgClient;
  try {
    admin = await adminClient(ctx, target);
  } catch (e) {
    const err = e as Error & { code?: string };
    const down = unreachable(target.name, err);
    if (down) throw down;
    session.log.error({ err: err.message, code: err.code }, 'postgres: the target refused the admin connection');
    // The server's own reason (a wrong password, no pg_hba.conf entry...): it names no secret.
    throw fatal(err.code && /^[0-9A-Z]{5}$/.test(err.code) ? err.code : '08004', `Tollgate could not create the session role on ${target.name}: the database server refused the admin connection (${err.code ?? 'refused'}: ${err.message}); ask an administrator to check the target's admin credential`);
  }
  let role: SessionRole;
  try {
    role = await session.lease<SessionRole>(LEASE_KIND, { role: roleName, database }, async () => ({
      credential: await createSessionRole(ctx, target, roleName, grants, validUntil, enforced ? roleNote(inDatabase) : undefined, admin),
    }));
  } catch (e) {
    // Ended (kill, lock, client gone) while the role was being created: the proxy revoked it once made.
    if (e instanceof SessionEndedError) throw fatal('57P01', 'the session was ended while it was starting');
    const err = e as Error & { code?: string };
    const down = unreachable(target.name, err);
    if (down) throw down;
    throw fatal(err.code && /^[0-9A-Z]{5}$/.test(err.code) ? err.code : 'XX000', `Tollgate could not create the session role on ${target.name}: ${err.message}`);
  } finally {
    await admin.end().catch(() => {});
  }
  const { host, port } = parseAddress(target.address, DEFAULT_PORT);
  const forwarded: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) {
    if (k === 'user' || k === 'database' || k === 'replication' || k.startsWith('_pq_.')) continue;
    forwarded[k] = v;
  }
  const up = await dialUpstream({
    host, port, user: role.user, password: role.password, database, params: forwarded,
    timeoutMs: opts.connectTimeout * 1000, clock: ctx.clock, tls: upstreamTlsOf(ctx, target),
  });
  if (session.ended || sock.destroyed || sock.writableEnded || input.clientGone) {
    up.socket.destroy();
    throw fatal('57P01', session.ended ? 'the session was ended while it was starting' : 'the client went away while the session was starting');
  }
  const ck = cancels.register({
    upstream: { host, port, pid: up.backend.pid, key: up.backend.key },
    onCancel: () => session.audit('postgres.cancel', {}),
  });
  input.detach();
  const rest = input.take();
  sock.write(Buffer.concat([encodeAuthOk(), ...up.parameterFrames, ...up.noticeFrames, encodeBackendKey(ck.pid, ck.key), encodeReadyForQuery(up.status)]));
  session.audit('postgres.connect', { database, role: roleName, grants });
  if (enforced) session.audit('postgres.enforcement', { database, inDatabase: true, kinds: inDatabase.map((r) => r.k) });
  const copyProgram = session.commandRules.some((r) => (r.action === 'deny' || r.action === 'kill') && r.kinds?.some((k) => /^\s*COPY(\s+PROGRAM)?\s*$/i.test(k)));
  if (copyProgram && role.serverPrograms) {
    // COPY … PROGRAM inside a function or DO block is stopped only by the missing privilege.
    session.audit('postgres.enforcement', { database, warning: 'the role\'s grants include pg_execute_server_program: COPY … PROGRAM run through a function or DO block is not refused by the server' });
  }
  session.log.info({ database, role: roleName }, 'postgres session started');
  phase.relayed = true;
  new PgRelay({ client: sock, upstream: up.socket, session, clientRest: rest, upstreamRest: up.rest, status: up.status, onClose: ck.release }).start();
}
