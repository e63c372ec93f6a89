/**
 * The notifications: and siem: sections: every mistake is a config error naming the file and the
 * key path, at validation or, for secret references, when the gateway starts.
 */
import t from 'tap';
import { ConfigError, validateConfig } from '../../proxy/config.js';
import { moduleMap } from '../../protocols/index.js';
import { startTestGateway } from '../support/gateway.js';

const modules = moduleMap();
const check = (extra: Record<string, unknown>): string => {
  try { validateConfig(extra, 'gw.yaml', modules); return 'ok'; } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.message;
  }
};
const hook = { name: 'h', url: 'https://hooks.example.com/x', secret: { env: 'K' } };
const smtp = { host: 'smtp.example.com', user: 'tg', password: { env: 'P' } };
const syslog = { host: 'siem.example.com' };

t.test('notifications: errors name the key', async (t) => {
  t.equal(check({ notifications: { webhooks: [hook], email: { from: 'Tollgate <tg@example.com>', smtp } } }), 'ok');
  t.equal(check({ notifications: { webhooks: [{ ...hook, secret: undefined }] } }), 'gw.yaml: notifications.webhooks[0].secret: a secret reference: the HMAC key that signs each JSON delivery (X-Tollgate-Signature)');
  t.equal(check({ notifications: { webhooks: [{ name: 's', url: { env: 'SLACK_URL' }, format: 'slack' }] } }), 'ok', 'a Slack hook needs no key; its URL may be a secret');
  t.equal(check({ notifications: { webhooks: [{ ...hook, url: 'ftp://x' }] } }), 'gw.yaml: notifications.webhooks[0].url: an http:// or https:// URL');
  t.equal(check({ notifications: { webhooks: [hook, { ...hook }] } }), 'gw.yaml: notifications.webhooks[1].name: a unique name ("h" is used twice)');
  t.match(check({ notifications: { webhooks: [{ ...hook, name: 'a b' }] } }), /^gw\.yaml: notifications\.webhooks\[0\]\.name: a name of letters/);
  t.match(check({ notifications: { webhooks: [{ ...hook, events: ['request.pending', 'everything'] }] } }), /^gw\.yaml: notifications\.webhooks\[0\]\.events\[1\]: expected one of "\*", "request\.pending"/);
  t.match(check({ notifications: { webhooks: [{ ...hook, format: 'teams' }] } }), /^gw\.yaml: notifications\.webhooks\[0\]\.format: expected one of "json", "slack"/);
  t.equal(check({ notifications: { webhooks: [{ ...hook, extra: 1 }] } }), 'gw.yaml: notifications.webhooks[0]: unknown key(s) extra');
  t.equal(check({ notifications: { email: { from: 'Tollgate', smtp } } }), 'gw.yaml: notifications.email.from: an address such as "Tollgate <tollgate@example.com>"');
  t.equal(check({ notifications: { email: { from: 'a@b\r\nBcc: x@y', smtp } } }), 'gw.yaml: notifications.email.from: an address such as "Tollgate <tollgate@example.com>"', 'no header break');
  t.equal(check({ notifications: { email: { from: 'a@b', smtp: { host: 'h', password: { env: 'P' } } } } }), 'gw.yaml: notifications.email.smtp.user: the user name the password belongs to');
  t.equal(check({ notifications: { email: { from: 'a@b', smtp: { ...smtp, tls: 'none' } } } }), 'gw.yaml: notifications.email.smtp.tls: starttls or implicit when a password is set (never sent in clear text)');
  t.equal(check({ notifications: { email: { from: 'a@b', smtp: { host: 'h', tls: 'none' } } } }), 'ok', 'clear text without a password (a local relay)');
  t.match(check({ notifications: { email: { from: 'a@b', smtp: { ...smtp, port: 0 } } } }), /^gw\.yaml: notifications\.email\.smtp\.port: /);
  t.equal(check({ notifications: { email: { from: 'a@b', smtp: { ...smtp, password: 'inline' } } } }), 'gw.yaml: notifications.email.smtp.password: a secret reference: {env: NAME}, {file: PATH}, {value: "..."} or {command: [argv...]}', 'never inline');
  t.match(check({ notifications: { retry: { attempts: 0 } } }), /^gw\.yaml: notifications\.retry\.attempts: /);
  t.equal(check({ notifications: { grantExpiry: 'soon' } }).startsWith('gw.yaml: notifications.grantExpiry: '), true);
  t.equal(check({ notifications: { grantExpiry: false } }), 'ok');
});

