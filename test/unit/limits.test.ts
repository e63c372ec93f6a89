/** The pure parts of the pre-authentication limits: source addresses, the failure throttle, pending bounds, their config. */
import t from 'tap';
import { ManualClock } from '../../policies/clock.js';
import { sourceOf, formatAddr } from '../../protocols/net.js';
import { FailureThrottle, PendingLimit, TooManyPending } from '../../proxy/limits.js';
import { ConfigError, validateConfig } from '../../proxy/config.js';
import { preauthOf } from '../../proxy/gateway.js';
import { moduleMap } from '../../protocols/index.js';

t.test('sourceOf: IPv4 (also mapped and with a port), IPv6 as its /64', async (t) => {
  t.equal(sourceOf('10.1.2.3'), '10.1.2.3');
  t.equal(sourceOf('10.1.2.3:5432'), '10.1.2.3');
  t.equal(sourceOf('::ffff:10.1.2.3'), '10.1.2.3');
  t.equal(sourceOf('0000:0000:0000:0000:0000:ffff:0a01:0203'), '10.1.2.3', 'the long form uWebSockets.js prints');
  t.equal(sourceOf('[::ffff:10.1.2.3]:40000'), '10.1.2.3');
  t.equal(sourceOf('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  t.equal(sourceOf('2001:db8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64', 'one /64 is one source');
  t.equal(sourceOf(formatAddr('2001:db8:1:2::9', 22)), '2001:db8:1:2::/64', 'formatAddr brackets IPv6 so it reads back');
  t.equal(sourceOf('::1'), '0:0:0:0::/64');
  t.equal(formatAddr('127.0.0.1', 22), '127.0.0.1:22');
});

t.test('FailureThrottle: maxFailures within the window start a cooldown; old failures fall out of the window', async (t) => {
  const clock = new ManualClock();
  const th = new FailureThrottle(clock, { maxFailures: 3, windowMs: 60_000, cooldownMs: 120_000 });
  t.equal(th.fail('1.2.3.4:1', 'a'), null);
  clock.advance(61_000);
  t.equal(th.fail('1.2.3.4:2', 'b'), null, 'the first failure is out of the window');
  t.equal(th.fail('1.2.3.4:3', 'c'), null);
  t.equal(th.blockedFor('1.2.3.4'), 0);
  const started = th.fail('1.2.3.4:4', 'c');
  t.match(started, { source: '1.2.3.4', failures: 3, targets: ['b', 'c'] });
  t.equal(th.blockedFor('1.2.3.4:9'), 120_000, 'the whole address, any port');
  t.equal(th.blockedFor('1.2.3.5'), 0, 'not its neighbour');
  t.equal(th.fail('1.2.3.4', 'x'), null, 'failures during the cooldown start nothing new');
  clock.advance(120_000);
  t.equal(th.blockedFor('1.2.3.4'), 0, 'over after the cooldown');
  t.equal(th.fail('1.2.3.4', 'x'), null, 'and counting starts again');
});

t.test('FailureThrottle remembers a bounded number of sources', async (t) => {
  const clock = new ManualClock();
  const th = new FailureThrottle(clock, { maxFailures: 2, windowMs: 60_000, cooldownMs: 60_000, maxSources: 100 });
  for (let i = 0; i < 1000; i++) th.fail(`10.0.${i >> 8}.${i & 255}`, 't');
  t.ok((th as unknown as { sources: Map<string, unknown> }).sources.size <= 101, 'a spray of addresses cannot grow the map');
});

t.test('PendingLimit: per source and in total, release is idempotent', async (t) => {
  const l = new PendingLimit('things', 3, 2);
  const a = l.acquire('1.1.1.1:1');
  l.acquire('1.1.1.1:2');
  t.throws(() => l.acquire('1.1.1.1:3'), TooManyPending);
  t.throws(() => l.acquire('1.1.1.1'), /too many things are pending from your address/);
  l.acquire('2.2.2.2');
  t.throws(() => l.acquire('3.3.3.3'), /too many things are pending; try again/);
  a();
  a();
  t.equal(l.pending, 2, 'released once');
  t.doesNotThrow(() => l.acquire('3.3.3.3'));
});

t.test('config: listener limits, defaults, and no connection caps on the http listener', async (t) => {
  const mods = moduleMap();
  const cfg = validateConfig({ listeners: { http: { port: 0, loginTimeout: '5s' }, ssh: { port: 0, maxStartups: 5, maxStartupsPerSource: 2 } } }, 'g.yaml', mods);
  t.same(preauthOf(cfg.listeners['ssh']!), { loginTimeoutMs: 30_000, maxStartups: 5, maxStartupsPerSource: 2 });
  t.equal(preauthOf(cfg.listeners['http']!).loginTimeoutMs, 5000);
  t.same([cfg.gateway.maxFailures, cfg.gateway.failureWindow, cfg.gateway.failureCooldown], [10, '5m', '5m'], 'throttle defaults');
  t.throws(() => validateConfig({ listeners: { http: { port: 0, maxStartups: 5 } } }, 'g.yaml', mods), ConfigError);
  t.throws(() => validateConfig({ listeners: { http: { port: 0, maxStartupsPerSource: 5 } } }, 'g.yaml', mods), /listeners\.http\.maxStartupsPerSource: not set/);
  t.throws(() => validateConfig({ listeners: { ssh: { port: 0, maxStartups: 0 } } }, 'g.yaml', mods), /listeners\.ssh\.maxStartups/);
});
