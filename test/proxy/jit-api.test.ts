/**
 * The JIT workflow through the REST API and the CLI (the engine's rules are tested in
 * test/policies; this checks the API wiring: statuses, who sees what, break-glass, reviews).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { startTestGateway } from '../support/gateway.js';
import { FakeTarget, fakeModule } from '../support/fake-module.js';

const run = promisify(execFile);
const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');

t.test('requests, approvals, grants, break-glass through the API and CLI', async (t) => {
  const mod = fakeModule(new FakeTarget());
  const tg = await startTestGateway({
    modules: new Map([['fake', mod]]),
    listeners: ['fake'],
    targets: [
      { name: 'dev-box', protocol: 'fake', address: 'x', risk: 'low', roles: [{ name: 'user' }] },
      { name: 'prod-box', protocol: 'fake', address: 'x', risk: 'medium', roles: [{ name: 'user' }, { name: 'admin' }] },
      { name: 'vault', protocol: 'fake', address: 'x', risk: 'high', roles: [{ name: 'admin' }] },
    ],
  });
  t.teardown(() => tg.close());

  const low = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'dev-box', role: 'user', duration: '30m', reason: 'deploy' });
  t.equal(low.status, 201);
  t.equal(low.body.state, 'approved', 'low risk is auto-approved');
  t.ok(low.body.grantId);

  const med = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'prod-box', role: 'admin', duration: '1h', reason: 'INC-42' });
  t.equal(med.body.state, 'pending');
  t.equal((await tg.api('alice', 'POST', `/api/v1/requests/${med.body.id}/approve`, {})).status, 403, 'requester cannot approve');
  t.equal((await tg.api('erin', 'POST', `/api/v1/requests/${med.body.id}/approve`, {})).status, 403, 'non-approver cannot approve');
  const approvable = await tg.api('bob', 'GET', '/api/v1/requests?scope=approvable');
  t.same(approvable.body.map((r: any) => r.id), [med.body.id], 'bob sees it in his queue');
  const ap = await tg.api('bob', 'POST', `/api/v1/requests/${med.body.id}/approve`, { comment: 'ok' });
  t.equal(ap.body.state, 'approved');
  t.equal(ap.body.approvals[0].approver, 'bob');
  t.equal((await tg.api('dave', 'POST', `/api/v1/requests/${med.body.id}/approve`, {})).status, 409, 'already decided');

  const high = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'vault', role: 'admin', duration: '1h', reason: 'rotate' });
  await tg.api('bob', 'POST', `/api/v1/requests/${high.body.id}/approve`, {});
  t.equal((await tg.api('bob', 'GET', `/api/v1/requests/${high.body.id}`)).body.state, 'pending', 'high risk needs a second approver');
  const deny = await tg.api('dave', 'POST', `/api/v1/requests/${high.body.id}/deny`, { comment: 'not now' });
  t.equal(deny.body.state, 'denied');

  const noReason = await tg.api('alice', 'POST', '/api/v1/requests', { target: 'prod-box', role: 'user', duration: '1h', reason: '  ' });
  t.equal(noReason.status, 400);
  t.equal(noReason.body.field, 'reason');
  const notEligible = await tg.api('carol', 'POST', '/api/v1/requests', { target: 'prod-box', role: 'user', duration: '1h', reason: 'x' });
  t.equal(notEligible.status, 403);

  const grants = await tg.api('alice', 'GET', '/api/v1/grants?state=active');
  t.same(grants.body.map((g: any) => g.target).sort(), ['dev-box', 'prod-box']);
  t.equal((await tg.api('erin', 'GET', '/api/v1/grants')).body.length, 0, 'others do not see my grants');
  t.equal((await tg.api('erin', 'GET', '/api/v1/grants?scope=all')).status, 403);
  t.equal((await tg.api('carol', 'GET', '/api/v1/grants?scope=all')).body.length, 2);

  const bg = await tg.api('alice', 'POST', '/api/v1/breakglass', { target: 'vault', role: 'admin', duration: '30m', reason: 'outage' });
  t.equal(bg.status, 201);
  t.equal(bg.body.breakGlass, true);
  t.equal((await tg.api('erin', 'POST', '/api/v1/breakglass', { target: 'vault', role: 'admin', duration: '30m', reason: 'x' })).status, 403, 'only the break-glass group');
  const reviews = await tg.api('carol', 'GET', '/api/v1/reviews?state=open');
  t.equal(reviews.body.length, 1);
  t.equal((await tg.api('alice', 'POST', `/api/v1/reviews/${reviews.body[0].id}/close`, { comment: 'fine' })).status, 403, 'not closed by its user');
  t.equal((await tg.api('dave', 'POST', `/api/v1/reviews/${reviews.body[0].id}/close`, { comment: 'reviewed' })).body.state, 'closed');
  const alerts = await tg.store.listAudit({ action: 'breakglass.used' });
  t.equal(alerts.length, 1, 'break-glass audited');

  // The CLI speaks the same API.
  const env = { ...process.env, TOLLGATE_URL: tg.url, TOLLGATE_CLI_CONFIG: '/nonexistent/cli.json' };
  const req = await run(process.execPath, [bin, '--json', 'request', 'prod-box', '--role', 'user', '--duration', '15m', '--reason', 'cli test'], { env: { ...env, TOLLGATE_TOKEN: tg.token('alice') } });
  const created = JSON.parse(req.stdout);
  t.equal(created.state, 'pending');
  const list = await run(process.execPath, [bin, 'requests', '--approvable'], { env: { ...env, TOLLGATE_TOKEN: tg.token('bob') } });
  t.match(list.stdout, created.id);
  const appr = await run(process.execPath, [bin, 'approve', created.id, '-m', 'cli ok'], { env: { ...env, TOLLGATE_TOKEN: tg.token('bob') } });
  t.match(appr.stdout, /approved \(grant /);
  const sec = await run(process.execPath, [bin, '--json', 'secret', (await tg.api('alice', 'GET', `/api/v1/requests/${created.id}`)).body.grantId], { env: { ...env, TOLLGATE_TOKEN: tg.token('alice') } });
  t.match(JSON.parse(sec.stdout).commands.fake, /fake --user prod-box/);
  const unauth = await run(process.execPath, [bin, 'grants'], { env: { ...env, TOLLGATE_TOKEN: 'tg_pat_wrong' } }).then(() => null, (e) => e as { stderr: string; code: number });
  t.equal(unauth?.code, 1);
  t.match(unauth?.stderr, /not signed in/);
});
