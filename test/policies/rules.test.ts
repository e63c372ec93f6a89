import t from 'tap';
import { compileRules, statementKind, statementKeywords, RuleCompileError, globMatch } from '../../policies/rules.js';
import type { CommandRuleConfig } from '../../policies/config.js';
import { validatePolicies } from '../../policies/engine.js';
import { harness, target } from './helpers.js';

t.test('patterns are case-insensitive regexes; default and custom messages', async (t) => {
  const rules = compileRules([
    { pattern: '\\brm\\s+-rf\\s+/', action: 'kill' },
    { pattern: 'shutdown', action: 'deny', message: 'No shutdowns here.' },
  ], 'ops');
  t.equal(rules.check('ls -la').action, 'allow');
  const k = rules.check('sudo RM -RF /var');
  t.equal(k.action, 'kill');
  t.equal(k.message, 'Blocked by Tollgate policy: \\brm\\s+-rf\\s+/');
  t.equal(k.rule?.action, 'kill');
  const d = rules.check('ShutDown -h now');
  t.equal(d.action, 'deny');
  t.equal(d.message, 'No shutdowns here.');
  t.equal(rules.check('rm -rf ./build').action, 'allow');
});

t.test('priority kill > deny > alert, then config order', async (t) => {
  const rules = compileRules([
    { pattern: 'passwd', action: 'alert', message: 'alert-1' },
    { pattern: 'passwd', action: 'deny', message: 'deny-1' },
    { pattern: 'passwd', action: 'deny', message: 'deny-2' },
    { pattern: 'passwd root', action: 'kill', message: 'kill-1' },
    { pattern: 'cat', action: 'alert', message: 'alert-2' },
    { pattern: 'cat /etc', action: 'alert', message: 'alert-3' },
  ], 'ops');
  t.same(rules.check('passwd bob'), { action: 'deny', message: 'deny-1', rule: { pattern: 'passwd', action: 'deny', message: 'deny-1' } });
  t.equal(rules.check('passwd root').message, 'kill-1');
  t.equal(rules.check('cat /etc/hosts').message, 'alert-2');
  t.equal(rules.check('cat /etc/hosts').action, 'alert');
});

t.test('rules filtered by roles', async (t) => {
  const list: CommandRuleConfig[] = [
    { pattern: 'drop', action: 'deny', roles: ['ro', 'report*'] },
    { pattern: 'truncate', action: 'deny' },
  ];
  const ro = compileRules(list, 'ro');
  const rw = compileRules(list, 'rw');
  const rep = compileRules(list, 'reporting');
  t.equal(ro.size, 2);
  t.equal(rw.size, 1);
  t.equal(ro.check('DROP TABLE x').action, 'deny');
  t.equal(rep.check('DROP TABLE x').action, 'deny');
  t.equal(rw.check('DROP TABLE x').action, 'allow');
  t.equal(rw.check('truncate x').action, 'deny');
});

t.test('statement kinds', async (t) => {
  t.equal(statementKind('select 1'), 'SELECT');
  t.equal(statementKind('  \n\tdrop table users'), 'DROP');
  t.equal(statementKind('-- note\n/* block /* nested */ still */ DELETE FROM t'), 'DELETE');
  t.equal(statementKind('alter   system set work_mem = 1'), 'ALTER SYSTEM');
  t.equal(statementKind('ALTER TABLE t ADD c int'), 'ALTER');
  t.equal(statementKind("copy t to program 'curl evil'"), 'COPY PROGRAM');
  t.equal(statementKind("COPY t FROM '/tmp/x'"), 'COPY');
  t.equal(statementKind("COPY t FROM STDIN WITH (format 'program')"), 'COPY', 'the word in a string does not count');
  t.equal(statementKind('(select 1) union (select 2)'), 'SELECT');
  t.equal(statementKind(';; vacuum'), 'VACUUM');
  t.equal(statementKind('   '), null);
  t.equal(statementKind('-- only a comment'), null);
  t.same(statementKeywords('SELECT 1; drop table x; -- drop database y'), [['SELECT'], ['DROP', 'TABLE', 'X']]);
});

