/** The psql-script splitter of the extended-protocol run: what psql would send, what it leaves out. */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { splitPsqlScript } from './script.js';
import { SQL_DIR } from './harness.js';

t.test('statements, quoting, parentheses, comments', async (t) => {
  const r = splitPsqlScript([
    '-- leading comment',
    "SELECT 'a;b', E'c\\';d', \"x;y\" FROM t;",
    'CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;',
    'CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO u VALUES (1); INSERT INTO u VALUES (2));',
    '/* block /* nested; */ still */ SELECT 2;',
    'SELECT 3 -- trailing; comment',
    ';',
    '',
  ].join('\n'));
  t.same(r.statements.map((s) => [s.line, s.text]), [
    [2, "SELECT 'a;b', E'c\\';d', \"x;y\" FROM t"],
    [3, 'CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql'],
    [4, 'CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO u VALUES (1); INSERT INTO u VALUES (2))'],
    [5, '/* block /* nested; */ still */ SELECT 2'],
    [6, 'SELECT 3 -- trailing; comment\n'],
  ]);
  t.same(r.skipped, []);
});

t.test('psql-only parts are left out with a reason', async (t) => {
  const r = splitPsqlScript([
    '\\set VERBOSITY terse',
    '\\set n 5',
    'SELECT :n;',
    "SELECT :'n';",
    'SELECT 1::int, a[1:2] FROM t;',
    'SELECT 1 AS one \\gset',
    'SELECT :one;',
    '\\if :one',
    'SELECT 7;',
    '\\endif',
    'SELECT 8;',
    'SELECT 9 \\g',
    'SELECT 10',
  ].join('\n'));
  t.same(r.statements.map((s) => s.text), ['SELECT 1::int, a[1:2] FROM t', 'SELECT 8']);
  t.same(r.skipped.map((s) => `${s.line}:${s.why}`), [
    '1:psql meta-command \\set', '2:psql meta-command \\set', '3:uses a psql variable', '4:uses a psql variable',
    '6:sent by psql \\gset', '7:uses a psql variable', '8:psql meta-command \\if', '9:inside a psql \\if block',
    '10:psql meta-command \\endif', '12:sent by psql \\g', '13:unterminated statement at the end (psql does not send it)',
  ]);
});

t.test('COPY FROM stdin keeps its data; line numbers go on after it', async (t) => {
  const r = splitPsqlScript('COPY x (a, b) FROM stdin;\n1\tone\n2\t\\N\n\\.\nSELECT 1;\n');
  t.same(r.statements, [
    { line: 1, text: 'COPY x (a, b) FROM stdin', copyData: '1\tone\n2\t\\N\n' },
    { line: 5, text: 'SELECT 1' },
  ]);
});

t.test('the committed regression files split into many statements', async (t) => {
  for (const name of ['copy2', 'plpgsql', 'rules']) {
    const r = splitPsqlScript(readFileSync(join(SQL_DIR, `${name}.sql`), 'utf8'));
    t.ok(r.statements.length > 100, `${name}: ${r.statements.length} statements, ${r.skipped.length} psql-only parts`);
    t.notOk(r.statements.some((s) => /^\\/.test(s.text)), `${name}: no meta-command sent as SQL`);
  }
  const copy2 = splitPsqlScript(readFileSync(join(SQL_DIR, 'copy2.sql'), 'utf8'));
  t.ok(copy2.statements.filter((s) => s.copyData !== undefined).length >= 20, 'copy2: COPY FROM stdin with data');
});