t.test('siem: errors name the key', async (t) => {
  t.equal(check({ siem: { syslog: [syslog], webhooks: [{ ...hook, name: 'w' }] } }), 'ok');
  t.equal(check({ siem: { syslog: [syslog, { ...syslog }] } }), 'gw.yaml: siem.syslog[1].name: a unique name (syslog:siem.example.com:6514 is used twice)');
  t.equal(check({ siem: { syslog: [{ ...syslog, tls: { cert: { file: 'c.pem' } } }] } }), 'gw.yaml: siem.syslog[0].tls.key: a client certificate and its key together');
  t.match(check({ siem: { syslog: [{ ...syslog, facility: 'security' }] } }), /^gw\.yaml: siem\.syslog\[0\]\.facility: expected one of "kern"/);
  t.match(check({ siem: { syslog: [{ ...syslog, sdId: 'a=b' }] } }), /^gw\.yaml: siem\.syslog\[0\]\.sdId: an SD-ID/);
  t.match(check({ siem: { syslog: [{ ...syslog, appName: 'has space' }] } }), /^gw\.yaml: siem\.syslog\[0\]\.appName: at most 48 printable ASCII/);
  t.match(check({ siem: { syslog: [{ ...syslog, batch: 0 }] } }), /^gw\.yaml: siem\.syslog\[0\]\.batch: /);
  t.match(check({ siem: { syslog: [{ ...syslog, from: 'yesterday' }] } }), /^gw\.yaml: siem\.syslog\[0\]\.from: expected one of "start", "now"/);
  t.equal(check({ siem: { syslog: [{ ...syslog, tls: false }] } }), 'ok', 'plain TCP only when said so');
  t.match(check({ siem: { webhooks: [{ name: 'w', url: hook.url }] } }), /^gw\.yaml: siem\.webhooks\[0\]\.secret: /, 'a SIEM webhook is always signed');
});

t.test('secret references are resolved at start: a missing or wrong one names its key, never its value', async (t) => {
  delete process.env['TG_MISSING_HOOK_KEY'];
  const failed = await startTestGateway({ targets: [], extra: { notifications: { webhooks: [{ name: 'h', url: 'http://127.0.0.1:1/x', secret: { env: 'TG_MISSING_HOOK_KEY' } }] } } }).then(() => null, (e: Error) => e);
  t.equal(failed?.message, '<test>: notifications.webhooks[0].secret: environment variable TG_MISSING_HOOK_KEY to be set');
  process.env['TG_HOOK_URL'] = 'not a url';
  t.teardown(() => { delete process.env['TG_HOOK_URL']; });
  const bad = await startTestGateway({ targets: [], extra: { notifications: { webhooks: [{ name: 's', format: 'slack', url: { env: 'TG_HOOK_URL' } }] } } }).then(() => null, (e: Error) => e);
  t.equal(bad?.message, '<test>: notifications.webhooks[0].url: an http:// or https:// URL (the secret holds something else)');
  t.notMatch(bad?.message ?? '', /not a url/, 'the value is not shown');
  const siem = await startTestGateway({ targets: [], extra: { siem: { syslog: [{ host: '127.0.0.1', tls: { ca: { file: '/nonexistent/ca.pem' } } }] } } }).then(() => null, (e: Error) => e);
  t.equal(siem?.message, '<test>: siem.syslog[0].tls.ca: file /nonexistent/ca.pem to exist');
});
