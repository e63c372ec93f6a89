/**
 * Command rules over what the shell runs and the SQL a statement runs (policies/rules.ts with
 * policies/shell.ts): `commands` rules, patterns on normalized text, uncertainty and strict mode,
 * PREPARE … FROM / EXECUTE IMMEDIATE texts, and the policy option `strictRules`.
 */
import t from 'tap';
import { compileRules, sqlReading } from '../../policies/rules.js';
import { validatePolicies } from '../../policies/engine.js';
import type { CommandRuleConfig } from '../../policies/config.js';
import { harness, target } from './helpers.js';

const DEMO: CommandRuleConfig[] = [{ pattern: '\\b(shutdown|reboot|halt|poweroff)\\b', action: 'deny', message: 'no power actions' }];

t.test('pattern rules see the words the shell runs, not only the characters typed', async (t) => {
  const rules = compileRules(DEMO, 'ops');
  const d = (s: string, kind = 'shell') => rules.check(s, { kind }).action;
  t.equal(d('shutdown -h now'), 'deny');
  t.equal(d('sh"utdown" -h now'), 'deny', 'quotes removed');
  t.equal(d('s\\hutdown -h now'), 'deny', 'backslash removed');
  t.equal(d("$'\\x73hutdown' -h now"), 'deny', "$'…' decoded");
  t.equal(d("r''eb\"\"oot", 'exec'), 'deny', 'exec commands too');
  t.equal(d('ls -la'), 'allow');
  // Anchored patterns match each command of the line and what wrappers run.
  const anchored = compileRules([{ pattern: '^shutdown\\b', action: 'kill' }], 'ops');
  t.equal(anchored.check('sudo /sbin/sh"utdown" -h now', { kind: 'shell' }).action, 'kill');
  t.equal(anchored.check('echo hi; env X=1 timeout 5 shutdown', { kind: 'exec' }).action, 'kill');
  t.equal(anchored.check('echo shutdown', { kind: 'shell' }).action, 'allow', 'an argument is not a command');
  // SQL and HTTP texts are not read as shell.
  t.equal(compileRules([{ pattern: '^shutdown', action: 'deny' }], 'ops').check("select 'x'; sh\"utdown\"", { kind: 'SELECT' }).action, 'allow');
});

t.test('commands rules match the command name exactly, through quoting and wrappers', async (t) => {
  const rules = compileRules([{ commands: ['shutdown', 'reboot'], action: 'deny', message: 'no power actions' }], 'ops');
  const d = (s: string, kind = 'shell') => rules.check(s, { kind }).action;
  for (const line of ['shutdown -h now', '/sbin/shutdown', 'sh"utdown"', 'command shutdown', 'exec shutdown', 'env X=1 shutdown',
    'sudo shutdown', 'sudo -u root -- /usr/sbin/reboot', 'nohup shutdown &', 'timeout 5 shutdown', 'echo a && (cd /; { reboot; })',
    "bash -c 'shutdown -h now'", 'eval "re""boot"', 'echo $(reboot)', 'sh{u,}tdown', "sh <<< 'reboot'", 'f() { reboot; }', 'find / -exec reboot \\;']) {
    t.equal(d(line), 'deny', line);
  }
  t.equal(d('echo shutdown; man reboot'), 'allow', 'arguments are not commands');
  t.equal(d('Shutdown'), 'allow', 'names are case-sensitive, like file names');
  t.equal(d('shutdown-helper'), 'allow', 'exact names only');
  t.equal(rules.check('shutdown', { kind: 'DROP' }).action, 'allow', 'commands rules never match SQL');
  t.equal(rules.check('shutdown', { method: 'GET', path: '/shutdown' }).action, 'allow', 'nor HTTP');
  t.equal(rules.check('shutdown').message, '', 'no context: not shell');
  t.equal(rules.check('reboot', { kind: 'exec' }).message, 'no power actions');
  t.same(compileRules([{ commands: ['rm'], action: 'deny' }], 'ops').check('rm -rf x', { kind: 'exec' }).message, 'Blocked by Tollgate policy: rm');
  t.throws(() => compileRules([{ commands: [], action: 'deny' }], 'ops'), /rules\[0\]\.commands: at least one command name/);
  t.throws(() => compileRules([{ commands: ['/sbin/shutdown'], action: 'deny' }], 'ops'), /rules\[0\]\.commands\[0\]: a command name such as shutdown/);
  t.throws(() => compileRules([{ commands: ['ok', 'two words'], action: 'deny' }], 'ops'), /rules\[0\]\.commands\[1\]/);
  const base = { name: 'p', targets: ['*'], roles: ['*'], requesters: [], approvers: [], onTimeout: 'deny' as const, escalateTo: [] };
  t.same(validatePolicies([{ ...base, rules: [{ commands: ['a/b'], action: 'deny' }] }])?.path, 'policies[0].rules[0].commands[0]');
});

