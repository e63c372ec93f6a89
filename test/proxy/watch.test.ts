/**
 * Live view: a watcher (the CLI's `tollgate watch`, and a raw WebSocket) receives what a session
 * printed so far, then new output as it happens; only the SOC and the owner may watch.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { WebSocket } from 'undici';
import { startTestGateway } from '../support/gateway.js';
import { FakeTarget, fakeModule, fakeConnect } from '../support/fake-module.js';

const bin = join(import.meta.dirname, '..', '..', 'proxy', 'bin', 'tollgate.js');

t.test('watch a live session from the CLI and over the WebSocket', async (t) => {
  const ft = new FakeTarget();
  const mod = fakeModule(ft);
  const tg = await startTestGateway({ modules: new Map([['fake', mod]]), listeners: ['fake'], targets: [{ name: 'box', protocol: 'fake', address: 'x', risk: 'low', roles: [{ name: 'user' }] }] });
  t.teardown(() => tg.close());
  const g = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', g.id);
  const c = await fakeConnect(mod.ctx!, ft, 'box', s.secret);
  if (!c.ok) throw new Error(c.reason);
  const cast = c.session.recording.cast({ width: 80, height: 24 });
  cast.output('$ echo before-watch\r\nbefore-watch\r\n');

  const wsUrl = `${tg.url.replace(/^http/, 'ws')}/api/v1/sessions/${c.session.id}/live`;
  const denied = await new Promise<boolean>((resolve) => {
    const ws = new WebSocket(wsUrl, { headers: { authorization: `Bearer ${tg.token('erin')}` } } as never);
    ws.addEventListener('open', () => { ws.close(); resolve(false); });
    ws.addEventListener('error', () => resolve(true));
  });
  t.ok(denied, 'another engineer may not watch');

  const child = spawn(process.execPath, [bin, 'watch', c.session.id], { env: { ...process.env, TOLLGATE_URL: tg.url, TOLLGATE_TOKEN: tg.token('carol'), TOLLGATE_CLI_CONFIG: '/nonexistent' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const until = async (re: RegExp) => {
    for (let i = 0; i < 200 && !re.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    return re.test(out);
  };
  t.ok(await until(/before-watch/), 'the watcher starts from the current screen');
  cast.output('live-line-42\r\n');
  t.ok(await until(/live-line-42/), 'new output arrives live');
  const exited = new Promise<number | null>((r) => child.on('close', r));
  await c.session.end({ code: 'client_exit', message: 'done' });
  t.equal(await exited, 0, 'watch ends with the session');
  t.match(err, /session ended/);
  const watchAudit = await tg.store.listAudit({ action: 'session.watch' });
  t.equal(watchAudit[0]?.actor, 'carol', 'watching is audited');
});
