/**
 * The fuzzer finds what it promises to find: targets with planted bugs (targets/planted.ts) each
 * fail with the right kind (a non-protocol exception, an endless loop killed by the watchdog, a
 * slow input confirmed on re-runs, memory growth past the bound, a broken invariant), the failing
 * input is saved into the corpus, the next run replays it first and fails on it again, and a
 * correct target passes with every input counted.
 */
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFuzz } from './runner.js';

t.test('planted bugs are found, saved and replayed', async (t) => {
  const corpusDir = mkdtempSync(join(tmpdir(), 'tg-fuzz-corpus-'));
  t.teardown(() => rmSync(corpusDir, { recursive: true, force: true }));
  const results = await runFuzz({ modules: ['planted'], inputs: 4000, seed: 7, parallel: 1, save: true, corpusDir, hangMs: 200, watchdogMs: 2000 });
  const by = Object.fromEntries(results.map((r) => [r.target, r]));
  t.equal(by['planted.throw']?.failure?.type, 'throw', 'a TypeError is a failure');
  t.match(by['planted.throw']?.failure?.detail, /TypeError/);
  t.equal(by['planted.throw']?.failure?.input?.[0], 0x42, 'with the input that caused it');
  t.equal(by['planted.hang']?.failure?.type, 'hang', 'an endless loop is killed and reported');
  t.equal(by['planted.hang']?.failure?.input?.[0], 0x48, 'with the input it was stuck on');
  t.equal(by['planted.slow']?.failure?.type, 'hang', 'an input over the time limit on every re-run is a hang');
  t.match(by['planted.slow']?.failure?.detail, /on each of 4 runs/);
  t.equal(by['planted.leak']?.failure?.type, 'memory', 'memory growth past the bound');
  t.equal(by['planted.invariant']?.failure?.type, 'invariant', 'a broken invariant');
  t.notOk(by['planted.ok']?.failure, 'the correct parser passes');
  t.equal(by['planted.ok']?.stats?.inputs, 4000, 'and every input was counted');
  t.ok((by['planted.ok']?.stats?.fastCheck ?? 0) > 0 && (by['planted.ok']?.stats?.mutations ?? 0) > 0, 'fast-check and mutations both ran');

  const saved = readdirSync(join(corpusDir, 'planted.throw'));
  t.equal(saved.length, 1, 'the failing input went into the corpus');
  t.match(saved[0], /^crash-[0-9a-f]{16}\.bin$/);
  t.equal(readFileSync(join(corpusDir, 'planted.throw', saved[0]!))[0], 0x42);
  const again = await runFuzz({ modules: ['planted'], inputs: 1, seed: 8, parallel: 1, corpusDir, hangMs: 200, watchdogMs: 2000 });
  const replay = again.find((r) => r.target === 'planted.throw');
  t.equal(replay?.failure?.type, 'throw', 'a run of one input fails on the saved regression case (the corpus is replayed first)');
});
