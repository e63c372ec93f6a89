/**
 * What an unauthenticated peer may cost the HTTP front and the sign-ins that wait for a person:
 * request bodies are authenticated from the headers before they are read (8 KiB without a valid
 * credential, 413 beyond, 408 when a body does not arrive in time), and pending device sign-ins
 * (dev IdP) and SSH browser approvals (real ssh2 keyboard-interactive) are bounded in total and
 * per source address. 127.0.0.2/.3 are other sources on loopback.
 */
import t from 'tap';
import net from 'node:net';
import http from 'node:http';
import ssh2 from 'ssh2';
import { ManualClock } from '../../policies/clock.js';
import { startTestGateway } from '../support/gateway.js';

const clock = new ManualClock(Date.now());
const tg = await startTestGateway({
  clock,
  targets: [{ name: 'web01', protocol: 'ssh', address: '127.0.0.1:9', roles: [{ name: 'user' }], credentials: { mode: 'ephemeral-account', admin: { username: 'root', password: { value: 'x' } } } }],
  listeners: ['ssh'],
  listenerOptions: { http: { loginTimeout: '1s' } },
  gateway: { maxPendingSignIns: 3, maxPendingSignInsPerSource: 2 },
  extra: { idp: { dev: { users: [{ name: 'alice', password: { value: 'alice-pw' }, groups: ['engineers'] }] } } },
});
t.teardown(() => tg.close());
const { port } = new URL(tg.url);

/** Send the request head and `body` (not necessarily all Content-Length promises); collect the answer until close or timeout. */
function rawPost(path: string, headers: Record<string, string>, body: Buffer, timeoutMs = 5000): Promise<{ status: number; text: string; closed: boolean; ms: number }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: Number(port) });
    const t0 = Date.now();
    let got = '';
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? 0), text: got, closed, ms: Date.now() - t0 });
    };
    s.on('data', (d) => { got += d.toString('latin1'); });
    s.on('close', () => finish(true));
    s.on('error', () => finish(true));
    const timer = setTimeout(() => finish(false), timeoutMs);
    const head = Object.entries({ host: `127.0.0.1:${port}`, ...headers }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    s.write(`POST ${path} HTTP/1.1\r\n${head}\r\n`);
    s.write(body);
  });
}

const json = (n: number) => Buffer.from(JSON.stringify({ target: 'web01', role: 'user', duration: '1h', reason: 'x'.repeat(n) }));

t.test('an unauthenticated 1 MiB POST is refused with 413 before its body is read', async (t) => {
  const r = await rawPost('/api/v1/requests', { 'content-type': 'application/json', 'content-length': String(1024 * 1024) }, Buffer.alloc(100, 0x20));
  t.equal(r.status, 413, 'answered 413 after only 100 of 1048576 bytes were sent');
  t.match(r.text, /without a valid credential: authenticate first/);
  t.ok(r.closed, 'and the connection is closed');

  const bad = await rawPost('/api/v1/requests', { authorization: 'Bearer tg_pat_not-a-token', 'content-type': 'application/json', 'content-length': String(1024 * 1024) }, Buffer.alloc(100, 0x20));
  t.equal(bad.status, 413, 'an invalid token is no credential: 413 as well');

  const small = await rawPost('/api/v1/requests', { 'content-type': 'application/json', 'content-length': '2' }, Buffer.from('{}'));
  t.equal(small.status, 401, 'a small unauthenticated body gets the ordinary 401');
});

t.test('an unauthenticated body that grows past 8 KiB is cut off; an authenticated one may be up to 1 MiB', async (t) => {
  const body = json(20_000);
  const r = await rawPost('/api/v1/requests', { 'content-type': 'application/json', 'content-length': String(body.length) }, body);
  t.equal(r.status, 413, 'over 8 KiB without a credential');
  const ok = await rawPost('/api/v1/requests', { authorization: `Bearer ${tg.token('alice')}`, 'content-type': 'application/json', 'content-length': String(body.length) }, body);
  t.equal(ok.status, 400, 'with a valid token the body is read and validated (the reason is too long)');
  t.match(ok.text, /reason/);
  const huge = Buffer.alloc(1024 * 1024 + 10, 0x20);
  const over = await rawPost('/api/v1/requests', { authorization: `Bearer ${tg.token('alice')}`, 'content-type': 'application/json', 'content-length': String(huge.length) }, Buffer.alloc(10));
  t.equal(over.status, 413, 'over 1 MiB even with a token');
});

