/** Test helpers for the ssh module: a real OpenSSH sshd on loopback with the demo accounts, cleaned up in teardown. */
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import pino from 'pino';
import { startSshd, createDemoAccounts, removeDemoAccounts, demoTargets, type SshdInstance, type DemoAccounts } from '../../protocols/ssh/demo.js';
import type { TargetConfig } from '../../protocols/types.js';

export const haveSshd = existsSync('/usr/sbin/sshd') && process.getuid?.() === 0;

interface Teardown { teardown(fn: () => unknown): void }

export interface TestSshd {
  sshd: SshdInstance;
  accounts: DemoAccounts;
  dir: string;
  targets: TargetConfig[];
}

/** sshd + demo accounts; target names get a suffix so parallel test files never collide. */
export async function startTestSshd(t: Teardown, names?: { eph: string; cert: string; pw: string }): Promise<TestSshd> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-sshd-'));
  const sshd = await startSshd(join(dir, 'sshd'));
  const accounts = createDemoAccounts();
  t.teardown(async () => {
    await sshd.stop();
    removeDemoAccounts(accounts);
    rmSync(dir, { recursive: true, force: true });
  });
  return { sshd, accounts, dir, targets: demoTargets(sshd, accounts, names) };
}

export function userExists(name: string): boolean {
  return spawnSync('id', ['-u', name]).status === 0;
}

/** Local accounts whose names start with prefix (ephemeral accounts left behind). */
export function usersWithPrefix(prefix: string): string[] {
  const r = spawnSync('getent', ['passwd'], { encoding: 'utf8' });
  return r.stdout.split('\n').map((l) => l.split(':')[0]!).filter((n) => n && n.startsWith(prefix));
}

export const quietLog = pino({ level: process.env.TG_TEST_LOG ?? 'silent' });
