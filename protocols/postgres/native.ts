/** What `tollgate connect` runs for a PostgreSQL target: psql over TLS checking the gateway (verify-full), the secret in PGPASSWORD. */
import type { ClientCommandInfo, NativeClient } from '../types.js';

export function postgresNativeClient(info: ClientCommandInfo): NativeClient {
  const creds = info.target.credentials as { database?: unknown };
  const database = typeof creds.database === 'string' ? creds.database : 'postgres';
  return {
    argv: ['psql', '-h', info.host, '-p', String(info.port), '-U', info.username, '-d', database],
    env: { PGPASSWORD: info.secret, PGSSLMODE: 'verify-full', PGSSLROOTCERT: info.files.ca },
  };
}
