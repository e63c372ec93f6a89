/**
 * "Reveal password" of a checked-out account in a real Chromium against a real gateway and a real
 * OpenSSH sshd: alice holds the account (role with reveal: true), signs in without MFA, clicks
 * Reveal password, is asked for her authenticator code, types it, and sees the password — which
 * logs in to the sshd with the real ssh client; Hide takes it off the page; axe-core finds no
 * serious or critical issue. erin, not the holder, gets no Reveal button.
 */
import t from 'tap';
import { totp } from '../../auth/totp.js';
import { Secret } from '../../auth/secret.js';
import { haveSshd, startTestSshd, runClient } from '../support/sshd.js';
import { ALICE_TOTP, axeViolations, launchChromium, noPageErrors, shot, signIn, startPortalGateway } from './helpers.js';

t.test('reveal a checked-out password in the portal with the authenticator code', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const env = await startTestSshd(t, { eph: 'prv-eph', cert: 'prv-cert', pw: 'vaulted' });
  const account = env.accounts.checkoutAccount;
  const target = { ...env.targets[2]!, roles: [{ name: 'shared', reveal: true }] };
  const tg = await startPortalGateway({ targets: [target], listeners: ['ssh'] });
  t.teardown(() => tg.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const held = await tg.grant('alice', 'vaulted', 'shared', '1h');

  const erin = await signIn(browser, tg, 'erin', '/portal/access');
  await erin.page.waitForSelector('#checkouts [data-checkout]');
  t.equal(await erin.page.locator('button.reveal').count(), 0, 'erin (not the holder) has no Reveal button');
  await erin.ctx.close();

  const { ctx, page, errors } = await signIn(browser, tg, 'alice', '/portal/access');
  t.teardown(() => ctx.close());
  const button = page.locator('#checkouts button.reveal');
  await button.waitFor();
  await button.click();
  const input = page.locator('#checkouts .reveal-code input[name="mfaCode"]');
  await input.waitFor();
  t.match(await page.locator('#checkouts .reveal-out .err').textContent(), /needs a fresh MFA/, 'asks for MFA (the sign-in had none)');
  t.equal(await page.locator('#checkouts .revealed-password').count(), 0, 'no password yet');
  await input.fill(totp(new Secret(ALICE_TOTP), Date.now()));
  await page.locator('#checkouts .reveal-code button[type="submit"]').click();
  const shown = page.locator('#checkouts .revealed-password');
  await shown.waitFor();
  const password = (await shown.textContent())!.trim();
  t.equal(password, env.accounts.checkoutPassword, 'the current password is shown (the starting one: nothing rotated it yet)');
  const login = await runClient(password, 'ssh', ['-p', String(env.sshd.port), `${account}@127.0.0.1`, 'id -un'], { timeoutMs: 20_000 });
  t.equal(login.stdout.trim(), account, `the password shown logs in to the real sshd (${login.stderr.trim()})`);
  const ev = (await tg.store.listAudit({ action: 'checkout.revealed', subject: held.id })).at(-1);
  t.match(ev?.data, { mfa: 'code', by: /^web:/ }, 'audited');
  t.notOk(JSON.stringify(ev).includes(password), 'without the password');

  t.same(await axeViolations(page, 'serious'), [], 'axe-core: no serious or critical issue with the password shown');
  await shot(page, 'reveal', { commit: false });
  await page.locator('#checkouts .reveal-out button', { hasText: 'Hide' }).click();
  await page.locator('#checkouts .reveal-out', { hasText: 'Hidden' }).waitFor();
  t.notOk((await page.content()).includes(password), 'Hide takes the password off the page');
  noPageErrors(t, errors);
});
