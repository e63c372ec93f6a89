/**
 * Hostile input through the real gateway: garbage and truncated handshakes at the VNC port, a
 * hostile VNC server (absurd rectangles, unknown encodings, garbage) behind a grant, plus the
 * view-only and clipboard rules seen from a fake server. The gateway must disconnect cleanly,
 * end the session with a reason, and keep serving.
 */
import t from 'tap';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '../../policies/clock.js';
import { vncPasswdFile } from '../../protocols/vnc/des.js';
import { encodeKeyEvent, encodePointerEvent, encodeSetEncodings } from '../../protocols/vnc/client-messages.js';
import { encodeServerCutText } from '../../protocols/vnc/server-messages.js';
import { startTestGateway } from '../support/gateway.js';
import { fakeServer, rfbLogin, sleep, waitFor } from './client.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-vnch-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const pwFile = join(dir, 'passwd');
writeFileSync(pwFile, vncPasswdFile('initial1'));

let behaviour: (sock: net.Socket) => void = () => {};
const fake = await fakeServer((sock) => behaviour(sock));
t.teardown(() => fake.close());

const roles = [{ name: 'operator' }, { name: 'viewer', viewOnly: true, clipboard: 'none' }, { name: 'paste', clipboard: 'to-server' }];
const target = { name: 'fake', protocol: 'vnc', address: `127.0.0.1:${fake.port}`, roles, credentials: { passwordFile: pwFile } };
const tg = await startTestGateway({ targets: [target], listeners: ['vnc'], clock: new ManualClock(Date.now()) });
t.teardown(() => tg.close());
const { host, port } = tg.listener('vnc');
const ca = tg.gw.tls.ca;
const settle = () => waitFor(async () => (await tg.store.listSessions({ state: 'active' })).length === 0, 10_000, 'sessions to end');
const login = async (role = 'operator') => {
  const g = await tg.grant('alice', 'fake', role);
  const s = await tg.secret('alice', g.id);
  const c = await rfbLogin({ host, port, ca, username: 'fake', password: s.secret });
  if (!c.ok) throw new Error(`login failed: ${c.reason}`);
  return c;
};
const sessionIds = async () => new Set((await tg.store.listSessions({})).map((s) => s.id));
const newSession = async (known: Set<string>) => (await tg.store.listSessions({})).find((s) => !known.has(s.id))!;

const rawSend = (bytes: Buffer | string, close = false) => new Promise<string>((resolve) => {
  const s = net.connect({ host, port });
  let got = Buffer.alloc(0);
  s.on('data', (d) => { got = Buffer.concat([got, d]); });
  s.on('error', () => {});
  s.on('connect', () => { s.write(bytes); if (close) s.end(); });
  s.on('close', () => resolve(got.toString('latin1')));
  setTimeout(() => s.destroy(), 3000);
});

t.test('garbage and truncated handshakes at the VNC port', async (t) => {
  t.match(await rawSend('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /^RFB 003\.008\n$/, 'HTTP at the port: version then clean close');
  t.match(await rawSend('RFB 003.008\n\x13\x00', true), /^RFB 003\.008\n/, 'truncated VeNCrypt: clean close');
  t.match(await rawSend(Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([0x42])])), /^RFB/, 'security type not offered: clean close');
  const big = Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([19, 0, 2]), Buffer.alloc(4, 0xff)]);
  t.match(await rawSend(big), /^RFB/, 'unknown VeNCrypt sub-type: clean close');
  const c = await login();
  t.ok(c.ok, 'the gateway still serves after the garbage');
  c.sock.destroy();
  await settle();
});

for (const [name, payload] of [
  ['absurd rectangle size', Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])])],
  ['unknown encoding', Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from([0, 0, 0, 0, 0, 8, 0, 8, 0, 0, 0, 7])])],
  ['unknown message type', Buffer.from([0x99, 1, 2, 3])],
  ['huge server cut text', Buffer.from([3, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff])],
] as const) {
  t.test(`hostile server: ${name} gives a clean disconnect`, async (t) => {
    behaviour = (sock) => { sock.write(payload); };
    const known = await sessionIds();
    const c = await login();
    const closedIn = await Promise.race([c.closed.then(() => 'closed'), sleep(3000).then(() => 'open')]);
    t.equal(closedIn, 'closed', 'viewer disconnected');
    await settle();
    const s = await newSession(known);
    t.match(s.endReason, /protocol error from the server/, `session end says why: ${s.endReason}`);
    const audit = await tg.api('carol', 'GET', '/api/v1/audit?limit=50');
    t.equal(audit.status, 200);
  });
}

