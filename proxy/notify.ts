import { spawn } from 'node:child_process';
import type { Logger } from 'pino';

/** Run a notification hook: argv from config, the event as one JSON line on stdin. Never blocks the caller. */
export function runNotify(argv: string[], event: Record<string, unknown>, log: Logger, what = 'notification hook'): void {
  try {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'ignore', 'pipe'], timeout: 30_000 });
    let err = '';
    child.stderr.on('data', (d) => { if (err.length < 2000) err += d; });
    child.on('error', (e) => log.error({ err: e, hook: argv[0] }, `${what} failed to start`));
    child.on('close', (code) => { if (code) log.warn({ code, stderr: err.slice(0, 500), hook: argv[0] }, `${what} failed`); });
    child.stdin.on('error', () => undefined); // a hook that exits without reading its stdin
    child.stdin.end(`${JSON.stringify(event)}\n`);
  } catch (e) {
    log.error({ err: e }, `${what} failed`);
  }
}