t.test('kinds match every statement of a text, whatever the quoting tricks', async (t) => {
  const rules = compileRules([
    { kinds: ['DROP', 'truncate'], action: 'deny' },
    { kinds: ['ALTER SYSTEM', 'COPY PROGRAM'], action: 'kill' },
    { kinds: ['DELETE FROM'], action: 'alert' },
  ], 'rw');
  const deny = (sql: string) => rules.check(sql).action;
  t.equal(deny('SELECT * FROM users'), 'allow');
  t.equal(deny("SELECT 'drop table users'"), 'allow', 'inside a string');
  t.equal(deny('SELECT 1 -- ; drop table x'), 'allow', 'inside a comment');
  t.equal(deny('SELECT "drop"'), 'allow');
  t.equal(deny('drop table users'), 'deny');
  t.equal(rules.check('drop table users').message, 'Blocked by Tollgate policy: DROP, truncate');
  t.equal(deny('/* hi */ TRUNCATE t'), 'deny');
  t.equal(deny('SELECT 1; DROP TABLE users'), 'deny', 'second statement');
  t.equal(deny('ALTER SYSTEM SET fsync = off'), 'kill');
  t.equal(deny("COPY (SELECT 1) TO PROGRAM 'sh -c id'"), 'kill');
  t.equal(deny('COPY t TO STDOUT'), 'allow');
  t.equal(deny('delete from t where id = 1'), 'alert');
  t.equal(deny('ALTER TABLE t OWNER TO x'), 'allow');
  // PostgreSQL (standard strings): the backslash does not escape, so DROP runs.
  t.equal(deny("SELECT 'a\\'; DROP TABLE x; --'"), 'deny');
  // MySQL: the backslash escapes the quote, so DROP runs in this one.
  t.equal(deny("SELECT 'it\\'s'; DROP TABLE x; SELECT 'y'"), 'deny');
  // PostgreSQL dollar quotes hide their content...
  t.equal(deny('SELECT $$; DROP TABLE x; $$'), 'deny', 'but MySQL reads $$ as an identifier, so this is still seen');
  t.equal(deny('DO $body$ BEGIN PERFORM 1; END $body$'), 'allow');
  // Nested comments (PostgreSQL) vs flat ones (MySQL): MySQL would run the DROP.
  t.equal(deny('/* /* */ DROP TABLE x; */ SELECT 1'), 'deny');
  // MySQL executable comments run.
  t.equal(deny('/*!50000 DROP TABLE x */'), 'deny');
  // MySQL needs a space after --: "1--1" is arithmetic, and the DROP after it runs.
  t.equal(deny('SELECT 1--1\n; DROP TABLE x'), 'deny');
  t.equal(deny('# mysql comment\nDROP TABLE x'), 'deny');
  // A kind given by the protocol inspector counts too.
  t.equal(rules.check('EXECUTE stmt1', { kind: 'drop' }).action, 'deny');
});

t.test('HTTP rules: methods and path globs', async (t) => {
  const rules = compileRules([
    { methods: ['delete'], path: '/api/users/*', action: 'deny', message: 'Deleting users is not allowed through Tollgate.' },
    { methods: ['POST', 'PUT'], path: '/admin/*', action: 'kill' },
    { path: '/metrics', action: 'alert' },
    { methods: ['GET'], pattern: 'export=all', action: 'deny' },
  ], 'web');
  t.equal(rules.check('DELETE /api/users/7', { method: 'DELETE', path: '/api/users/7' }).action, 'deny');
  t.equal(rules.check('DELETE /api/users/7', { method: 'DELETE', path: '/api/users/7' }).message, 'Deleting users is not allowed through Tollgate.');
  t.equal(rules.check('GET /api/users/7', { method: 'GET', path: '/api/users/7' }).action, 'allow');
  t.equal(rules.check('DELETE /api/groups/7', { method: 'DELETE', path: '/api/groups/7' }).action, 'allow');
  const k = rules.check('POST /admin/reset', { method: 'post', path: '/admin/reset' });
  t.equal(k.action, 'kill');
  t.equal(k.message, 'Blocked by Tollgate policy: POST|PUT /admin/*');
  t.equal(rules.check('GET /metrics', { method: 'GET', path: '/metrics' }).action, 'alert');
  t.equal(rules.check('GET /metricsx', { method: 'GET', path: '/metricsx' }).action, 'allow', 'path globs are anchored');
  t.equal(rules.check('/report?export=all', { method: 'GET', path: '/report' }).action, 'deny');
  t.equal(rules.check('/report?export=all', { method: 'POST', path: '/report' }).action, 'allow');
  t.equal(rules.check('DELETE /api/users/7').action, 'allow', 'a method rule needs a method');
  t.equal(globMatch('/a/*/c', '/a/b/c'), true);
  t.equal(globMatch('/a.b', '/aXb'), false, 'only * is special');
});

t.test('bad rules fail to compile with a clear error', async (t) => {
  let err: unknown = null;
  try { compileRules([{ pattern: 'ok', action: 'deny' }, { pattern: '(unclosed', action: 'deny' }], 'ops'); } catch (e) { err = e; }
  t.ok(err instanceof RuleCompileError, 'a RuleCompileError');
  t.match((err as Error).message, /^rules\[1\]\.pattern: not a valid regular expression/);
  t.equal((err as RuleCompileError).index, 1);
  t.throws(() => compileRules([{ pattern: '[z-a]', action: 'deny', roles: ['other'] }], 'ops'), RuleCompileError, 'also when the rule is for another role');
  t.throws(() => compileRules([{ action: 'deny' }], 'ops'), /rules\[0\]\.pattern: a rule needs a pattern, commands, kinds, methods or path/);
  t.throws(() => compileRules([{ pattern: '', action: 'deny' }], 'ops'), /empty pattern/);
  t.throws(() => compileRules([{ kinds: ['  '], action: 'deny' }], 'ops'), /rules\[0\]\.kinds\[0\]/);
  t.equal(compileRules([], 'ops').check('anything').action, 'allow');
});

