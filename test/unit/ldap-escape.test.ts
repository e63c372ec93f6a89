/**
 * Hostile values never reach an LDAP DN or filter unescaped: RFC 4514 DN values, RFC 4515 filter
 * values, the DN parser that checks configured and stored DNs, and minted account names.
 */
import t from 'tap';
import fc from 'fast-check';
import { dnValue, eq, filterValue, isChildOf, isDn, rdn, sameDn, splitDn } from '../../protocols/ldap-escape.js';
import { MINTED_NAME_RE, accountName } from '../../protocols/directory-leases.js';

const USERS = 'CN=Users,DC=tg,DC=test';

t.test('RFC 4514: DN special characters are escaped', async (t) => {
  t.equal(dnValue('a,b'), 'a\\,b');
  t.equal(dnValue('x+y=z'), 'x\\+y\\=z');
  t.equal(dnValue('"q";<a>\\'), '\\"q\\"\\;\\<a\\>\\\\');
  t.equal(dnValue('#lead'), '\\#lead');
  t.equal(dnValue(' both '), '\\ both\\ ');
  t.equal(dnValue('mid dle#'), 'mid dle#');
  t.equal(dnValue('nul\0cr\r'), 'nul\\00cr\\0d');
  t.equal(rdn('CN', 'evil,CN=Domain Admins'), 'CN=evil\\,CN\\=Domain Admins');
  t.throws(() => rdn('CN)(x', 'v'), /not an attribute name/);
});

t.test('an escaped value stays one RDN directly below its parent, whatever it is', async (t) => {
  fc.assert(fc.property(fc.string({ minLength: 1, maxLength: 40, unit: 'binary' }), (v) => {
    const dn = `${rdn('CN', v)},${USERS}`;
    const parts = splitDn(dn);
    return isDn(dn) && parts !== null && parts.length === 4 && isChildOf(dn, USERS) && !sameDn(dn, USERS);
  }), { numRuns: 2000 });
  // Unescaped, the same value would have climbed out of CN=Users.
  t.notOk(isChildOf(`CN=x,CN=Admins,${USERS.slice(9)},${USERS}`, USERS));
  t.notOk(isChildOf(`CN=x,CN=Builtin,DC=tg,DC=test`, USERS));
});

t.test('RFC 4515: filter metacharacters are escaped', async (t) => {
  t.equal(filterValue('*)(uid=*'), '\\2a\\29\\28uid=\\2a');
  t.equal(filterValue('a\\b\0'), 'a\\5cb\\00');
  t.equal(eq('mail', 'x*)(|(objectClass=*)'), '(mail=x\\2a\\29\\28|\\28objectClass=\\2a\\29)');
  t.throws(() => eq('mail)(x', 'v'), /not an attribute name/);
  fc.assert(fc.property(fc.string({ maxLength: 40, unit: 'binary' }), (v) => {
    const f = eq('mail', v);
    // One filter: only the outer parentheses, no wildcard, every backslash starts a hex pair.
    const inner = f.slice(6, -1);
    return f.startsWith('(mail=') && f.endsWith(')') && !/[()*\0]/.test(inner) && !/\\(?![0-9a-f]{2})/.test(inner);
  }), { numRuns: 2000 });
});

t.test('DN parsing refuses broken DNs and compares case-insensitively', async (t) => {
  t.ok(isDn(USERS));
  t.notOk(isDn(''));
  t.notOk(isDn('just a name'));
  t.notOk(isDn('CN=a\\'));
  t.notOk(isDn('CN=a\\4,DC=x'));
  t.notOk(isDn('CN=a,,DC=x'));
  t.notOk(isDn('CN=a\nDC=x'));
  t.ok(sameDn('cn=users, dc=TG,dc=test', USERS));
  t.notOk(sameDn('CN=Users,DC=tg', USERS));
});

t.test('minted names: tg-<identity>-<random>, at most 20 characters, whatever the identity', async (t) => {
  fc.assert(fc.property(fc.string({ maxLength: 200, unit: 'binary' }), (who) => {
    const n = accountName(who);
    return n.length <= 20 && MINTED_NAME_RE.test(n);
  }), { numRuns: 2000 });
  t.match(accountName('Alice.Example@corp.test'), /^tg-aliceexampl-[a-z0-9]{5}$/);
  t.match(accountName('*)(cn=*'), /^tg-cn-[a-z0-9]{5}$/);
  t.match(accountName(',,,'), /^tg-user-[a-z0-9]{5}$/);
  t.not(accountName('bob'), accountName('bob'));
});