t.test('uncertain lines: let through and flagged without strict rules, refused with them', async (t) => {
  const loose = compileRules(DEMO, 'ops');
  const strict = compileRules(DEMO, 'ops', { strict: true });
  const line = 'x=shut; ${x}down -h now';
  t.same(loose.check(line, { kind: 'shell' }), { action: 'allow', message: '', uncertain: ['${x}'] });
  const s = strict.check(line, { kind: 'shell' });
  t.equal(s.action, 'deny');
  t.equal(s.strict, true);
  t.equal(s.message, 'Tollgate: this line uses ${x} which the gateway cannot check; strict rules are on for this role');
  t.same(s.uncertain, ['${x}']);
  for (const l of ['eval "$c"', '`printf shut`down -h now', '$(printf shut)down -h now', 'echo $(date)', 'ls *.log', 'bash x.sh', '. ./x']) {
    t.equal(strict.check(l, { kind: 'shell' }).action, 'deny', `strict: ${l}`);
    t.equal(loose.check(l, { kind: 'shell' }).action, 'allow', `loose: ${l}`);
    t.ok(loose.check(l, { kind: 'shell' }).uncertain?.length, `flagged: ${l}`);
  }
  t.match(strict.check('a $(b) ${c} `d` $e', { kind: 'exec' }).message, /uses \$\(…\), \$\{c\}, `…` and 1 more which/);
  t.equal(strict.check('echo hello', { kind: 'shell' }).action, 'allow', 'a line it can read is judged by the rules alone');
  t.equal(strict.check('shutdown $x', { kind: 'shell' }).message, 'no power actions', 'a real match keeps its own message');
  // The protocol's own uncertainty (keys the line editor does not follow) counts too.
  t.equal(strict.check('ls', { kind: 'shell', uncertain: [{ what: 'editing keys', scope: 'command' }] }).action, 'deny');
});

t.test('strict mode: the strictest rule that could apply; commands rules ignore unknown arguments', async (t) => {
  const rules = compileRules([
    { pattern: 'passwd', action: 'alert' },
    { commands: ['shutdown'], action: 'kill', message: 'bye' },
    { kinds: ['DROP'], action: 'deny' },
    { methods: ['DELETE'], path: '/x', action: 'kill' },
  ], 'ops', { strict: true });
  const a = rules.check('$cmd now', { kind: 'shell' });
  t.equal(a.action, 'kill', 'an unknown command word could be shutdown');
  t.equal(a.rule?.commands?.[0], 'shutdown');
  t.equal(rules.check('ls $HOME', { kind: 'shell' }).action, 'alert', 'an unknown argument: only the pattern rule could apply');
  const cmdOnly = compileRules([{ commands: ['shutdown'], action: 'deny' }], 'ops', { strict: true });
  t.same(cmdOnly.check('ls $HOME *.log', { kind: 'shell' }), { action: 'allow', message: '' }, 'not flagged where no rule could apply');
  t.equal(cmdOnly.check('$HOME/bin/x', { kind: 'shell' }).action, 'deny');
  const none = compileRules([], 'ops', { strict: true });
  t.same(none.check('$(anything)', { kind: 'shell' }), { action: 'allow', message: '' }, 'a role without rules has nothing to be strict about');
  const http = compileRules([{ methods: ['POST'], path: '/admin/*', action: 'deny' }], 'ops', { strict: true });
  t.equal(http.check('GET /x', { method: 'GET', path: '/x' }).action, 'allow');
});

