/**
 * Failed secret attempts are throttled per source address: after gateway.maxFailures (10) wrong
 * secrets within 5 minutes, that address is refused for the cooldown - on every protocol, before
 * any secret is looked up, so a right secret typed meanwhile is not consumed and works after the
 * cooldown. Real psql, ssh and mariadb against one gateway; the injected clock ends the cooldown.
 */
import t from 'tap';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { ManualClock } from '../../policies/clock.js';
import { startTestGateway } from '../support/gateway.js';
import { havePostgres, runClient as runPg, startTestCluster } from '../support/pg.js';
import { runClient as runSsh, SSH_OPTS } from '../support/sshd.js';
import { run as runMariadb } from '../support/mariadb.js';
import { rfbLogin } from '../vnc/client.js';
import { closedWith, login as rdpLogin } from '../rdp/client.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required');
} else {
  const pgc = await startTestCluster(t);
  const clock = new ManualClock(Date.now());
  const alerts = join(pgc.dir, 'alerts.jsonl');
  const unreachable = '127.0.0.1:9'; // never dialled: no wrong secret gets that far
  const tg = await startTestGateway({
    clock,
    targets: [
      pgc.target,
      { name: 'web01', protocol: 'ssh', address: unreachable, roles: [{ name: 'user' }], credentials: { mode: 'ephemeral-account', admin: { username: 'root', password: { value: 'x' } } } },
      { name: 'app-db', protocol: 'mysql', address: unreachable, roles: [{ name: 'read', grants: ['SELECT ON app.*'] }], credentials: { admin: { user: 'root', password: { value: 'x' } } } },
    ],
    listeners: ['postgres', 'ssh', 'mysql', 'vnc', 'rdp'],
    extra: { notify: { command: ['sh', '-c', `cat >> '${alerts}'`] } },
  });
  t.teardown(() => tg.close());
  const pgPort = tg.listener('postgres').port;
  const psql = (password: string, sql = 'SELECT 40 + 2') => runPg('psql', ['-X', '-A', '-t', `host=127.0.0.1 port=${pgPort} user=prod-db dbname=app sslmode=require`, '-c', sql], { env: { PGPASSWORD: password } });
  const ssh = (secret: string, bind?: string) => runSsh(secret, 'ssh', ['-p', String(tg.listener('ssh').port), ...(bind ? ['-b', bind] : []), 'web01@127.0.0.1', 'true'],
    { extraOpts: [...SSH_OPTS, '-o', 'NumberOfPasswordPrompts=1'], timeoutMs: 20_000 });
  const throttled = /too many failed attempts; try again in 300 s/;

  const grant = await tg.grant('alice', 'prod-db', 'read');
  const right = await tg.secret('alice', grant.id);
  const secretRecord = async () => (await tg.store.listConnectionSecrets({ grantId: grant.id }))[0]!;

  t.test('ten wrong secrets are refused as wrong; the eleventh attempt is throttled', async (t) => {
    for (let i = 1; i <= 10; i++) {
      const r = await psql(`wrong-${i}`);
      t.match(r.stderr, /password authentication failed for user "prod-db"/, `attempt ${i}: a wrong secret`);
    }
    const r = await psql('wrong-11');
    t.not(r.code, 0);
    t.match(r.stderr, throttled, `psql: ${r.stderr.trim()}`);
  });

  t.test('during the cooldown a right secret is refused without being consumed', async (t) => {
    const r = await psql(right.secret);
    t.not(r.code, 0, 'refused');
    t.match(r.stderr, throttled);
    const rec = await secretRecord();
    t.equal(rec.usedAt, null, 'the single-use secret is still unused');
    t.equal(rec.uses, 0);
  });

  t.test('the throttle covers every protocol from that address, and only that address', async (t) => {
    const s = await ssh('wrong-ssh');
    t.match(s.stderr, throttled, `ssh: ${s.stderr.trim()}`);
    const m = await runMariadb('mariadb', ['-h', '127.0.0.1', '-P', String(tg.listener('mysql').port), '-u', 'app-db', '-pwrong', '-e', 'SELECT 1']);
    t.match(m.stderr, /ERROR 1129 .*too many failed attempts; try again in 300 s/, `mariadb: ${m.stderr.trim()}`);
    const v = await rfbLogin({ host: '127.0.0.1', port: tg.listener('vnc').port, ca: tg.gw.tls.ca, username: 'desktop', password: 'wrong' });
    t.notOk(v.ok);
    t.match(v.reason, throttled, `vnc: the RFB failure reason says it (${v.reason})`);
    v.sock.destroy();
    const r = await rdpLogin(tg.listener('rdp').port, 'desktop', 'wrong');
    t.ok((await closedWith(r.sock)).length > 0, 'rdp: the gateway hangs up (MCS Disconnect Provider Ultimatum)');
    const other = await ssh('wrong-elsewhere', '127.0.0.2');
    t.match(other.stderr, /wrong connection secret for web01/, `another address is not throttled: ${other.stderr.trim()}`);
    t.notMatch(other.stderr, /too many failed/);
  });

  t.test('audited as throttled, and an alert fired once', async (t) => {
    const events = await tg.store.listAudit({ action: 'access.throttled' });
    t.ok(events.length >= 4, `every refused attempt is audited (${events.length})`);
    t.same(new Set(events.map((e) => e.data.protocol)), new Set(['postgres', 'ssh', 'mysql', 'vnc', 'rdp']));
    t.ok(events.every((e) => e.data.source === '127.0.0.1' && e.data.retryInSeconds === 300));
    const notified = (await tg.store.listAudit({ action: 'notify' })).filter((e) => e.data.kind === 'throttled');
    t.equal(notified.length, 1, 'one alert for the cooldown');
    t.match(notified[0]!.data, { source: '127.0.0.1', failures: 10, targets: ['prod-db'] });
    const hooked = () => (existsSync(alerts) ? readFileSync(alerts, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.kind === 'throttled') : []);
    const deadline = Date.now() + 5000;
    while (!hooked().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    t.match(hooked(), [{ kind: 'throttled', source: '127.0.0.1', failures: 10 }], 'the notify hook got it');
  });

  t.test('after the cooldown the right secret works, and counting starts again', async (t) => {
    clock.advance(5 * 60_000 + 1000);
    const r = await psql(right.secret);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^42$/m, 'signed in with the secret typed during the cooldown');
    t.ok((await secretRecord()).usedAt, 'now it is used');
    const w = await psql('wrong-again');
    t.match(w.stderr, /password authentication failed/, 'a wrong secret is just wrong again');
  });
}
