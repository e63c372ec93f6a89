/**
 * The store factory: the gateway and the CLI open the configured store here, never a dialect
 * directly. `store: {kind: sqlite, path}` is the embedded default; `store: {kind: postgres, url}`
 * serves several gateways on one database.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError, resolveSecret, type GatewayConfig } from '../config.js';
import type { Store } from './types.js';
import { openSqliteStore } from './sqlite.js';
import { describePgUrl, openPostgresStore, PgStoreError } from './postgres.js';

export type StoreConfig = Pick<GatewayConfig, 'store' | 'file' | 'baseDir'> & { gateway: Pick<GatewayConfig['gateway'], 'id'> };

export interface OpenStoreOptions {
  /** The gateway's data directory (the SQLite file's default home). */
  dataDir: string;
  log?: Logger;
  /** Refuse to create a SQLite file that does not exist yet (the CLI reading a store). */
  mustExist?: boolean;
}

/** Where the SQLite file of a config is. */
export function sqlitePathOf(cfg: StoreConfig, dataDir: string): string | null {
  if (cfg.store.kind !== 'sqlite') return null;
  return cfg.store.path ? resolve(cfg.baseDir, cfg.store.path) : join(dataDir, 'tollgate.db');
}

/** Open (and migrate) the configured store and log where it is (a PostgreSQL URL without its password). Errors are ConfigErrors naming store.path or store.url. */
export async function openStore(cfg: StoreConfig, o: OpenStoreOptions): Promise<Store> {
  const sc = cfg.store;
  if (sc.kind === 'sqlite') {
    const path = sqlitePathOf(cfg, o.dataDir)!;
    if (o.mustExist && !existsSync(path)) throw new ConfigError(cfg.file, 'store.path', `an existing SQLite store (no file at ${path})`);
    const store = await openSqliteStore(path);
    o.log?.info({ store: `sqlite ${path}` }, 'store opened');
    return store;
  }
  const url = resolveSecret(sc.url, cfg, 'store.url');
  try {
    const store = await openPostgresStore({ url, poolSize: sc.poolSize, applicationName: `tollgate/${cfg.gateway.id}`, log: o.log });
    o.log?.info({ store: `postgres ${describePgUrl(url.reveal())}` }, 'store opened');
    return store;
  } catch (e) {
    if (e instanceof PgStoreError) {
      throw new ConfigError(cfg.file, 'store.url', e.reason === 'url' ? e.message : `a PostgreSQL database the gateway can reach and migrate (${e.message})`);
    }
    throw e;
  }
}
