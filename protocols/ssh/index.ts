/**
 * SSH brokering: native ssh/scp/sftp through Tollgate with a credential minted per session
 * (ephemeral account, certificate, checked-out password), recorded and enforced.
 */
import type { ProtocolModule } from '../types.js';
import { sshNativeClient } from './native.js';
import { validateSshTarget, modeOf } from './config.js';
import { listenSsh } from './frontend.js';
import { dialAdmin, exec } from './admin.js';
import { provisionerByKind } from './provisioners/index.js';
import { rotate } from './provisioners/checkout.js';
import { ensureCaTrusted } from './provisioners/certificate.js';
import { sshDemo } from './demo.js';

function shellQuote(v: string): string {
  return /^[A-Za-z0-9_.:@%+=,/-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`;
}

export const sshModule: ProtocolModule = {
  name: 'ssh',
  defaultPort: 2222,

  validateTarget: validateSshTarget,

  listen: (ctx, address) => listenSsh(ctx, address),

  async checkTarget(ctx, target) {
    try {
      const c = await dialAdmin(ctx, target);
      try {
        const r = await exec(c, 'id -un', undefined, 10_000);
        if (r.code !== 0) return { ok: false, detail: `reachable, but the admin account cannot run commands (exit ${r.code})` };
        if (modeOf(target) === 'certificate') await ensureCaTrusted(ctx, target);
        return { ok: true, detail: `reachable, admin credential works (logged in as ${r.stdout.trim()})` };
      } finally {
        c.end();
      }
    } catch (e) {
      return { ok: false, detail: (e as Error).message };
    }
  },

  async revokeLease(ctx, target, lease) {
    const p = provisionerByKind(lease.kind);
    if (!p) throw new Error(`ssh: unknown lease kind ${lease.kind}`);
    await p.revoke(ctx, target, lease);
  },

  async onGrantEnd(ctx, target) {
    // A checked-out password must not outlive the grant even if no session revoked it.
    if (modeOf(target) === 'checkout' && typeof target.credentials.account === 'string') {
      await rotate(ctx, target, target.credentials.account);
    }
  },

  nativeClient: sshNativeClient,

  clientCommands(info) {
    const host = info.host;
    const port = String(info.port);
    const user = info.username;
    const pass = `sshpass -p ${shellQuote(info.secret)}`;
    const opts = '-o StrictHostKeyChecking=accept-new';
    return {
      ssh: `ssh -p ${port} ${opts} ${user}@${host}`,
      'ssh (sshpass)': `${pass} ssh -p ${port} ${opts} ${user}@${host}`,
      scp: `scp -P ${port} ${opts} FILE ${user}@${host}:`,
      'scp (sshpass)': `${pass} scp -P ${port} ${opts} FILE ${user}@${host}:`,
      sftp: `sftp -P ${port} ${opts} ${user}@${host}`,
      'sftp (sshpass)': `${pass} sftp -P ${port} ${opts} ${user}@${host}`,
    };
  },

  demo: (dir, log) => sshDemo(dir, log),
};

export default sshModule;
