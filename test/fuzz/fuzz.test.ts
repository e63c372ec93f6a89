/**
 * Every wire parser and state machine that sees untrusted bytes, fuzzed for a bounded budget:
 * at least 10,000 inputs per target (corpus replay, fast-check's structured inputs, seeded
 * mutations of the corpus), with a fixed seed so a run is reproducible. A failure names the target,
 * the kind (throw, invariant, hang, memory) and where the input was saved (test/fuzz/corpus/…/crash-*.bin,
 * replayed first by every later run). `npm run fuzz` runs 1,000,000 inputs per target with a fresh seed.
 * TOLLGATE_FUZZ_INPUTS and TOLLGATE_FUZZ_SEED override the budget and seed.
 */
import t from 'tap';
import { MODULES, runFuzz } from './runner.js';

const MIN_INPUTS = 10_000;
const inputs = Number(process.env['TOLLGATE_FUZZ_INPUTS'] ?? MIN_INPUTS);
const seed = Number(process.env['TOLLGATE_FUZZ_SEED'] ?? 20_261_123);

/** The targets this suite promises (the README lists them): a target that silently stops running is a failure too. */
const EXPECTED = [
  'postgres.startup', 'postgres.client-frames', 'postgres.server-frames',
  'mysql.handshake', 'mysql.server-packets', 'mysql.relay', 'mysql.sql-splitter',
  'vnc.client-messages', 'vnc.server-messages', 'vnc.handshake',
  'rdp.client-connect', 'rdp.server-connect', 'rdp.relay', 'rdp.ntlm', 'rdp.credssp', 'rdp.bitmap',
  'ssh.line-editor', 'ssh.sftp', 'ssh.scp',
  'http.routing', 'http.rules',
  'config.yaml',
  'mssql.prelogin', 'mssql.login7', 'mssql.packets', 'mssql.tokens', 'mssql.requests',
];

t.test(`fuzz every target with ${inputs} inputs (seed ${seed})`, async (t) => {
  const started = Date.now();
  const results = await runFuzz({ modules: MODULES, inputs, seed, parallel: 2, save: true, log: (l) => t.comment(l) });
  const seen = new Set(results.map((r) => r.target));
  t.same(EXPECTED.filter((n) => !seen.has(n)), [], 'every target ran');
  for (const r of results) {
    if (r.failure) {
      t.fail(`${r.target}: ${r.failure.type}: ${r.failure.detail}${r.failure.saved ? `\n(input saved as ${r.failure.saved})` : ''}`);
      continue;
    }
    const s = r.stats!;
    t.ok(s.inputs >= Math.min(inputs, MIN_INPUTS), `${r.target}: ${s.inputs} inputs (${s.corpus} corpus, ${s.fastCheck} fast-check, ${s.mutations} mutations) in ${s.ms} ms (CPU ${s.cpuMs} ms); memory +${Math.round(s.memoryGrowth / 1024)} KiB (bound ${s.memoryBound / 1024 / 1024} MiB)${s.slowOnce ? `; ${s.slowOnce} slow once, fast on re-run` : ''}`);
  }
  const total = results.reduce((n, r) => n + (r.stats?.inputs ?? 0), 0);
  t.comment(`${total} inputs over ${results.length} targets in ${Math.round((Date.now() - started) / 1000)} s`);
});
