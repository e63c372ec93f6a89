/** The registry of protocol modules. Adding a protocol adds a folder and one line here. */
import type { ProtocolModule } from './types.js';
import { httpModule } from './http/index.js';
import { mssqlModule } from './mssql/index.js';
import { mysqlModule } from './mysql/index.js';
import { postgresModule } from './postgres/index.js';
import { rdpModule } from './rdp/index.js';
import { sshModule } from './ssh/index.js';
import { vncModule } from './vnc/index.js';

export const protocolModules: ProtocolModule[] = [
  httpModule,
  mssqlModule,
  mysqlModule,
  postgresModule,
  rdpModule,
  sshModule,
  vncModule,
];

export function moduleMap(): Map<string, ProtocolModule> {
  return new Map(protocolModules.map((m) => [m.name, m]));
}
