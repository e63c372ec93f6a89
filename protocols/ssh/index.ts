/**
 * SSH brokering: native ssh/scp/sftp through Tollgate with a credential minted per session
 * (ephemeral account, certificate, checked-out password), recorded and enforced.
 */
import type { ListenerAddress, ProtocolContext, ProtocolModule } from '../types.js';
import { sshNativeClient, knownHostsOptions } from './native.js';
import { validateSshTarget, modeOf, checkoutAccountOf } from './config.js';
import { listenSsh } from './frontend.js';
import { connectAdmin, dialAdmin, exec } from './admin.js';
import { expectedHostKey, HostKeyChanged, HostKeyCheck, readPin, replacePin } from './hostkeys.js';
import { checkStageOf } from '../net.js';
import { KNOWN_HOSTS_PATH, knownHosts } from './known-hosts.js';
import { provisioners } from './provisioners/index.js';
import { tollgate } from './wire.js';
import { revealPassword, rotate } from './provisioners/checkout.js';
import { ensureCaTrusted } from './provisioners/certificate.js';
import { sshDemo } from './demo.js';
import { sshAdminRotation } from './rotate.js';
import { shellQuote } from '../shell.js';


/** Where each gateway's SSH listener listens (for its known_hosts answer). */
const listening = new WeakMap<ProtocolContext, ListenerAddress>();

export const sshModule: ProtocolModule = {
  name: 'ssh',
  defaultPort: 2222,

  validateTarget: validateSshTarget,

  // One lease kind per credentials.mode, each with its provisioner's revoke.
  leaseKinds: Object.fromEntries(provisioners.map((p) => [p.kind, p])),

  // Over the caps: a line before the version string (RFC 4253 allows them; ssh -v shows it), then close - as sshd's MaxStartups.
  refuse: (sock, _code, message) => { sock.end(`${tollgate(message)}\r\n`); },

  async listen(ctx, address) {
    const l = await listenSsh(ctx, address);
    listening.set(ctx, { host: l.host, port: l.port });
    return l;
  },

  /** GET /api/v1/ssh/known_hosts: the gateway's own host key, for `ssh -o StrictHostKeyChecking=yes`. */
  mountHttp(ctx, front) {
    front.raw((res, req) => {
      const method = req.getMethod().toLowerCase();
      if (req.getUrl() !== KNOWN_HOSTS_PATH || (method !== 'get' && method !== 'head')) return false;
      const addr = listening.get(ctx);
      res.cork(() => {
        if (!addr) {
          res.writeStatus('404 Not Found').writeHeader('content-type', 'application/json; charset=utf-8')
            .end(JSON.stringify({ error: 'not_found', message: 'this gateway has no SSH listener' }));
          return;
        }
        res.writeStatus('200 OK').writeHeader('content-type', 'text/plain; charset=utf-8').writeHeader('x-content-type-options', 'nosniff')
          .end(method === 'head' ? '' : knownHosts(ctx, ctx.config.publicHost, addr.port));
      });
      return true;
    });
  },

  async checkTarget(ctx, target) {
    try {
      const c = await dialAdmin(ctx, target);
      try {
        const r = await exec(c, 'id -un', undefined, 10_000);
        if (r.code !== 0) return { ok: false, stage: 'provision', detail: `reachable, but the admin account cannot run commands (exit ${r.code})` };
        if (modeOf(target) === 'certificate') {
          try { await ensureCaTrusted(ctx, target, { fresh: true }); } catch (e) { return { ok: false, stage: 'provision', detail: (e as Error).message }; }
        }
        const key = await expectedHostKey(ctx, target);
        const hk = key ? `; host key ${key.fingerprint} (${key.source === 'config' ? 'options.hostKeyFingerprint' : 'pinned'})` : '';
        return { ok: true, detail: `reachable, admin credential works (logged in as ${r.stdout.trim()})${hk}` };
      } finally {
        c.end();
      }
    } catch (e) {
      const stage = e instanceof HostKeyChanged ? 'identity' : /admin credential was refused/.test((e as Error).message) ? 'auth' : checkStageOf(e, 'protocol');
      return { ok: false, stage, detail: (e as Error).message };
    }
  },

  async repinTarget(ctx, target, opts) {
    if (typeof target.options.hostKeyFingerprint === 'string') {
      return { ok: false, detail: `${target.name} has options.hostKeyFingerprint in the configuration: change it there`, previous: target.options.hostKeyFingerprint, pinned: null };
    }
    const previous = (await readPin(ctx, target))?.fingerprint ?? null;
    // Accept whatever key comes, but pin it only after the admin credential worked (and it is the one asked for).
    const check = new HostKeyCheck(ctx, target, null, true, 'repin');
    let c;
    try {
      c = await connectAdmin(ctx, target, check);
    } catch (e) {
      return { ok: false, detail: (e as Error).message, previous, pinned: null };
    }
    c.end();
    const offered = check.offered!;
    if (opts.fingerprint && opts.fingerprint !== offered.fingerprint) {
      return { ok: false, detail: `${target.name} offers the host key ${offered.fingerprint}, not ${opts.fingerprint}: nothing changed`, previous, pinned: null };
    }
    await replacePin(ctx, target, offered);
    return { ok: true, detail: `${target.name}: host key ${offered.fingerprint} pinned${previous && previous !== offered.fingerprint ? ` (was ${previous})` : ''}`, previous, pinned: offered.fingerprint };
  },


  async onGrantEnd(ctx, target) {
    // A checked-out password must not outlive the grant even if no session revoked it.
    if (modeOf(target) === 'checkout' && typeof target.credentials.account === 'string') {
      await rotate(ctx, target, target.credentials.account);
    }
  },

  checkoutAccount: checkoutAccountOf,

  // The admin password or key kept in the vault, rotated on schedule (./rotate.ts).
  adminRotation: sshAdminRotation,

  async revealCheckout(ctx, target) {
    if (modeOf(target) !== 'checkout' || typeof target.credentials.account !== 'string') throw new Error(`${target.name} is not a checkout target`);
    return revealPassword(ctx, target, target.credentials.account);
  },

  nativeClient: sshNativeClient,

  clientCommands(info) {
    const host = info.host;
    const port = String(info.port);
    const user = info.username;
    const pass = `sshpass -p ${shellQuote(info.secret)}`;
    // The gateway's host key from the API, checked strictly: no "accept-new" for a MITM to answer first.
    const fetch = `curl -fsS ${shellQuote(`${info.gatewayUrl}${KNOWN_HOSTS_PATH}`)} -o ${shellQuote(info.files.knownHosts)} &&`;
    const opts = knownHostsOptions(shellQuote(info.files.knownHosts)).join(' ');
    return {
      ssh: `${fetch} ssh -p ${port} ${opts} ${user}@${host}`,
      'ssh (sshpass)': `${fetch} ${pass} ssh -p ${port} ${opts} ${user}@${host}`,
      scp: `${fetch} scp -P ${port} ${opts} FILE ${user}@${host}:`,
      'scp (sshpass)': `${fetch} ${pass} scp -P ${port} ${opts} FILE ${user}@${host}:`,
      sftp: `${fetch} sftp -P ${port} ${opts} ${user}@${host}`,
      'sftp (sshpass)': `${fetch} ${pass} sftp -P ${port} ${opts} ${user}@${host}`,
    };
  },

  demo: (dir, log) => sshDemo(dir, log),
};

export default sshModule;
