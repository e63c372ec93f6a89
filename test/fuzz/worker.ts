/**
 * Runs fuzz targets in a worker thread (started by runner.ts). For each target: every corpus
 * entry as it is (regression cases included), then fast-check's structured inputs, then seeded
 * mutations of the corpus. Before each input it publishes the input and its start time in shared
 * memory, so the runner can kill a worker stuck in one input and still know which input it was.
 */
import { readFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import {
  DEFAULT_MAX_LENGTH, DEFAULT_MEMORY_BOUND, FuzzInvariant, Rng, describe, loadCorpus, mutate, type FuzzTarget,
} from './engine.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

export interface WorkerShared {
  /** [busy, input length, inputs done] */
  ctrl: Int32Array;
  /** [Date.now() when the current input started] */
  time: Float64Array;
  input: Uint8Array;
}

export interface Job {
  module: string;
  skip: string[];
  inputs: number;
  seed: number;
  fcShare: number;
  /** One input taking longer than this (confirmed on re-runs) is a hang. */
  hangMs: number;
  corpusDir: string;
}

export type WorkerMessage =
  | { kind: 'start'; target: string }
  | { kind: 'done'; target: string; stats: TargetStats }
  | { kind: 'failure'; target: string; failure: { type: 'throw' | 'invariant' | 'hang' | 'memory'; detail: string; input: Uint8Array | null } }
  | { kind: 'module-done'; module: string }
  | { kind: 'error'; detail: string };

export interface TargetStats {
  inputs: number;
  corpus: number;
  fastCheck: number;
  mutations: number;
  ms: number;
  /** CPU time of the worker thread for this target. */
  cpuMs: number;
  /** Heap + ArrayBuffer bytes after the run minus before it (after a full GC). */
  memoryGrowth: number;
  memoryBound: number;
  /** Inputs that took over HANG_MS once but not when re-run (machine load). */
  slowOnce: number;
  covers: string;
}

class Failure extends Error {
  constructor(readonly type: 'throw' | 'invariant' | 'hang' | 'memory', readonly detail: string, readonly input: Buffer | null) { super(detail); }
}

const shared = workerData as WorkerShared;

/** CPU time of this thread (Linux), so reports say what a target costs whatever the machine's load. */
function threadCpuMs(): number {
  try { return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6; } catch { return 0; }
}

function memory(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

async function runTarget(t: FuzzTarget, job: Job): Promise<TargetStats> {
  const maxLength = t.maxLength ?? DEFAULT_MAX_LENGTH;
  const bound = t.memoryBound ?? DEFAULT_MEMORY_BOUND;
  const stats: TargetStats = { inputs: 0, corpus: 0, fastCheck: 0, mutations: 0, ms: 0, memoryGrowth: 0, memoryBound: bound, slowOnce: 0, covers: t.covers, cpuMs: 0 };
  const started = performance.now();
  const cpu0 = threadCpuMs();
  let baseline = 0;
  /**
   * Growth over the bound fails only if it stays after a full GC and after the timers the code under
   * test started have had time to run (a relay keeps a closed connection for a second or two).
   */
  const checkMemory = async (force: boolean) => {
    if (!force && memory() - baseline <= bound) return;
    gc();
    let growth = memory() - baseline;
    for (let i = 0; i < 4 && growth > bound; i++) {
      await new Promise((r) => setTimeout(r, 1500));
      gc();
      growth = memory() - baseline;
    }
    stats.memoryGrowth = Math.max(stats.memoryGrowth, growth);
    if (growth > bound) throw new Failure('memory', `memory grew by ${growth} bytes (bound ${bound}) over ${stats.inputs} inputs and stayed after a GC and 6 s`, null);
  };
  const once = async (input: Buffer): Promise<number> => {
    const t0 = performance.now();
    try {
      const r = t.run(input);
      if (r) await r;
    } catch (e) {
      if (e instanceof FuzzInvariant) throw new Failure('invariant', describe(e), input);
      if (!t.expected(e)) throw new Failure('throw', describe(e), input);
    }
    return performance.now() - t0;
  };
  const exec = async (input: Buffer) => {
    const n = Math.min(input.length, shared.input.length);
    shared.input.set(input.subarray(0, n));
    shared.ctrl[1] = n;
    shared.time[0] = Date.now();
    Atomics.store(shared.ctrl, 0, 1);
    let ms = await once(input);
    if (ms > job.hangMs) {
      // Confirm on the same input (a loaded machine can deschedule a thread): the fastest of three counts.
      for (let i = 0; i < 3 && ms > job.hangMs; i++) ms = Math.min(ms, await once(input));
      if (ms > job.hangMs) throw new Failure('hang', `one input took ${Math.round(ms)} ms (limit ${job.hangMs} ms) on each of 4 runs`, input);
      stats.slowOnce++;
    }
    Atomics.store(shared.ctrl, 0, 0);
    Atomics.add(shared.ctrl, 2, 1);
    stats.inputs++;
    if ((stats.inputs & 255) === 0) await checkMemory(false);
  };

  const { all } = loadCorpus(t, job.corpusDir);
  for (const c of all) { await exec(c); stats.corpus++; }
  gc();
  baseline = memory();

  const budget = Math.max(0, job.inputs - stats.corpus);
  const fcRuns = Math.round(budget * job.fcShare);
  let fcFailure: Failure | null = null;
  try {
    await fc.assert(fc.asyncProperty(t.arbitrary(fc), async (u8) => {
      const b = Buffer.from(u8.buffer, u8.byteOffset, Math.min(u8.byteLength, maxLength));
      try { await exec(b); } catch (e) { if (e instanceof Failure) fcFailure = e; throw e; }
      stats.fastCheck++;
    }), { seed: job.seed, numRuns: fcRuns, endOnFailure: true });
  } catch (e) {
    throw fcFailure ?? new Failure('throw', `fast-check: ${describe(e)}`, null);
  }

  const rng = new Rng(job.seed ^ 0x5bd1e995);
  const parents = all.length ? all : [Buffer.alloc(0)];
  for (let i = stats.fastCheck; i < budget; i++) {
    await exec(mutate(rng, rng.pick(parents), parents, maxLength));
    stats.mutations++;
  }
  await checkMemory(true);
  stats.ms = Math.round(performance.now() - started);
  stats.cpuMs = Math.round(threadCpuMs() - cpu0);
  return stats;
}

const port = parentPort!;
port.on('message', async (job: Job) => {
  try {
    const mod = (await import(`./targets/${job.module}.ts`)) as { targets: FuzzTarget[] };
    for (const t of mod.targets) {
      if (job.skip.includes(t.name)) continue;
      port.postMessage({ kind: 'start', target: t.name } satisfies WorkerMessage);
      try {
        port.postMessage({ kind: 'done', target: t.name, stats: await runTarget(t, job) } satisfies WorkerMessage);
      } catch (e) {
        const f = e instanceof Failure ? e : new Failure('throw', describe(e), null);
        port.postMessage({ kind: 'failure', target: t.name, failure: { type: f.type, detail: f.detail, input: f.input ? new Uint8Array(f.input) : null } } satisfies WorkerMessage);
        Atomics.store(shared.ctrl, 0, 0);
      }
    }
    port.postMessage({ kind: 'module-done', module: job.module } satisfies WorkerMessage);
  } catch (e) {
    port.postMessage({ kind: 'error', detail: describe(e) } satisfies WorkerMessage);
  }
});
