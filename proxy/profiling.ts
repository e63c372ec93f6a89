/**
 * On-demand CPU profiles of a running gateway, for benchmarks: with TOLLGATE_PROFILE_DIR set,
 * SIGUSR2 starts the V8 profiler and the next SIGUSR2 stops it and writes
 * `<dir>/<timestamp>.cpuprofile` (Chrome DevTools format). Off unless that variable is set.
 */
import { Session } from 'node:inspector/promises';
import { writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';

export function installProfilingSignal(): void {
  const dir = process.env.TOLLGATE_PROFILE_DIR;
  if (!dir) return;
  let session: Session | null = null;
  let busy = false;
  process.on('SIGUSR2', () => {
    if (busy) return;
    busy = true;
    void (async () => {
      try {
        if (!session) {
          session = new Session();
          session.connect();
          await session.post('Profiler.enable');
          await session.post('Profiler.setSamplingInterval', { interval: 500 });
          await session.post('Profiler.start');
        } else {
          const { profile } = await session.post('Profiler.stop');
          session.disconnect();
          session = null;
          const file = join(dir, `${Date.now()}.cpuprofile`);
          // Written under a temporary name first: readers wait for the final name.
          writeFileSync(`${file}.part`, JSON.stringify(profile));
          renameSync(`${file}.part`, file);
        }
      } catch (e) {
        process.stderr.write(`profiling: ${(e as Error).message}\n`);
      } finally {
        busy = false;
      }
    })();
  });
}
