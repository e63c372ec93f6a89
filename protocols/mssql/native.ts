/** Client command lines for a SQL Server target: sqlcmd, FreeTDS tsql, ADO.NET and JDBC connection strings. */
import type { ClientCommandInfo, NativeClient } from '../types.js';
import { shellQuote as sh } from '../shell.js';
import { roleOf } from './config.js';

/** A value in an ADO.NET / JDBC connection string: braces when it holds a separator. */
function csValue(v: string): string {
  return /[;{}=\s'"]/.test(v) ? `{${v.replace(/}/g, '}}')}}` : v;
}

function defaultDatabase(info: ClientCommandInfo): string | undefined {
  for (const r of info.target.roles) {
    try {
      const role = roleOf(r);
      const db = role.defaultDatabase ?? role.databases[0]?.name;
      if (db) return db;
    } catch { /* validated at start-up */ }
  }
  return undefined;
}

export function mssqlClientCommands(info: ClientCommandInfo): Record<string, string> {
  const { host, port, username, secret } = info;
  const db = defaultDatabase(info);
  return {
    sqlcmd: `sqlcmd -S ${sh(`${host},${port}`)} -U ${sh(username)} -P ${sh(secret)} -N -C${db ? ` -d ${sh(db)}` : ''}`,
    tsql: `tsql -H ${sh(host)} -p ${port} -U ${sh(username)} -P ${sh(secret)}${db ? ` -D ${sh(db)}` : ''}`,
    'ADO.NET': `Server=${csValue(`${host},${port}`)};User ID=${csValue(username)};Password=${csValue(secret)};Encrypt=True;TrustServerCertificate=True${db ? `;Database=${csValue(db)}` : ''}`,
    JDBC: `jdbc:sqlserver://${host}:${port};user=${csValue(username)};password=${csValue(secret)};encrypt=true;trustServerCertificate=true${db ? `;databaseName=${csValue(db)}` : ''}`,
  };
}

/** `tollgate connect` runs sqlcmd with the secret in SQLCMDPASSWORD (never on the command line). */
export function mssqlNativeClient(info: ClientCommandInfo): NativeClient {
  const db = defaultDatabase(info);
  return {
    argv: ['sqlcmd', '-S', `${info.host},${info.port}`, '-U', info.username, '-N', '-C', ...(db ? ['-d', db] : [])],
    env: { SQLCMDPASSWORD: info.secret },
  };
}
