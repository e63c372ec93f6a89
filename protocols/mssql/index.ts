/**
 * SQL Server (TDS) brokering: sqlcmd, FreeTDS tsql, pymssql, tedious, ADO.NET and JDBC log in
 * to the gateway with "target[:role]" and a connection secret (over TLS: TDS 7.x encryption or
 * TDS 8.0 strict); the gateway mints a SQL login for the session, logs in as it and relays TDS,
 * checking and recording every batch and RPC.
 *
 * Files: packets.ts (framing), prelogin.ts, login7.ts, reader.ts + types.ts + tokens.ts (token
 * stream), requests.ts (SQLBatch, RPC, TM requests), tsql.ts (quoting, statement split), tls.ts
 * (TLS inside PRELOGIN), conn.ts, frontend.ts (client side), upstream.ts (login to the server),
 * provisioner.ts (session logins through tedious), relay.ts, config.ts, native.ts.
 */
import type { ProtocolModule } from '../types.js';
import { validateTarget } from './config.js';
import { listenMssql } from './frontend.js';
import { mssqlClientCommands, mssqlNativeClient } from './native.js';
import { LEASE_KIND, connectAdmin, dropSessionLogin } from './provisioner.js';

export const mssqlModule: ProtocolModule = {
  name: 'mssql',
  defaultPort: 1433,
  validateTarget,
  listen: listenMssql,

  async checkTarget(ctx, target) {
    try {
      const c = await connectAdmin(ctx, target);
      try {
        const rows = await c.run('SELECT @@VERSION AS v, SUSER_SNAME() AS u');
        const version = String(rows[0]?.[0] ?? '').split('\n')[0]!.trim();
        return { ok: true, detail: `reachable, credentials work (${version}, as ${String(rows[0]?.[1] ?? '?')})` };
      } finally {
        c.close();
      }
    } catch (e) {
      return { ok: false, detail: `cannot log in with the admin credential: ${(e as Error).message}` };
    }
  },

  async revokeLease(ctx, target, lease) {
    if (lease.kind !== LEASE_KIND) return;
    const login = lease.data['login'];
    const databases = lease.data['databases'];
    if (typeof login !== 'string' || !Array.isArray(databases) || !databases.every((d) => typeof d === 'string')) {
      throw new Error(`lease ${lease.id}: no login and databases to revoke`);
    }
    const { killed } = await dropSessionLogin(ctx, target, login, databases as string[]);
    ctx.log.info({ lease: lease.id, login, killed }, 'mssql session login dropped');
  },

  clientCommands: mssqlClientCommands,
  nativeClient: mssqlNativeClient,
};

export default mssqlModule;