t.test('a body that does not arrive within listeners.http.loginTimeout gets 408', async (t) => {
  const r = await rawPost('/api/v1/requests', { authorization: `Bearer ${tg.token('alice')}`, 'content-type': 'application/json', 'content-length': '500' }, Buffer.from('{"target":'), 8000);
  t.equal(r.status, 408);
  t.ok(r.ms >= 800 && r.ms < 8000, `after about a second (${r.ms} ms)`);
  t.ok(r.closed, 'and the connection is closed');
});

function post(path: string, body: unknown, localAddress?: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = http.request({ host: '127.0.0.1', port: Number(port), path, method: 'POST', localAddress, headers: { 'content-type': 'application/json', 'content-length': data.length } }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : null }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

t.test('pending device sign-ins are bounded per source and in total', async (t) => {
  const a = await post('/api/v1/auth/device', {});
  const b = await post('/api/v1/auth/device', {});
  t.same([a.status, b.status], [200, 200], 'two from 127.0.0.1');
  t.ok(a.body.userCode && a.body.handle, 'a real device sign-in');
  const c = await post('/api/v1/auth/device', {});
  t.equal(c.status, 429, 'the third from the same address is refused');
  t.match(c.body, { error: 'too_many_pending', message: /pending from your address/ });
  const d = await post('/api/v1/auth/device', {}, '127.0.0.2');
  t.equal(d.status, 200, 'another address may still start one (3 of 3)');
  const e = await post('/api/v1/auth/device', {}, '127.0.0.3');
  t.equal(e.status, 429, 'over the total');
  t.match(e.body, { message: /too many device sign-ins are pending/ });
  // Sign-ins that expire no longer count.
  clock.advance(Number(a.body.expiresIn) * 1000 + 1000);
  t.equal((await post('/api/v1/auth/device', {})).status, 200, 'after the pending ones expired a new one starts');
});

function keyboardClient(): Promise<{ c: ssh2.Client; prompted: Promise<boolean>; banners: string[]; failed: Promise<string> }> {
  return new Promise((resolve) => {
    const c = new ssh2.Client();
    const banners: string[] = [];
    let prompted!: (v: boolean) => void;
    let failed!: (m: string) => void;
    const p = new Promise<boolean>((r) => { prompted = r; });
    const f = new Promise<string>((r) => { failed = r; });
    c.on('banner', (m) => banners.push(m));
    c.on('keyboard-interactive', () => prompted(true)); // never answered: the approval stays pending
    c.on('error', (e) => { failed(e.message); prompted(false); });
    c.on('close', () => { failed('closed'); prompted(false); });
    c.connect({ host: '127.0.0.1', port: tg.listener('ssh').port, username: 'web01', tryKeyboard: true, authHandler: ['keyboard-interactive'], readyTimeout: 10_000 });
    resolve({ c, prompted: p, banners, failed: f });
  });
}

t.test('pending SSH browser approvals are bounded per source; closing a client frees its slot', async (t) => {
  const first = await keyboardClient();
  const second = await keyboardClient();
  t.ok(await first.prompted, 'the first client gets the approval prompt');
  t.ok(await second.prompted, 'the second too');
  t.equal(tg.gw.pendingSignIns.pending, 2);
  const third = await keyboardClient();
  t.equal(await third.prompted, false, 'the third gets no approval prompt');
  t.match(await third.failed, /authentication methods failed/, 'keyboard-interactive is refused');
  t.match(third.banners.join(''), /too many sign-ins waiting for approval are pending from your address/, 'the banner says why');
  first.c.end();
  second.c.end();
  for (let i = 0; i < 100 && tg.gw.pendingSignIns.pending; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(tg.gw.pendingSignIns.pending, 0, 'closed clients free their approvals');
  const again = await keyboardClient();
  t.ok(await again.prompted, 'a new client gets the prompt again');
  again.c.end();
  third.c.end();
});
