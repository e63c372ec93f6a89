/** The protocol contract for the fake module (test/support/fake-module.ts): the lifecycle without a real server. */
import t from 'tap';
import { conformance } from '../support/conformance.js';
import { FakeTarget, fakeClient, fakeModule } from '../support/fake-module.js';

const ft = new FakeTarget();
const box = (name: string) => ({ name, protocol: 'fake', address: 'in-memory', risk: 'low', roles: [{ name: 'user' }] });

await conformance(t, {
  module: 'fake',
  targets: [box('box'), box('box-mintfail')],
  listener: 'fake',
  target: 'box',
  role: 'user',
  gateway: { modules: new Map([['fake', fakeModule(ft)]]) },
  mintFailure: { target: 'box-mintfail', role: 'user', arm: () => { ft.failNextMint = true; } },
  async connect(tg, s) {
    const { host, port } = tg.listener('fake');
    const c = fakeClient(host, port);
    c.login(s.username, s.secret);
    return {
      close: () => c.close(),
      ended: c.closed.then(() => c.lines.filter((l) => l.startsWith('ERR') || l.startsWith('END')).join('\n')),
    };
  },
  exists: async (_tg, lease) => ft.accounts.has(String(lease.data['account'])),
  breakTarget: async () => { ft.failRevoke = true; return () => { ft.failRevoke = false; }; },
  dropTarget: async () => { for (const a of [...ft.accounts]) ft.drop(a); },
  refusal: { expect: /^ERR bad_secret .*connection secret/ },
  frontDoor: { expect: /^ERR busy Tollgate: too many connections are signing in/ },
  killText: /^END killed Tollgate: session terminated by carol: conformance/,
});
