/**
 * The SSH front door: an ssh2 server that signs people in with a connection secret (password), a
 * registered public key, or a browser approval (keyboard-interactive), and hands each signed-in
 * connection to an SshBroker. Nothing is minted before authentication succeeds.
 */
import { existsSync, mkdirSync, readFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { Secret } from '../../auth/secret.js';
import type { Socket } from 'node:net';
import type { ProtocolContext, ListenerAddress, ProtocolListener, AuthOutcome, Authorized } from '../types.js';
import { formatAddr, listenTcp, type Preauth } from '../net.js';
import { SshBroker } from './broker.js';
import { fingerprintOf, generateEd25519 } from './cert.js';
import { sendBanner, disconnectWith, DISCONNECT, tollgate } from './wire.js';
import { writeFileDurable } from '../../auth/durable.js';

const { Server, utils } = ssh2;

const MAX_FAILURES = 3;
const APPROVAL_TIMEOUT_MS = 5 * 60_000;

export function loadOrCreateHostKey(dataDir: string): string {
  const dir = join(dataDir, 'ssh');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'host_ed25519_key');
  if (!existsSync(file)) {
    const kp = generateEd25519('tollgate-gateway');
    // Synced before use: clients pin the host key (auth/durable.ts).
    writeFileDurable(file, kp.private, { mode: 0o600, exclusive: true });
    writeFileDurable(`${file}.pub`, kp.public + '\n', { mode: 0o644 });
  }
  chmodSync(file, 0o600);
  return readFileSync(file, 'utf8');
}

type AuthCtx = ssh2.AuthContext & {
  password?: string;
  key?: { algo: string; data: Buffer };
  signature?: Buffer;
  blob?: Buffer;
  hashAlgo?: string;
  prompt?: (prompts: ssh2.Prompt[], title: string, instructions: string, cb: (answers: string[]) => void) => void;
};