t.test('hostile viewer after login: garbage and absurd messages give a clean disconnect', async (t) => {
  behaviour = () => {};
  for (const [name, bytes] of [
    ['unknown message type', Buffer.from([0x99, 0, 0, 0])],
    ['absurd client cut text', Buffer.from([6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])],
    ['bad pixel format', Buffer.concat([Buffer.from([0, 0, 0, 0, 12, 24, 0, 1]), Buffer.alloc(12)])],
  ] as const) {
    const known = await sessionIds();
    const c = await login();
    c.sock.write(bytes);
    const closedIn = await Promise.race([c.closed.then(() => 'closed'), sleep(3000).then(() => 'open')]);
    t.equal(closedIn, 'closed', `${name}: disconnected`);
    await settle();
    t.match((await newSession(known)).endReason, /protocol error from the viewer/, `${name}: the session end says why`);
  }
  const ok = await login();
  t.ok(ok.ok, 'the gateway still serves');
  ok.sock.destroy();
  await settle();
});

t.test('checkTarget installs a throwaway password and logs in; a dead target is reported', async (t) => {
  const { vncModule } = await import('../../protocols/vnc/index.js');
  const ctx = tg.gw.ctx('vnc');
  const good = await vncModule.checkTarget!(ctx, tg.gw.config.targets.find((x) => x.name === 'fake')!);
  t.equal(good.ok, true, good.detail);
  const dead = await vncModule.checkTarget!(ctx, { ...tg.gw.config.targets.find((x) => x.name === 'fake')!, address: '127.0.0.1:1' });
  t.equal(dead.ok, false, dead.detail);
  t.match(dead.detail, /cannot reach/);
});

t.test('view-only role drops input; clipboard follows the role', async (t) => {
  behaviour = (sock) => { sock.write(encodeServerCutText(Buffer.from('from server'))); };
  const before = fake.received.length;
  const v = await login('viewer');
  const got: Buffer[] = [];
  v.sock.on('data', (d: Buffer) => got.push(d));
  v.sock.write(Buffer.concat([encodeSetEncodings([7, 16, 0]), encodeKeyEvent(true, 0x61), encodePointerEvent(1, 5, 5)]));
  const cut = Buffer.from('from viewer');
  const head = Buffer.alloc(8); head[0] = 6; head.writeUInt32BE(cut.length, 4);
  v.sock.write(Buffer.concat([head, cut]));
  await sleep(500);
  const types = fake.received.slice(before).map((m) => m.type);
  t.same(types, ['SetEncodings'], 'only SetEncodings reached the server (key, pointer, clipboard dropped)');
  t.same((fake.received[before] as { encodings: number[] }).encodings, [16, 0], 'Tight (7) filtered out');
  t.notOk(Buffer.concat(got).includes('from server'), 'server clipboard not passed to a clipboard:none role');
  v.sock.destroy();
  await settle();
  const events = (await tg.store.listRecordings()).filter((r) => r.kind === 'events');
  t.ok(events.length >= 1);

  const before2 = fake.received.length;
  const p = await login('paste');
  const got2: Buffer[] = [];
  p.sock.on('data', (d: Buffer) => got2.push(d));
  p.sock.write(Buffer.concat([head, cut, encodeKeyEvent(true, 0x62)]));
  await sleep(500);
  t.same(fake.received.slice(before2).map((m) => m.type), ['ClientCutText', 'KeyEvent'], 'clipboard to-server and keys pass');
  t.notOk(Buffer.concat(got2).includes('from server'), 'to-server role gets no server clipboard');
  p.sock.destroy();
  await settle();

  const o = await login('operator');
  const got3: Buffer[] = [];
  o.sock.on('data', (d: Buffer) => got3.push(d));
  await sleep(500);
  t.ok(Buffer.concat(got3).includes('from server'), 'operator (both) gets the server clipboard');
  o.sock.destroy();
  await settle();
});
