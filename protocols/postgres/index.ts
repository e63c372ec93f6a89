/** PostgreSQL brokering: psql, pgbench, node-postgres... through Tollgate with a per-session role. */
import type { ClientCommandInfo, ProtocolModule } from '../types.js';
import { postgresNativeClient } from './native.js';
import { CancelRegistry } from './cancel.js';
import { validateTarget, credentialsOf } from './config.js';
import { demo } from './demo.js';
import { listenPostgres, refusePostgres, scramSalt } from './frontend.js';
import { adminClient, dropSessionRole, LEASE_KIND } from './provisioner.js';
import { makeVerifier, SCRAM_ITERATIONS } from './scram.js';
import { shellQuote as sh } from '../shell.js';
import { checkStageOf } from '../net.js';
import { postgresAdminRotation } from './rotate.js';

const cancels = new CancelRegistry();

/** Quote a libpq connection-string value. */
function conninfoValue(v: string): string {
  return /^[A-Za-z0-9_.:\/@+-]+$/.test(v) ? v : `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}


export const postgresModule: ProtocolModule = {
  name: 'postgres',
  defaultPort: 5432,
  validateTarget,
  listen: (ctx, address) => listenPostgres(ctx, address, cancels),
  refuse: refusePostgres,

  async checkTarget(ctx, target) {
    try {
      const c = await adminClient(ctx, target);
      try {
        const r = await c.query('SELECT current_setting(\'server_version\') AS v, current_user AS u');
        return { ok: true, detail: `reachable, credentials work (PostgreSQL ${r.rows[0].v}, as ${r.rows[0].u})` };
      } finally {
        await c.end().catch(() => {});
      }
    } catch (e) {
      // 28xxx: invalid authorization (wrong password, no such role, pg_hba refusal).
      const code = (e as { code?: unknown }).code;
      const stage = typeof code === 'string' && code.startsWith('28') ? 'auth' : checkStageOf(e, 'auth');
      return { ok: false, stage, detail: `cannot log in with the admin credential: ${(e as Error).message}` };
    }
  },

  adminRotation: postgresAdminRotation,

  leaseKinds: {
    [LEASE_KIND]: {
      holds: 'a PostgreSQL login role',
      async revoke(ctx, target, lease) {
        const role = lease.data.role;
        // The role name is stored before the role is created: without it nobody knows what to drop.
        if (typeof role !== 'string' || !role) throw new Error(`lease ${lease.id}: no role name to drop`);
        await dropSessionRole(ctx, target, role, credentialsOf(target));
        return { revoked: true, detail: `role ${role} is gone` };
      },
    },
  },

  nativeClient: postgresNativeClient,

  clientCommands(info: ClientCommandInfo) {
    let db = 'postgres';
    try { db = credentialsOf(info.target).database; } catch { /* keep default */ }
    const base = `host=${conninfoValue(info.host)} port=${info.port} user=${conninfoValue(info.username)} dbname=${conninfoValue(db)}`;
    // The client checks the gateway's certificate against its CA and host name (libpq's verify-full).
    const ca = info.files.ca;
    const verify = `sslmode=verify-full sslrootcert=${conninfoValue(ca)}`;
    const fetch = `curl -fsS ${sh(info.caUrl)} -o ${sh(ca)} &&`;
    return {
      psql: `${fetch} psql ${sh(`${base} password=${conninfoValue(info.secret)} ${verify}`)}`,
      'psql (PGPASSWORD)': `${fetch} PGPASSWORD=${sh(info.secret)} psql ${sh(`${base} ${verify}`)}`,
      pgbench: `${fetch} PGPASSWORD=${sh(info.secret)} PGSSLMODE=verify-full PGSSLROOTCERT=${sh(ca)} pgbench -h ${sh(info.host)} -p ${info.port} -U ${sh(info.username)} ${sh(db)}`,
    };
  },

  secretVerifiers(ctx, target, secret) {
    return { 'scram-sha-256': makeVerifier(secret.reveal(), scramSalt(ctx, target.name), SCRAM_ITERATIONS) };
  },

  demo,
};

export default postgresModule;
