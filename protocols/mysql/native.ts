/** What `tollgate connect` runs for a MySQL/MariaDB target: the mariadb client over TLS checking the gateway's certificate, the secret in MYSQL_PWD. */
import { existsSync } from 'node:fs';
import type { ClientCommandInfo, NativeClient } from '../types.js';

export function mysqlNativeClient(info: ClientCommandInfo): NativeClient {
  const bin = existsSync('/usr/bin/mariadb') ? 'mariadb' : 'mysql';
  const cleartext = info.target.options['clientAuth'] === 'mysql_clear_password';
  const db = info.target.roles.map((r) => r['database']).find((d) => typeof d === 'string') as string | undefined;
  return {
    argv: [bin, '-h', info.host, '-P', String(info.port), '-u', info.username, `--ssl-ca=${info.files.ca}`, '--ssl-verify-server-cert', ...(cleartext ? ['--enable-cleartext-plugin'] : []), ...(db ? [db] : [])],
    env: { MYSQL_PWD: info.secret },
  };
}