t.test('engine.rulesFor gathers the rules of every policy covering the target and role', async (t) => {
  const h = await harness(t, {
    targets: [target('db1', 'medium', ['ro', 'rw']), target('web1', 'low')],
    policies: [
      { name: 'dbs', targets: ['db*'], requesters: ['devs'], approvers: ['leads'], rules: [{ kinds: ['DROP'], action: 'deny' }] },
      { name: 'ro-only', targets: ['*'], roles: ['ro'], requesters: ['devs'], approvers: ['leads'], rules: [{ kinds: ['INSERT', 'UPDATE', 'DELETE'], action: 'deny' }] },
      { name: 'all', targets: ['*'], requesters: ['devs'], rules: [{ pattern: 'pg_read_file', action: 'kill' }] },
    ],
  });
  t.same(h.engine.rulesFor('db1', 'rw').map((r) => r.action), ['deny', 'kill']);
  t.same(h.engine.rulesFor('db1', 'ro').length, 3);
  t.same(h.engine.rulesFor('web1', 'ops').map((r) => r.pattern), ['pg_read_file']);
  const ro = compileRules(h.engine.rulesFor('db1', 'ro'), 'ro');
  t.equal(ro.check('update t set a = 1').action, 'deny');
  t.equal(ro.check("select pg_read_file('/etc/shadow')").action, 'kill');
  t.equal(compileRules(h.engine.rulesFor('db1', 'rw'), 'rw').check('update t set a = 1').action, 'allow');
});

t.test('validatePolicies names the first bad policy setting; the engine refuses to start on it', async (t) => {
  const base = { name: 'p', targets: ['*'], roles: ['*'], requesters: [], approvers: [], onTimeout: 'deny' as const, escalateTo: [], rules: [] };
  t.equal(validatePolicies([base]), null);
  t.same(validatePolicies([base, { ...base, rules: [{ pattern: 'a', action: 'deny' }, { pattern: '(', action: 'kill' }] }]), {
    path: 'policies[1].rules[1].pattern', expected: 'not a valid regular expression (Invalid regular expression: /(/i: Unterminated group)',
  });
  t.equal(validatePolicies([{ ...base, hours: { days: ['mon'], from: '09:00', to: '17:00', tz: 'Mars/Olympus' } }])?.path, 'policies[0].hours.tz');
  t.equal(validatePolicies([{ ...base, hours: { days: ['mon'], from: '09:00', to: '25:00', tz: 'UTC' } }])?.path, 'policies[0].hours.to');
  t.equal(validatePolicies([{ ...base, hours: { days: ['mon'], from: '09:75', to: '10:00', tz: 'UTC' } }])?.path, 'policies[0].hours.from');
  await t.rejects(harness(t, { targets: [target('a', 'low')], policies: [{ name: 'x', rules: [{ pattern: '[', action: 'deny' }] }] }),
    /invalid policy configuration: policies\[0\]\.rules\[0\]\.pattern/);
});

t.test('kinds see statements run by other statements', async (t) => {
  const rules = compileRules([{ kinds: ['DELETE', 'DROP'], action: 'deny' }], 'rw');
  const d = (sql: string) => rules.check(sql).action;
  t.equal(d('WITH gone AS (DELETE FROM t RETURNING *) SELECT count(*) FROM gone'), 'deny');
  t.equal(d('WITH a AS (SELECT 1), b AS (SELECT 2) DELETE FROM t USING a'), 'deny');
  t.equal(d('WITH a AS (SELECT (1 + 2) AS x) SELECT * FROM a'), 'allow');
  t.equal(d('EXPLAIN ANALYZE DELETE FROM t'), 'deny');
  t.equal(d('explain (analyze, buffers) delete from t'), 'deny');
  t.equal(d('EXPLAIN SELECT 1'), 'allow');
  t.equal(d('PREPARE p (int) AS DELETE FROM t WHERE id = $1; EXECUTE p(1)'), 'deny');
  t.equal(d('PREPARE p AS SELECT 1'), 'allow');
  // Big inputs stay linear-ish: many parentheses do not blow up.
  const big = 'WITH a AS (SELECT ' + '('.repeat(20000) + '1' + ')'.repeat(20000) + ') SELECT 1';
  const t0 = Date.now();
  t.equal(d(big), 'allow');
  t.ok(Date.now() - t0 < 2000, 'fast on 40k parentheses');
});