export async function listenSsh(ctx: ProtocolContext, address: ListenerAddress): Promise<ProtocolListener> {
  const hostKey = loadOrCreateHostKey(ctx.config.dataDir);
  const brokers = new Set<SshBroker>();
  const conns = new Set<ssh2.Connection>();
  /** Each accepted socket's pre-authentication state, found again from the ssh2 connection built on it. */
  const preauths = new WeakMap<Socket, Preauth>();
  // ssh2 parses; the shared front door (listenTcp) accepts, counts and times out unauthenticated sockets.
  const server = new Server({ hostKeys: [hostKey], ident: 'Tollgate' }, (client, info) => {
    conns.add(client);
    // Keystrokes and echoes are tiny packets: without this, Nagle holds each one back until the
    // previous segment is acknowledged (delayed ACK), adding milliseconds to every round trip.
    (client as unknown as { setNoDelay(on: boolean): void }).setNoDelay(true); // ssh2 has it; its types omit it
    const clientAddr = formatAddr(info.ip, info.port);
    const log = ctx.log.child({ protocol: 'ssh', client: clientAddr });
    const sock = (client as unknown as { _sock?: Socket })._sock;
    const preauth = sock && preauths.get(sock);
    let authorized: Authorized | null = null;
    /** A registered key that proved the identity, for a target that wants an authenticator code too (mfaAtConnect). */
    let keyAwaitingCode: string | null = null;
    let failures = 0;
    let refused = false;
    let authStarted = false;
    // The login grace time: a DISCONNECT with the reason once the client is in user authentication
    // (the channel is encrypted by then), else the socket is just closed.
    preauth?.onTimeout((message) => {
      if (authStarted) disconnectWith(client, DISCONNECT.BY_APPLICATION, message);
      else sock?.destroy();
    });
    client.on('error', (e: Error) => { log.debug({ err: e.message }, 'ssh: client connection error'); });
    client.on('close', () => conns.delete(client));

    const refuse = (actx: AuthCtx, outcome: Extract<AuthOutcome, { ok: false }>) => {
      const text = tollgate(outcome.reason);
      log.info({ code: outcome.code, username: actx.username, method: actx.method }, 'ssh: sign-in refused');
      sendBanner(client, text);
      failures++;
      if (outcome.code === 'bad_secret' && failures < MAX_FAILURES) { actx.reject(); return; }
      // A wrong authenticator code after the key: the client may type another (keyboard-interactive only).
      if (outcome.code === 'mfa_required' && keyAwaitingCode && failures < MAX_FAILURES) { actx.reject(['keyboard-interactive'], true); return; }
      refused = true;
      actx.reject([]);
      disconnectWith(client, outcome.code === 'unknown_target' ? DISCONNECT.ILLEGAL_USER_NAME : DISCONNECT.NO_MORE_AUTH_METHODS_AVAILABLE, text);
    };
    const finish = (actx: AuthCtx, outcome: AuthOutcome) => {
      if (outcome.ok) { authorized = outcome.auth; preauth?.signedIn(); actx.accept(); } else refuse(actx, outcome);
    };

    client.on('authentication', (ctxRaw: ssh2.AuthContext) => {
      const actx = ctxRaw as AuthCtx;
      authStarted = true;
      if (refused) { actx.reject([]); return; }
      const base = { protocol: 'ssh', username: actx.username, clientAddr };
      const guard = (p: Promise<void>) => p.catch((e: Error) => {
        log.error({ err: e.message }, 'ssh: authentication failed internally');
        try { sendBanner(client, 'Tollgate: sign-in failed inside the gateway; try again'); actx.reject(); } catch { /* gone */ }
      });
      switch (actx.method) {
        case 'password':
          void guard(ctx.access.authenticate({ ...base, secret: new Secret(actx.password ?? '') }).then((o) => finish(actx, o)));
          return;
        case 'publickey': {
          const key = actx.key!;
          if (!actx.signature) { actx.accept(); return; } // "would this key do?" - the signed attempt decides
          const parsed = utils.parseKey(key.data);
          if (parsed instanceof Error || Array.isArray(parsed) || parsed.verify(actx.blob!, actx.signature, actx.hashAlgo) !== true) {
            actx.reject();
            return;
          }
          const fingerprint = fingerprintOf(key.data);
          void guard(ctx.access.authenticate({ ...base, publicKeyFingerprint: fingerprint }).then((o) => {
            // An unregistered key is not a refusal: the client goes on with its other keys and methods.
            if (!o.ok && o.code === 'bad_key') { actx.reject(); return; }
            // The key proved who it is, and the target wants an authenticator code as well: ask for it next.
            if (!o.ok && o.code === 'mfa_required') {
              keyAwaitingCode = fingerprint;
              actx.reject(['keyboard-interactive'], true);
              return;
            }
            finish(actx, o);
          }));
          return;
        }
        case 'keyboard-interactive': {
          if (keyAwaitingCode) {
            const fingerprint = keyAwaitingCode;
            const target = actx.username.split(':')[0] ?? actx.username;
            actx.prompt!([{ prompt: 'Authenticator code: ', echo: true }], 'Tollgate', `${target} needs MFA to connect: type the code your authenticator app shows.`, (answers) => {
              void guard(ctx.access.authenticate({ ...base, publicKeyFingerprint: fingerprint, mfaCode: new Secret((answers[0] ?? '').trim()) }).then((o) => finish(actx, o)));
            });
            return;
          }
          let approval: ReturnType<ProtocolContext['access']['beginBrowserApproval']>;
          try {
            approval = ctx.access.beginBrowserApproval(base);
          } catch (e) {
            // Too many sign-ins wait for approval: say so, and let the client go on with a password.
            sendBanner(client, tollgate((e as Error).message));
            actx.reject(['publickey', 'password']);
            return;
          }
          // A person needs time to open the page and sign in: the grace time stretches while the approval waits.
          preauth?.extend(APPROVAL_TIMEOUT_MS);
          const instructions = `Approve this sign-in in your browser:\n  ${approval.url}\nthen press Enter here - or type a connection secret.`;
          actx.prompt!([{ prompt: 'Password (connection secret, or Enter once approved): ', echo: false }], 'Tollgate', instructions, (answers) => {
            const typed = answers[0] ?? '';
            if (typed) {
              approval.cancel();
              void guard(ctx.access.authenticate({ ...base, secret: new Secret(typed) }).then((o) => finish(actx, o)));
            } else {
              preauth?.extend(APPROVAL_TIMEOUT_MS + 5000);
              void guard(approval.wait(APPROVAL_TIMEOUT_MS).then((o) => finish(actx, o)));
            }
          });
          client.once('close', () => approval.cancel());
          return;
        }
        default:
          actx.reject(['publickey', 'password', 'keyboard-interactive']);
      }
    });

    client.on('ready', () => {
      if (!authorized) { client.end(); return; }
      const broker = new SshBroker(ctx, client, authorized, clientAddr);
      brokers.add(broker);
      client.on('close', () => { void broker.finish({ code: 'client_exit', message: 'the client disconnected' }).finally(() => brokers.delete(broker)); });
      void broker.start().catch((e: Error) => log.error({ err: e.message }, 'ssh: session start failed'));
    });
  });
  server.on('error', (e: Error) => ctx.log.error({ err: e.message }, 'ssh: listener error'));
  const front = await listenTcp(address, ctx.log, 'ssh', async (sock, preauth) => {
    preauths.set(sock, preauth);
    server.injectSocket(sock);
  }, { clock: ctx.clock });
  ctx.log.info({ host: address.host, port: front.port }, 'ssh: listening');
  return {
    host: address.host,
    port: front.port,
    close: async () => {
      await Promise.allSettled([...brokers].map((b) => b.close()));
      for (const c of conns) { try { c.end(); } catch { /* ignore */ } }
      await front.close();
    },
  };
}
