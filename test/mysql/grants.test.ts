/**
 * The MySQL grant parser (role grants from the config, put into GRANT statements): linear in its
 * input (the old regex took ~1 s on 2,000 spaces and ~4 s on 3,000), and it accepts exactly what
 * the old regular expressions accepted (checked against them on short strings, fixed seed).
 */
import t from 'tap';
import fc from 'fast-check';
import { parseGrant } from '../../protocols/mysql/provisioner.js';

// The previous implementation, kept here as the reference for what a grant is (small inputs only).
const OLD_PRIVS = /^[A-Za-z][A-Za-z _]*(\([A-Za-z0-9_, `]*\))?(\s*,\s*[A-Za-z][A-Za-z _]*(\([A-Za-z0-9_, `]*\))?)*$/;
const OLD_IDENT = '(`(?:[^`]|``)+`|[A-Za-z0-9_$]+|\\*)';
const OLD_OBJECT = new RegExp(`^((TABLE|FUNCTION|PROCEDURE)\\s+)?${OLD_IDENT}(\\.${OLD_IDENT})?$`, 'i');
function oldParseGrant(g: string): { privs: string; object: string } | null {
  const m = /^\s*(.+?)\s+ON\s+(.+?)\s*$/i.exec(g);
  if (!m) return null;
  const privs = m[1]!.trim();
  const object = m[2]!.trim();
  if (!OLD_PRIVS.test(privs) || !OLD_OBJECT.test(object)) return null;
  if (/\bGRANT\s+OPTION\b|\bWITH\b/i.test(privs)) return null;
  return { privs, object };
}

t.test('same answers as the old regular expressions (fixed seed)', async (t) => {
  const chars = [' ', ' ', '\t', '\n', '\u00a0', 'O', 'N', 'o', 'n', 'S', 'E', 'L', 'C', 'T', 'A', 'B', 'W', 'I', 'H', 'G', 'R', 'P',
    '(', ')', ',', '`', '.', '*', 'a', '_', '$', '1', ';'];
  const words = ['SELECT', ' ON ', 'INSERT', ', ', 'TABLE ', 'shop.*', '`my db`', '.', '(id, name)', 'WITH', 'GRANT OPTION', ' on ', '``'];
  const piece = fc.oneof(fc.constantFrom(...chars), fc.constantFrom(...words));
  const noise = fc.array(piece, { maxLength: 14 }).map((a) => a.join(''));
  // Near-valid grants: privileges, ON, an object, each with some noise mixed in.
  const priv = fc.constantFrom('SELECT', 'INSERT', 'SHOW VIEW', 'EXECUTE', 'SELECT (id, `na``me`)', 'GRANT OPTION', 'WITH', 'sel_ect');
  const obj = fc.constantFrom('shop.*', '*.*', '`my db`.`t`', 'TABLE shop.t', 'PROCEDURE shop.refund', 'shop', '`a', 'a.b.c', '$x.y');
  const sep = fc.constantFrom(', ', ',', ' ,\t', '\n, ');
  const near = fc.tuple(fc.array(priv, { minLength: 1, maxLength: 3 }), sep, fc.constantFrom(' ON ', '  on\t', '\nON ', 'ON'), obj, fc.constantFrom('', ' ', '\n', ' x'), noise)
    .map(([ps, sp, on, o, tail, n]) => `${ps.join(sp)}${on}${o}${tail}${n.length % 3 === 0 ? n : ''}`);
  let accepted = 0;
  const differ: string[] = [];
  fc.assert(fc.property(fc.oneof(noise, near), (g) => {
    const got = parseGrant(g);
    if (got) accepted++;
    if (JSON.stringify(got) !== JSON.stringify(oldParseGrant(g))) differ.push(JSON.stringify(g));
  }), { seed: 25, numRuns: 6000 });
  t.same(differ, [], 'no input where the answers differ');
  t.ok(accepted > 300, `the corpus holds valid grants too (${accepted} of 6000)`);
});

t.test('linear: hostile grant strings parse in bounded time', async (t) => {
  const slow: string[] = [];
  const cases: [string, string][] = [
    ['2,000 spaces (the issue)', ' '.repeat(2000)],
    ['3,000 spaces (the issue)', ' '.repeat(3000)],
    ['100k spaces', ' '.repeat(100_000)],
    ['ON between spaces', `${' '.repeat(50_000)}ON${' '.repeat(50_000)}`],
    ['many ONs', ' ON'.repeat(30_000)],
    ['privilege then spaces', `SELECT${' '.repeat(100_000)}(`],
    ['privileges without a comma', `SELECT ON ${'a '.repeat(50_000)}`],
    ['commas and blanks', `A${' ,\t'.repeat(30_000)}! ON x`],
    ['GRANT then blanks', `GRANT${' '.repeat(100_000)}ON x`],
    ['unterminated quote', `SELECT ON \`${'``'.repeat(50_000)}`],
    ['TABLE then blanks', `SELECT ON TABLE${' '.repeat(100_000)}x!`],
    ['column list', `SELECT (${'a,'.repeat(50_000)} ON x`],
  ];
  for (const [name, g] of cases) {
    const t0 = performance.now();
    parseGrant(g);
    const ms = performance.now() - t0;
    // Linear work on 100k characters takes a few ms; the old regex needed seconds for 3,000.
    if (ms > 250) slow.push(`${name}: ${ms.toFixed(0)} ms`);
  }
  t.same(slow, [], 'every hostile case under 250 ms');
  t.same(parseGrant(`  SELECT ,\tINSERT (a, \`b\`)   ON   shop.*  `), { privs: 'SELECT ,\tINSERT (a, `b`)', object: 'shop.*' });
  t.equal(parseGrant('SELECT\nFROM ON x'), null, 'no line breaks inside the privileges');
});
