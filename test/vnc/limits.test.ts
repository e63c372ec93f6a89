/**
 * A hostile VNC server behind a grant, through the real gateway: a ZRLE inflate bomb ends its own
 * session as resource_limit with bounded memory, and a Raw 65535x65535 header ends it as a
 * protocol error without buffering; the gateway keeps serving. (The flood of expensive valid
 * updates next to a live SSH session is test/proxy/fairness.test.ts.)
 */
import t from 'tap';
import net from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync, constants as zc } from 'node:zlib';
import { ManualClock } from '../../policies/clock.js';
import { vncPasswdFile } from '../../protocols/vnc/des.js';
import { startTestGateway } from '../support/gateway.js';
import { fakeServer, rfbLogin, rfbRect, rfbUpdate, waitFor, writeAll } from './client.js';

const W = 1920;
const H = 1080;

const dir = mkdtempSync(join(tmpdir(), 'tg-vnclim-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const pwFile = join(dir, 'passwd');
writeFileSync(pwFile, vncPasswdFile('initial1'));

let behaviour: (sock: net.Socket) => void = () => {};
const fake = await fakeServer((sock) => behaviour(sock), { width: W, height: H });
t.teardown(() => fake.close());
const target = { name: 'hostile', protocol: 'vnc', address: `127.0.0.1:${fake.port}`, roles: [{ name: 'operator' }], credentials: { passwordFile: pwFile } };
const tg = await startTestGateway({ targets: [target], listeners: ['vnc'], clock: new ManualClock(Date.now()) });
t.teardown(() => tg.close());
const vnc = tg.listener('vnc');

const viewer = async () => {
  const g = await tg.grant('alice', 'hostile', 'operator');
  const s = await tg.secret('alice', g.id);
  const c = await rfbLogin({ host: vnc.host, port: vnc.port, ca: tg.gw.tls.ca, username: 'hostile', password: s.secret });
  if (!c.ok) throw new Error(`login failed: ${c.reason}`);
  c.reader.detach();
  c.sock.resume();
  return { ...c, grantId: g.id };
};
const ended = (grantId: string) => waitFor(async () => (await tg.store.listSessions({ grantId })).find((s) => s.state === 'ended'), 15_000, 'the session to end');

t.test('ZRLE inflate bomb: the session ends as resource_limit with bounded memory; the gateway keeps serving', async (t) => {
  const bomb = deflateSync(Buffer.alloc(128 << 20), { level: 9, finishFlush: zc.Z_SYNC_FLUSH });
  behaviour = (sock) => { void writeAll(sock, Buffer.concat([rfbUpdate(1), rfbRect(0, 0, W, H, 16, bomb.length), bomb])); };
  const mem = () => { const m = process.memoryUsage(); return m.arrayBuffers + m.external; };
  const c = await viewer();
  const before = mem();
  let peak = before;
  const sampler = setInterval(() => { peak = Math.max(peak, mem()); }, 5);
  await c.closed;
  clearInterval(sampler);
  const s = await ended(c.grantId);
  t.match(s.endReason, /^resource_limit: the VNC server exceeded a limit: ZRLE rectangle 1920x1080 inflates to more than/, s.endReason ?? '');
  t.ok(peak - before < 64 << 20, `external memory grew ${((peak - before) / 1048576).toFixed(1)} MiB during the bomb (bound 64 MiB; the old relay: +480 MiB)`);
  const audit = await tg.store.listAudit({ action: 'vnc.resource_limit' });
  t.ok(audit.length >= 1, 'audited as vnc.resource_limit');
});

t.test('a Raw 65535x65535 header ends the session as a protocol error without buffering', async (t) => {
  behaviour = (sock) => { sock.write(Buffer.concat([rfbUpdate(1), rfbRect(0, 0, 65535, 65535, 0), Buffer.alloc(1 << 20)])); };
  const c = await viewer();
  await c.closed;
  const s = await ended(c.grantId);
  t.match(s.endReason, /^target_error: protocol error from the server: rectangle 65535x65535\+0\+0 is outside the 1920x1080 framebuffer/);
  const again = await viewer();
  t.ok(again.ok, 'the gateway still serves');
  again.sock.destroy();
  await ended(again.grantId);
});
