/**
 * Injected credentials and session lifetime on a gateway with a manual clock: a bearer token
 * minted per session by a provisioner hook under a lease (revoked by the revoke hook at the end),
 * static basic credentials, the JWT re-signed before it expires, idle sessions ending with
 * client_exit, grant expiry closing an open WebSocket. Client-sent credential headers never pass.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeJwt } from 'jose';
import { ManualClock } from '../../policies/clock.js';
import { startTestGateway } from '../support/gateway.js';
import { appWs, raw, signInApp, startUpstream } from './support.js';
import { onlyHttp } from './support.js';
import { httpModule } from '../../protocols/http/index.js';

const HOOK = `
const fs = require('node:fs');
const [, , action, file] = process.argv;
const e = process.env;
if (action === 'mint') {
  if (!e.TOLLGATE_LEASE || !e.TOLLGATE_IDENTITY || !e.TOLLGATE_GRANT) process.exit(3);
  fs.appendFileSync(file, JSON.stringify({ action, lease: e.TOLLGATE_LEASE, identity: e.TOLLGATE_IDENTITY, grant: e.TOLLGATE_GRANT, app: e.TOLLGATE_APP }) + '\\n');
  process.stdout.write(JSON.stringify({ token: 'tok-' + e.TOLLGATE_LEASE, id: 'id-' + e.TOLLGATE_LEASE }));
} else if (action === 'revoke') {
  fs.appendFileSync(file, JSON.stringify({ action, lease: e.TOLLGATE_LEASE, tokenId: e.TOLLGATE_TOKEN_ID, identity: e.TOLLGATE_IDENTITY }) + '\\n');
} else if (action === 'fail') {
  process.exit(7);
}
`;

t.test('credentials and session lifetime', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-http-cred-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const hook = join(dir, 'hook.cjs');
  const state = join(dir, 'state.ndjson');
  writeFileSync(hook, HOOK);
  const clock = new ManualClock(Date.now());
  const up = await startUpstream();
  t.teardown(() => up.close());
  const tg = await startTestGateway({
    modules: onlyHttp(),
    clock,
    targets: [
      { name: 'tok', protocol: 'http', address: up.url, roles: [{ name: 'user' }], credentials: { mode: 'bearer', mintCommand: [process.execPath, hook, 'mint', state], revokeCommand: [process.execPath, hook, 'revoke', state] } },
      { name: 'basic', protocol: 'http', address: up.url, roles: [{ name: 'user' }], credentials: { mode: 'basic', username: 'svc', password: { value: 's3cret-basic' } } },
      { name: 'broken', protocol: 'http', address: up.url, roles: [{ name: 'user' }], credentials: { mode: 'bearer', mintCommand: [process.execPath, hook, 'fail', state], revokeCommand: [process.execPath, hook, 'revoke', state] } },
      { name: 'jwt', protocol: 'http', address: up.url, roles: [{ name: 'user' }], credentials: { mode: 'jwt', header: 'X-Identity', authorization: true }, options: { idleTimeout: '10m' } },
    ],
  });
  t.teardown(() => tg.close());
  const port = Number(new URL(tg.url).port);
  const get = (app: string, cookie: string, headers: Record<string, string> = {}) =>
    raw(port, { path: '/headers', host: `${app}.localhost:${port}`, headers: { cookie, ...headers } });

  await t.test('bearer token minted per session by the hook, revoked at the end', async (t) => {
    const s = await signInApp(tg, 'alice', 'tok', `http://tok.localhost:${port}/headers`);
    const grant = await tg.grant('alice', 'tok', 'user');
    const r = await get('tok', s.cookie, { authorization: 'Bearer forged-by-client' });
    t.equal(r.status, 200);
    const h = JSON.parse(r.body.toString()).headers;
    const minted = readFileSync(state, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    t.equal(minted.length, 1, 'minted once');
    t.same(minted[0], { action: 'mint', lease: minted[0].lease, identity: 'alice', grant: grant.id, app: 'tok' });
    t.equal(h.authorization, `Bearer tok-${minted[0].lease}`, 'the minted token, not the client\'s');
    t.equal((await get('tok', s.cookie)).status, 200);
    t.equal(readFileSync(state, 'utf8').trim().split('\n').length, 1, 'the token is reused for the session');
    const lease = (await tg.store.listLeases({ state: ['active'] })).find((l) => l.id === minted[0].lease);
    t.ok(lease, 'lease active');
    t.notMatch(JSON.stringify(lease?.data), /tok-/, 'the token itself is not stored');
    await tg.api('bob', 'POST', `/api/v1/grants/${grant.id}/revoke`, { reason: 'done' });
    for (let i = 0; i < 100 && !readFileSync(state, 'utf8').includes('"revoke"'); i++) await sleep(20);
    const lines = readFileSync(state, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    t.same(lines[1], { action: 'revoke', lease: minted[0].lease, tokenId: `id-${minted[0].lease}`, identity: 'alice' }, 'revoke hook ran with the lease');
    for (let i = 0; i < 100; i++) {
      const l = (await tg.store.listLeases({})).find((x) => x.id === minted[0].lease);
      if (l?.state === 'revoked') break;
      await sleep(20);
    }
    t.equal((await tg.store.listLeases({})).find((x) => x.id === minted[0].lease)?.state, 'revoked');
    t.equal((await get('tok', s.cookie)).status, 403, 'next request after revoke: 403');
  });

  await t.test('a failing mint hook gives a clear error and leaves no session', async (t) => {
    const s = await signInApp(tg, 'alice', 'broken', `http://broken.localhost:${port}/headers`);
    await tg.grant('alice', 'broken', 'user');
    const r = await get('broken', s.cookie);
    t.equal(r.status, 502);
    t.match(r.body.toString(), /could not prepare the credential for broken/);
    for (let i = 0; i < 50 && (await tg.store.listSessions({ state: 'active' })).some((x) => x.target === 'broken'); i++) await sleep(20);
    t.notOk((await tg.store.listSessions({ state: 'active' })).some((x) => x.target === 'broken'), 'no live session left');
    const leases = await tg.store.listLeases({ target: 'broken' });
    t.equal(leases.length, 1, 'the lease was stored before the hook ran');
    t.equal(leases[0]!.state, 'revoked', 'and revoked by the revoke hook after the mint failed');
  });

  await t.test('a mint hook without a revoke hook is refused: a minted token must be revocable', async (t) => {
    const bad = { name: 'x', protocol: 'http', address: up.url, risk: 'low' as const, roles: [{ name: 'user' }], credentials: { mode: 'bearer', mintCommand: [process.execPath, hook, 'mint', state] }, options: {} };
    t.match(httpModule.validateTarget!(bad), { path: 'credentials.revokeCommand' });
  });

  await t.test('static basic credentials; the password never reaches the audit log', async (t) => {
    const s = await signInApp(tg, 'alice', 'basic', `http://basic.localhost:${port}/headers`);
    await tg.grant('alice', 'basic', 'user');
    const r = await get('basic', s.cookie, { authorization: 'Basic Zm9vOmJhcg==' });
    const h = JSON.parse(r.body.toString()).headers;
    t.equal(h.authorization, `Basic ${Buffer.from('svc:s3cret-basic').toString('base64')}`);
    const audit = JSON.stringify(await tg.store.listAudit({}));
    t.notMatch(audit, /s3cret-basic|c3ZjOnMzY3JldC1iYXNpYw/);
  });

  await t.test('JWT in a custom header and Authorization, re-signed before expiry; idle sessions end', async (t) => {
    const s = await signInApp(tg, 'alice', 'jwt', `http://jwt.localhost:${port}/headers`);
    await tg.grant('alice', 'jwt', 'user', '2h');
    const h1 = JSON.parse((await get('jwt', s.cookie, { 'x-identity': 'forged' })).body.toString()).headers;
    t.equal(h1.authorization, `Bearer ${h1['x-identity']}`);
    const c1 = decodeJwt(h1['x-identity']);
    t.equal(c1.sub, 'alice');
    t.equal(c1.aud, 'jwt');
    clock.advance(60_000);
    const h2 = JSON.parse((await get('jwt', s.cookie)).body.toString()).headers;
    t.equal(h2['x-identity'], h1['x-identity'], 'cached while fresh');
    clock.advance(3.6 * 60_000);
    const h3 = JSON.parse((await get('jwt', s.cookie)).body.toString()).headers;
    const c3 = decodeJwt(h3['x-identity']);
    t.not(c3.jti, c1.jti, 're-signed within 30 s of expiry');
    t.ok(c3.exp! > c1.exp!, 'later expiry');
    t.equal(c3.sid, c1.sid, 'same session');
    const sid = c1.sid as string;
    clock.advance(11 * 60_000);
    for (let i = 0; i < 100 && (await tg.store.getSession(sid))?.state !== 'ended'; i++) await sleep(20);
    const ended = await tg.store.getSession(sid);
    t.equal(ended?.state, 'ended', 'idle session ended');
    t.match(ended?.endReason ?? '', /^client_exit: .*without use/);
    const h4 = JSON.parse((await get('jwt', s.cookie)).body.toString()).headers;
    t.not(decodeJwt(h4['x-identity']).sid, sid, 'the next request opens a new session');
  });

  await t.test('grant expiry closes an open WebSocket with the reason; open sockets keep a session from idling out', async (t) => {
    const s = await signInApp(tg, 'erin', 'jwt', `http://jwt.localhost:${port}/headers`);
    await tg.grant('erin', 'jwt', 'user', '30m');
    t.equal((await get('jwt', s.cookie)).status, 200);
    const ws = appWs(`jwt.localhost:${port}`, '/ws', { headers: { cookie: s.cookie } });
    ws.binaryType = 'arraybuffer';
    await new Promise<void>((resolve, reject) => { ws.onopen = () => resolve(); ws.onerror = () => reject(new Error('ws failed')); });
    const first = await new Promise<string>((resolve) => { ws.onmessage = (ev) => resolve(String(ev.data)); });
    t.equal(first, JSON.stringify({ hello: 'erin' }));
    const closed = new Promise<{ code: number; reason: string }>((r) => { ws.onclose = (ev) => r({ code: ev.code, reason: ev.reason }); });
    const sess = (await tg.store.listSessions({ state: 'active' })).find((x) => x.identity === 'erin')!;
    clock.advance(20 * 60_000);
    await sleep(50);
    t.equal((await tg.store.getSession(sess.id))?.state, 'active', 'an open WebSocket keeps the session past the idle timeout');
    clock.advance(11 * 60_000);
    const c = await closed;
    t.equal(c.code, 4001);
    t.match(c.reason, /expired/);
    for (let i = 0; i < 100 && (await tg.store.getSession(sess.id))?.state !== 'ended'; i++) await sleep(20);
    t.match((await tg.store.getSession(sess.id))?.endReason ?? '', /^expired/);
    t.equal((await get('jwt', s.cookie)).status, 403, 'after expiry: 403');
  });
  await t.test('kill ends the session (the next request opens a new one); a lock refuses with its reason', async (t) => {
    const s = await signInApp(tg, 'alice', 'basic', `http://basic.localhost:${port}/headers`);
    t.equal((await get('basic', s.cookie)).status, 200);
    const live = tg.gw.sessions.list().find((x) => x.target.name === 'basic' && x.principal.sub === 'alice')!;
    t.ok(live, 'live session');
    const k = await tg.api('carol', 'POST', `/api/v1/sessions/${live.id}/kill`, { reason: 'test kill' });
    t.equal(k.status, 200, JSON.stringify(k.body));
    for (let i = 0; i < 100 && !live.ended; i++) await sleep(20);
    t.ok(live.ended, 'killed');
    t.equal((await get('basic', s.cookie)).status, 200, 'grant still active: works again');
    const again = tg.gw.sessions.list().find((x) => x.target.name === 'basic' && x.principal.sub === 'alice')!;
    t.not(again.id, live.id, 'in a new session');
    const l = await tg.api('carol', 'POST', '/api/v1/locks', { scope: 'identity', value: 'alice', reason: 'under investigation' });
    t.equal(l.status, 201, JSON.stringify(l.body));
    for (let i = 0; i < 100 && !again.ended; i++) await sleep(20);
    t.ok(again.ended, 'the lock ended the live session');
    const r = await get('basic', s.cookie);
    t.equal(r.status, 403);
    t.match(r.body.toString(), /locked/);
    t.match(r.body.toString(), /under investigation/);
  });
  t.ok(existsSync(state));
});
