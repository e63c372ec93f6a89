/**
 * `npm run fuzz`: every fuzz target with 1,000,000 inputs (or --inputs N), failing inputs saved into
 * test/fuzz/corpus/<target>/crash-*.bin as regression cases (which `npm test` then replays).
 *
 *   npm run fuzz                          # all modules, 1,000,000 inputs per target
 *   npm run fuzz -- postgres rdp          # some modules
 *   npm run fuzz -- --inputs 50000 --seed 7 --parallel 2 --no-save
 */
import { MODULES, runFuzz } from './runner.js';

const args = process.argv.slice(2);
const opt = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(args[i + 1]);
  args.splice(i, 2);
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${name}: expected a whole number`);
  return v;
};
const inputs = opt('inputs', 1_000_000);
const seed = opt('seed', Date.now() % 2 ** 31);
const parallel = opt('parallel', 2);
const noSave = args.includes('--no-save');
const modules = args.filter((a) => !a.startsWith('--'));
for (const m of modules) if (!(MODULES as readonly string[]).includes(m)) throw new Error(`unknown module ${m} (known: ${MODULES.join(', ')})`);

process.stdout.write(`fuzzing ${modules.length ? modules.join(', ') : 'every module'}: ${inputs} inputs per target, seed ${seed}\n`);
const t0 = Date.now();
const results = await runFuzz({ modules: modules.length ? modules : undefined, inputs, seed, parallel, save: !noSave, log: (l) => process.stdout.write(`${l}\n`) });
const failed = results.filter((r) => r.failure);
const total = results.reduce((n, r) => n + (r.stats?.inputs ?? 0), 0);
process.stdout.write(`\n${results.length - failed.length} targets passed, ${failed.length} failed; ${total} inputs in ${Math.round((Date.now() - t0) / 1000)} s (seed ${seed})\n`);
for (const f of failed) process.stdout.write(`\n${f.target}: ${f.failure!.type}\n${f.failure!.detail}\n${f.failure!.saved ? `input saved as ${f.failure!.saved}\n` : ''}`);
process.exit(failed.length ? 1 : 0);
