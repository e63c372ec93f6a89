/** The fidelity suite's shared helpers: case selection, normalisation, accepted differences, summaries. */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  fidelityMode, judge, failed, nameRule, normalise, passed, reportSummary, selectCases, summarise, summaryLines, unifiedDiff,
  type AcceptedDifference,
} from './common.js';

t.test('mode and case selection', async (t) => {
  t.equal(fidelityMode({}), 'fast');
  t.equal(fidelityMode({ TOLLGATE_FIDELITY: 'FULL' }), 'full');
  t.throws(() => fidelityMode({ TOLLGATE_FIDELITY: 'all' }), /expected "fast" or "full"/);
  const all = ['a', 'b', 'c', 'd'];
  const id = (s: string) => s;
  t.same(selectCases(all, id, ['c', 'a'], {}), ['a', 'c'], 'fast subset, in suite order');
  t.same(selectCases(all, id, ['c'], { TOLLGATE_FIDELITY: 'full' }), all, 'full run');
  t.same(selectCases(all, id, ['c'], { TOLLGATE_FIDELITY_CASES: 'd, b' }), ['b', 'd'], 'named cases');
  t.throws(() => selectCases(all, id, ['x'], {}), /fast subset: no such case x/);
  t.throws(() => selectCases(all, id, [], { TOLLGATE_FIDELITY_CASES: 'zz' }), /TOLLGATE_FIDELITY_CASES: no such case zz/);
});

t.test('normalise: names, plain replacements and renumbering in order of appearance', async (t) => {
  const rules = [
    nameRule('tg_alice_1a2b3c', '<role>', 'minted role'),
    { pattern: /\bpid \d+/, with: 'pid <n>', why: 'backend pid' },
    { pattern: /\boid \d+/, renumber: 'oid', why: 'OIDs of new objects' },
  ];
  const a = normalise('tg_alice_1a2b3c pid 77 oid 16400 oid 16401 oid 16400', rules);
  const b = normalise('<role> pid 91 oid 20000 oid 20007 oid 20000', rules);
  t.equal(a, '<role> pid <n> <oid#1> <oid#2> <oid#1>');
  t.equal(a, b, 'same shape normalises alike');
  const wrong = normalise('<role> pid 91 oid 20000 oid 20007 oid 20007', rules);
  t.not(a, wrong, 'a different reference still shows after renumbering');
  t.equal(normalise('x.y', [nameRule('x.y', 'Z', 'dots are literal')]), 'Z');
  t.equal(normalise('xzy', [nameRule('x.y', 'Z', 'dots are literal')]), 'xzy');
});

t.test('judge: identical, different, accepted only when every changed line is covered, stale entries', async (t) => {
  const accepted: AcceptedDifference[] = [{ case: 'guc', reason: 'server-side setting differs legitimately', lines: /^application_name = / }];
  t.match(judge('x', 'psql', 'a\nb\n', 'a\nb\n', accepted), { status: 'identical', bytes: 4 });
  const d = judge('x', 'psql', 'a\nb\n', 'a\nc\n', accepted);
  t.equal(d.status, 'different');
  t.match(d.diff, /-b\n\+c/);
  const ok = judge('guc', 'psql', 'x\napplication_name = psql\n', 'x\napplication_name = other\n', accepted);
  t.match(ok, { status: 'accepted', reason: /legitimately/ });
  const more = judge('guc', 'psql', 'x\napplication_name = psql\ny\n', 'x\napplication_name = other\nz\n', accepted);
  t.equal(more.status, 'different', 'an accepted entry does not hide another change');
  const s = summarise('postgres', 'psql', [ok, d, judge('y', 'psql', 'q', 'q'), failed('z', 'psql', new Error('boom'))], accepted);
  t.match(s, { total: 4, identical: 1, different: ['x'], failed: [{ case: 'z', reason: 'boom' }], accepted: [{ case: 'guc' }], stale: [] });
  t.notOk(passed(s));
  const stale = summarise('postgres', 'psql', [judge('guc', 'psql', 'same', 'same', accepted)], accepted);
  t.same(stale.stale, ['guc']);
  t.notOk(passed(stale), 'a stale accepted difference fails the run');
  const good = summarise('postgres', 'psql', [ok, judge('y', 'psql', 'q', 'q')], accepted);
  t.ok(passed(good));
  t.match(summaryLines(good)[0], /^postgres psql: 1\/2 identical, 1 accepted difference\(s\) \(2\/2 pass\)/);
  t.match(summaryLines(good)[1], /accepted: guc: server-side setting/);
  t.equal(unifiedDiff('n', 'a', 'a'), '');
  t.notOk(passed(summarise('postgres', 'psql', [])), 'an empty run is no pass');
});

t.test('reportSummary writes JSON lines for the test:fidelity runner', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-fid-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'r.jsonl');
  const comments: string[] = [];
  const s = summarise('postgres', 'extended', [judge('a', 'extended', '1', '1')]);
  reportSummary({ comment: (m: unknown) => comments.push(String(m)) }, s, { TOLLGATE_FIDELITY_REPORT: file });
  reportSummary({ comment: () => {} }, s, { TOLLGATE_FIDELITY_REPORT: file });
  const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(lines.length, 2);
  t.match(lines[0], { db: 'postgres', mode: 'extended', total: 1, identical: 1 });
  t.match(comments[0], /^postgres extended: 1\/1 identical/);
});
