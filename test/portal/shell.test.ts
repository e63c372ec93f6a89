/**
 * Server-side checks of the portal pages without a browser: a gateway with no IdP explains that
 * sign-in is unavailable; role gating answers 403 pages; security headers on every page.
 */
import t from 'tap';
import { startTestGateway } from '../support/gateway.js';

t.test('portal pages without an IdP, and role gating on the server', async (t) => {
  const tg = await startTestGateway({ targets: [] });
  t.teardown(() => tg.close());
  t.equal(tg.gw.oidc, null, 'no IdP configured');

  const anon = await fetch(`${tg.url}/portal/access`, { redirect: 'manual' });
  t.equal(anon.status, 503);
  t.match(await anon.text(), /No identity provider is configured on this gateway/);

  const page = async (user: string, path: string) => {
    const r = await fetch(`${tg.url}${path}`, { headers: { authorization: `Bearer ${tg.token(user)}` }, redirect: 'manual' });
    return { status: r.status, headers: r.headers, text: await r.text() };
  };
  const cases: [string, string, number][] = [
    ['alice', '/portal/access', 200], ['alice', '/portal/audit', 403], ['alice', '/portal/approvals', 403], ['alice', '/portal/dashboard', 403],
    ['bob', '/portal/approvals', 200], ['bob', '/portal/dashboard', 200], ['bob', '/portal/sessions', 403], ['bob', '/portal/recordings/x', 403],
    ['carol', '/portal/sessions', 200], ['carol', '/portal/sessions/x', 200], ['carol', '/portal/recordings', 200], ['carol', '/portal/audit', 200],
    ['carol', '/portal/dashboard', 200], ['carol', '/portal/nope', 404],
  ];
  for (const [user, path, status] of cases) {
    const r = await page(user, path);
    t.equal(r.status, status, `${user} ${path} → ${status}`);
    t.match(r.headers.get('content-type'), /text\/html/, `${path} is a page`);
    const csp = r.headers.get('content-security-policy') ?? '';
    t.match(csp, /default-src 'self'/);
    t.match(csp, /frame-ancestors 'none'/);
    t.notMatch(csp, /'unsafe-inline'|'unsafe-eval'/, 'no inline scripts or styles, no eval');
    t.equal(r.headers.get('cache-control'), 'no-store');
    t.notMatch(r.text, /<script>|<style>|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handler in the markup');
    if (status === 403) t.match(r.text, new RegExp(`signed in as ${user}`, 'i'), 'a 403 page says who is signed in');
  }
  const html = (await page('carol', '/portal/sessions/"><script>alert(1)</script>')).text;
  t.notMatch(html, /<script>alert/, 'a hostile session id is escaped');
});