t.test('SQL: PREPARE … FROM and EXECUTE IMMEDIATE texts are checked like queries', async (t) => {
  const rules = compileRules([{ kinds: ['DROP', 'TRUNCATE'], action: 'deny', message: 'no drops' }, { pattern: 'secret_table', action: 'kill' }], 'rw');
  const d = (sql: string) => rules.check(sql, { kind: 'PREPARE' }).action;
  t.equal(d("PREPARE s FROM 'DROP TABLE t'"), 'deny');
  t.equal(d("prepare `my stmt` from 'drop table t'"), 'deny');
  t.equal(d("PREPARE s FROM 'DR' 'OP TABLE t'"), 'deny', 'adjacent literals are one string');
  t.equal(d("PREPARE s FROM _utf8mb4'TRUNCATE t'"), 'deny', 'character set introducer');
  t.equal(d("PREPARE s FROM 'SELECT 1'; EXECUTE IMMEDIATE 'drop database x'"), 'deny');
  t.equal(d("/*!PREPARE s FROM 'DROP TABLE t' */"), 'deny', 'inside an executable comment');
  t.equal(d("PREPARE s FROM 'SELECT * FROM secret_table'"), 'kill', 'patterns see the text too');
  t.equal(d("PREPARE s FROM 'SELECT ''DROP TABLE t'''"), 'allow', 'a string inside the prepared text stays a string');
  t.equal(d("PREPARE s FROM 'SELECT 1'"), 'allow');
  t.same(sqlReading("PREPARE s FROM 'a\\'b'").texts, ["a'b"], 'with backslash escapes (without them it is not one literal)');
  t.same(sqlReading("PREPARE s FROM 'a\\\\' 'b'").texts, ['a\\b', 'a\\\\b'], 'both backslash readings where both are literals');
  const loose = rules.check('PREPARE s FROM @q', { kind: 'PREPARE' });
  t.same(loose, { action: 'allow', message: '', uncertain: ['PREPARE s FROM @q'] }, 'a variable: uncertain');
  const strict = compileRules([{ kinds: ['DROP'], action: 'deny' }], 'rw', { strict: true });
  const s = strict.check("PREPARE s FROM CONCAT('DR', 'OP TABLE t')", { kind: 'PREPARE' });
  t.equal(s.action, 'deny');
  t.equal(s.message, "Tollgate: this statement uses PREPARE s FROM CONCAT('DR', 'OP TABLE t') which the gateway cannot check; strict rules are on for this role");
  t.match(strict.check(`PREPARE s FROM CONCAT(${"'x', ".repeat(20)}'y')`).message, /uses PREPARE s FROM CONCAT\('x', 'x', 'x', 'x', 'x… which/, 'long expressions are shortened');
  t.equal(strict.check('EXECUTE IMMEDIATE @q').action, 'deny');
  t.equal(strict.check("DO $$BEGIN EXECUTE 'DR' || 'OP TABLE t2'; END$$").message.includes('a DO block'), true, 'a PostgreSQL DO block is uncertain');
  t.equal(strict.check("DO LANGUAGE plpgsql 'BEGIN NULL; END'").action, 'deny');
  t.equal(strict.check('SELECT 1').action, 'allow');
  t.equal(compileRules([{ kinds: ['DROP'], action: 'deny' }], 'rw').check('DO $$BEGIN NULL; END$$').action, 'allow', 'without strict rules a DO block runs (the server refuses DDL in it)');
});

t.test('engine.strictRulesFor: a policy with strictRules covers its targets and roles', async (t) => {
  const h = await harness(t, {
    targets: [target('web1', 'low', ['ops', 'dev']), target('web2', 'low', ['ops'])],
    policies: [
      { name: 'strict-ops', targets: ['web1'], roles: ['ops'], requesters: ['devs'], strictRules: true, rules: DEMO },
      { name: 'rest', targets: ['*'], requesters: ['devs'], rules: [] },
    ],
  });
  t.equal(h.engine.strictRulesFor('web1', 'ops'), true);
  t.equal(h.engine.strictRulesFor('web1', 'dev'), false);
  t.equal(h.engine.strictRulesFor('web2', 'ops'), false);
  await t.rejects(harness(t, { targets: [target('a', 'low')], policies: [{ name: 'x', strictRules: 'yes' }] }), /strictRules/);
});
