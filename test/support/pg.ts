/** Test helpers for the postgres module: a real PostgreSQL cluster (initdb in a temp dir, scram), cleaned up in teardown. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { startCluster, demoTarget, findPgBin, type DemoCluster } from '../../protocols/postgres/demo.js';
import type { TargetConfig } from '../../protocols/types.js';

export const havePostgres = findPgBin() !== null;
export const quietLog = pino({ level: process.env.TG_TEST_LOG ?? 'silent' });

interface Teardown { teardown(fn: () => unknown): void }

export interface TestCluster {
  cluster: DemoCluster;
  dir: string;
  target: TargetConfig;
  /** A superuser client (the test's own view of the server). */
  su(database?: string): Promise<pg.Client>;
  /** Session roles (tg_*) that exist right now. */
  sessionRoles(): Promise<string[]>;
}

export async function startTestCluster(t: Teardown, name = 'prod-db'): Promise<TestCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-pg-'));
  const cluster = await startCluster(dir, quietLog);
  if (!cluster) throw new Error('PostgreSQL is not installed');
  t.teardown(async () => {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const su = async (database = 'postgres') => {
    const c = new pg.Client({ host: cluster.host, port: cluster.port, user: cluster.superuser.user, password: cluster.superuser.password, database });
    await c.connect();
    return c;
  };
  return {
    cluster, dir, target: demoTarget(cluster, name), su,
    async sessionRoles() {
      const c = await su();
      try {
        return (await c.query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'tg\\_%' ORDER BY 1")).rows.map((r) => r.rolname as string);
      } finally {
        await c.end();
      }
    },
  };
}
