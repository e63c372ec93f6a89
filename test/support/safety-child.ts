/**
 * Child process for test/proxy/safety.test.ts: a gateway with the fake protocol module and the
 * process safety net installed exactly as `tollgate serve` does (protectGateway). The parent sends
 * commands over IPC that raise errors inside a session's scope or outside any session.
 */
import { startTestGateway } from './gateway.js';
import { fakeModule, fakeConnect, FakeTarget } from './fake-module.js';
import { protectGateway } from '../../proxy/safety.js';
import type { LiveSession } from '../../protocols/types.js';

const target = new FakeTarget();
const mod = fakeModule(target);
const tg = await startTestGateway({
  targets: [{ name: 'box', protocol: 'fake', address: 'mem', roles: [{ name: 'user' }] }],
  listeners: ['fake'],
  modules: new Map([['fake', mod]]),
});
protectGateway(tg.gw);

const sessions: Record<string, LiveSession> = {};
for (const name of ['a', 'b', 'c', 'd']) {
  const grant = await tg.grant('alice', 'box', 'user');
  const s = await tg.secret('alice', grant.id);
  const c = await fakeConnect(mod.ctx!, target, s.username, s.secret);
  if (!c.ok) throw new Error(c.reason);
  sessions[name] = c.session;
}

const send = (m: unknown) => process.send!(m);
process.on('message', (m: { cmd: string; session?: string }) => {
  const s = m.session ? sessions[m.session]! : null;
  switch (m.cmd) {
    // The session's handler starts work that throws later: attributed through the session's scope.
    case 'throw-later': s!.guard(() => { setTimeout(() => { throw new Error(`boom later in ${m.session}`); }, 5); })(); break;
    case 'reject-later': s!.guard(() => { setTimeout(() => { void Promise.reject(new Error(`rejected in ${m.session}`)); }, 5); })(); break;
    // A throw right in the handler: caught by the guard itself.
    case 'throw-now': s!.guard(() => { throw new TypeError(`boom now in ${m.session}`); })(); break;
    // Nothing to attribute it to: the process must log, audit and exit non-zero.
    case 'throw-outside': setTimeout(() => { throw new Error('boom outside any session'); }, 5); break;
    case 'state': send({ state: Object.fromEntries(Object.entries(sessions).map(([k, v]) => [k, v.ended])), accounts: target.accounts.size }); return;
  }
  send({ done: m.cmd });
});
send({ ready: true, dataDir: tg.dataDir });
