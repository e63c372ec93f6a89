/**
 * Hostile identities against the directory: directory-account leases (protocols/directory-leases.ts,
 * minted for RDP sessions, `credentials: {mode: directory-account}`) on a real Samba AD DC, for
 * identities whose names hold quotes, `*`, `(`, `)`, `\`, NUL, newlines, right-to-left marks, DN
 * and filter syntax and 1,000 characters. Each session gets an account with a safe sAMAccountName
 * (tg-<letters and digits>-<5>, at most 20) at CN=<it>,CN=Users,<base> and works (every one of
 * these names can be made safe, so a refusal fails the test, its reason shown); the name is kept
 * only as the displayName value. The account is gone after the
 * session and, at the end, the whole base holds exactly the objects it held before: no entry that
 * carries the Tollgate account marker, no tg- name, nothing named after a hostile identity.
 * The RDP target is the fake target of the RDP tests (it records the login the gateway made). One DC
 * for the whole file (DC starts take a minute or more and are serialized machine-wide).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import type { ClientInfo } from '../../protocols/rdp/info.js';
import { MINTED_NAME_RE } from '../../protocols/directory-leases.js';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { ADMIN, BASE_DN, DOMAIN, haveSamba, startSambaDc, type SambaDc } from '../support/samba.js';
import { fakeRdpTarget } from '../rdp/fake-target.js';
import { login } from '../rdp/client.js';
import { waitFor } from '../rdp/support.js';

const why = haveSamba();
if (why) throw new Error(`the Samba AD DC cannot run here: ${why}`);

const GROUP = 'tg-hostile-ops';
/** Names as the IdP could send them (a subject with control characters is refused at sign-in; a name is not). */
const HOSTILE: { key: string; name: string }[] = [
  { key: 'quotes', name: `o'reilly";drop "x\\` },
  { key: 'filter', name: '*)(objectClass=*))(|(cn=*' },
  { key: 'dn', name: 'CN=Administrator,CN=Users,DC=tg,DC=test' },
  { key: 'escapes', name: 'x\\5c\\00\\2a\\,CN=Domain Admins+sn=y;z<>#' },
  { key: 'nul', name: 'nul\u0000root' },
  { key: 'newlines', name: 'evil\nadmin\r\ndn: CN=Domain Admins,CN=Users,DC=tg,DC=test\nchangetype: delete' },
  { key: 'rtl', name: '\u202enimda\u200f\u2066x' },
  { key: 'thousand', name: 'l'.repeat(1000) },
  { key: 'only-syntax', name: '*()\\\u0000\n' },
  { key: 'at', name: '@evil.test' },
  { key: 'leading', name: ' #lead trail ' },
];
/** Fragments a name taken over unsanitised would put into a DN or an account name. */
const FRAGMENTS = ['reilly', 'drop', 'objectclass', 'administrator,', 'domain admins,', 'nimda', 'evil', 'lllllllllllll', 'changetype'];

