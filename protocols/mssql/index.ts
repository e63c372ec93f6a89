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
import { checkStageOf } from '../net.js';
import { validateTarget } from './config.js';
import { FATAL, errorMessage } from './errors.js';
import { listenMssql } from './frontend.js';
import { mssqlClientCommands, mssqlNativeClient } from './native.js';
import { LEASE_KIND, connectAdmin, dropSessionLogin } from './provisioner.js';

export const mssqlModule: ProtocolModule = {
  name: 'mssql',
  defaultPort: 1433,
  validateTarget,
  listen: listenMssql,

  // Before the PRELOGIN answer: an ERROR instead of it (clients report a bad PRELOGIN answer or the text).
  refuse(sock, _code, message) {
    sock.end(errorMessage({ number: 17809, class: FATAL, message }));
  },

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
      return { ok: false, stage: checkStageOf(e, 'auth'), detail: `cannot log in with the admin credential: ${(e as Error).message}` };
    }
  },

  leaseKinds: {
    [LEASE_KIND]: {
      holds: 'a SQL Server login and its database users',
      async revoke(ctx, target, lease) {
        const login = lease.data['login'];
        const databases = lease.data['databases'];
        if (typeof login !== 'string' || !Array.isArray(databases) || !databases.every((d) => typeof d === 'string')) {
          throw new Error(`lease ${lease.id}: no login and databases to revoke`);
        }
        const { killed } = await dropSessionLogin(ctx, target, login, databases as string[]);
        ctx.log.info({ lease: lease.id, login, killed }, 'mssql session login dropped');
        return { revoked: true, detail: `login [${login}] dropped with its users in ${databases.length} database(s) (${killed} session(s) killed)` };
      },
    },
  },

  clientCommands: mssqlClientCommands,
  nativeClient: mssqlNativeClient,
};

export default mssqlModule;
