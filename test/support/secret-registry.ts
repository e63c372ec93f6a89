/**
 * The secret registry of a test run (test/run.js sets TOLLGATE_SECRET_REGISTRY to a file outside
 * every scanned directory and TOLLGATE_TEST_ROOT to the directory all test temp dirs live under).
 * The gateway notes what it issues itself (auth/secret.ts noteIssued); test helpers note what they
 * are handed and keep their data directories until test/reliability/secret-scan.scan.ts has
 * scanned (and then removed) them. Without TOLLGATE_SECRET_REGISTRY all of this does nothing.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { noteIssued } from '../../auth/secret.js';

export function registryFile(): string | null {
  return process.env['TOLLGATE_TEST'] === '1' ? process.env['TOLLGATE_SECRET_REGISTRY'] || null : null;
}

/** Note a secret a test was handed (connection secret, API token, cookie, password). */
export function recordSecret(kind: string, value: string): void {
  if (value) noteIssued(kind, value);
}

/** Whether test data directories must stay until the secret scan (it removes them). */
export function keepDirsForScan(): boolean {
  return registryFile() !== null;
}

/** Note a directory for the scan (when it is not under TOLLGATE_TEST_ROOT already). */
export function recordDir(dir: string): void {
  const file = registryFile();
  if (file) appendFileSync(file, JSON.stringify({ dir }) + '\n');
}

/** A file for a test gateway's log lines (debug level) under the test root, or null outside a scanned run. */
export function scanLogFile(name: string): string | null {
  const root = process.env['TOLLGATE_TEST_ROOT'];
  if (!registryFile() || !root) return null;
  const dir = join(root, 'logs');
  mkdirSync(dir, { recursive: true });
  return join(dir, `${name}-${process.pid}-${Date.now().toString(36)}.log`);
}