/** Every DN in the domain naming context, as Administrator over LDAPS (paged: AD returns at most 1,000 a page). */
function allDns(dc: SambaDc, filter = '(objectClass=*)'): string[] {
  const r = spawnSync('ldapsearch', ['-x', '-LLL', '-o', 'ldif-wrap=no', '-E', 'pr=500/noprompt', '-H', 'ldaps://127.0.0.1', '-D', ADMIN, '-w', dc.adminPassword, '-b', BASE_DN, '-s', 'sub', filter, '1.1'],
    { encoding: 'utf8', env: { ...process.env, LDAPTLS_REQCERT: 'never' } });
  if (r.status !== 0) throw new Error(`ldapsearch ${filter} failed: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => /^dn::? /.test(l)).map((l) => l.startsWith('dn:: ') ? Buffer.from(l.slice(5), 'base64').toString('utf8') : l.slice(4)).sort();
}

let dc: SambaDc;
let tg: TestGateway;
let fake: Awaited<ReturnType<typeof fakeRdpTarget>>;
const infos: ClientInfo[] = [];
let before: string[] = [];

t.before(async () => {
  dc = await startSambaDc();
  dc.tool(['group', 'add', GROUP]);
  before = allDns(dc);
  fake = await fakeRdpTarget({ get cert() { return tg.gw.tls.cert; }, get key() { return tg.gw.tls.key.reveal(); } }, { width: 800, height: 600 }, () => {}, (i) => infos.push(i));
  tg = await startTestGateway({
    listeners: ['rdp'],
    targets: [{
      name: 'hd-win', protocol: 'rdp', address: `127.0.0.1:${fake.port}`, credentials: { mode: 'directory-account' },
      options: { nla: false, connectTimeout: 10 }, roles: [{ name: 'admin', directoryGroups: [GROUP] }],
    }],
    extra: { directory: { url: 'ldaps://127.0.0.1', bind: { dn: ADMIN, password: { value: dc.adminPassword } }, baseDn: BASE_DN, tls: { verify: false } } },
  });
});
t.teardown(async () => {
  await tg?.close();
  await fake?.close();
  await dc?.stop();
});

t.test('hostile identity names: safe sAMAccountNames and DNs, sessions work, the accounts go', async (t) => {
  const { port } = tg.listener('rdp');
  for (const h of HOSTILE) {
    const now = Date.now();
    // erin signs in (her API token exists); the IdP now names her this.
    await tg.store.upsertIdentity({ sub: 'erin', email: 'erin@test', name: h.name, groups: ['engineers'], firstSeen: now, lastSeen: now });
    const grant = await tg.grant('erin', 'hd-win', 'admin');
    const s = await tg.secret('erin', grant.id);
    const seen = infos.length;
    const c = await login(port, s.username, s.secret);
    c.sock.on('error', () => {});
    c.sock.resume();
    const outcome = await waitFor(`${h.key}: a login at the target or the session's end`, async () => {
      if (infos[seen]) return { info: infos[seen]! };
      const ended = (await tg.store.listSessions({ grantId: grant.id })).find((x) => x.state === 'ended');
      return ended ? { ended } : null;
    }, 60_000);
    if (!('info' in outcome)) {
      // Every name here can be made safe: a refusal is a failure (its reason shown), and leaves nothing.
      t.fail(`${h.key}: the session was refused: ${outcome.ended?.endReason}`);
      t.same((await tg.store.listLeases({ grantId: grant.id })).filter((l) => l.state !== 'revoked'), [], `${h.key}: no live lease`);
      c.sock.destroy();
      continue;
    }
    const info = outcome.info!;
    const user = info.userName;
    t.match(user, MINTED_NAME_RE, `${h.key}: the sAMAccountName is tg-<letters and digits>-<5> (${user})`);
    t.ok(user.length <= 20, `${h.key}: within AD's 20 characters`);
    t.equal(info.domain, DOMAIN, `${h.key}: the NetBIOS domain`);
    const shown = dc.tool(['user', 'show', user]);
    t.match(shown, new RegExp(`^dn: CN=${user},CN=Users,${BASE_DN}$`, 'm'), `${h.key}: created at CN=${user},CN=Users`);
    t.ok(dc.tool(['group', 'listmembers', GROUP]).split('\n').map((l) => l.trim()).includes(user), `${h.key}: in the role's group`);
    t.notOk(dc.tool(['group', 'listmembers', 'Domain Admins']).includes(user), `${h.key}: not a domain admin`);
    const pw = info.password.reveal();
    t.equal(dc.bind(user, pw).code, 0, `${h.key}: the minted password binds`);
    c.sock.destroy();
    await waitFor(`${h.key}: the lease to be revoked`, async () => (await tg.store.listLeases({ grantId: grant.id })).find((l) => l.kind === 'directory-account' && l.state === 'revoked'), 30_000);
    t.equal(dc.bind(user, pw).code, 49, `${h.key}: refused after the session`);
    t.same(allDns(dc, `(sAMAccountName=${user})`), [], `${h.key}: the account is deleted`);
  }
});

t.test('the DC holds no stray object afterwards', async (t) => {
  t.same(await tg.store.listLeases({ state: ['pending', 'active', 'revoking'] }), [], 'no live lease');
  const after = allDns(dc);
  t.same(after.filter((d) => !before.includes(d)), [], 'no entry in the whole base that was not there before');
  t.same(before.filter((d) => !after.includes(d)), [], 'and none removed (Administrator, Domain Admins, the group are all still there)');
  t.same(allDns(dc, '(description=Tollgate session account*)'), [], 'no entry carries the Tollgate account marker');
  t.same(allDns(dc, '(|(cn=tg-*)(sAMAccountName=tg-*)(displayName=Tollgate:*))').filter((d) => d !== `CN=${GROUP},CN=Users,${BASE_DN}`), [], 'no tg- account or Tollgate: display name');
  t.same(after.filter((d) => FRAGMENTS.some((f) => d.toLowerCase().includes(f)) && !before.includes(d)), [], 'nothing named after a hostile identity');
});
