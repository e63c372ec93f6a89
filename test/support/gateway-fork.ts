/**
 * A gateway in a child process (test/support/gateway-child.ts) for tests that kill it with SIGKILL
 * (a crash: nothing runs on the way out): it requests a grant and a connection secret for `session`
 * and resolves once it serves. The child is killed at the end of the test `t` if it still runs.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export interface ForkedGateway {
  child: ChildProcess;
  listeners: Record<string, { port: number }>;
  secret: { username: string; secret: string };
  grantId: string;
  /** When the child said it serves (its grant was made before). */
  readyAt: number;
  /** SIGKILL, resolved once the process is gone. */
  crash(): Promise<void>;
}

export async function forkGateway(
  t: { teardown(fn: () => void): void },
  opts: Record<string, unknown>,
  session: { user: string; target: string; role: string; duration?: string },
): Promise<ForkedGateway> {
  const child = fork(join(import.meta.dirname, 'gateway-child.ts'), [], {
    env: { ...process.env, TG_CHILD: JSON.stringify({ ...opts, session }) },
    execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  const ready = await new Promise<Omit<ForkedGateway, 'child' | 'readyAt' | 'crash'>>((res, rej) => {
    child.once('message', (m) => res(m as never));
    child.once('exit', (code) => rej(new Error(`the gateway child exited with ${code}`)));
  });
  const crash = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const dead = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await dead;
  };
  return { ...ready, child, readyAt: Date.now(), crash };
}
