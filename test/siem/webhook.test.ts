/**
 * SIEM push to a webhook (a real HTTP receiver): batches in sequence order, each signed; a batch
 * the receiver refuses is sent again, whole, until it is taken; a restart resumes from the last
 * acknowledged sequence; a sink added with `from: now` starts at the end of the log.
 */
import t from 'tap';
import { fromModule } from '../../proxy/audit-events.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Secret } from '../../auth/secret.js';
import { checkSignature } from '../../proxy/notifications/webhook.js';
import { startTestGateway } from '../support/gateway.js';
import { startReceiver, type Received } from '../support/receivers.js';

const KEY = 'siem-key-0123456789abcdef';

t.test('batches in order, signed; refused ones are sent again; a restart resumes; from: now starts at the end', async (t) => {
  const hook = await startReceiver();
  t.teardown(() => hook.close());
  const dataDir = mkdtempSync(join(tmpdir(), 'tg-siem-hook-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const siem = (extra: object[] = []) => ({
    webhooks: [{ name: 'siem', url: hook.url, secret: { value: KEY }, batch: 10 }, ...extra],
    retry: { initialDelay: '100ms', maxDelay: '300ms' },
  });
  const bodies = (sink = '/hook/s3cr3t-path') => hook.requests.filter((r) => r.path === sink && r.headers['x-tollgate-event'] === 'audit');
  const seqsOf = (rs: Received[]) => rs.flatMap((r) => (JSON.parse(r.body).events as { seq: number }[]).map((e) => e.seq));

  const taken: Received[] = [];
  const refused: Received[] = [];
  hook.answer = (r) => { taken.push(r); return 200; };
  const first = await startTestGateway({ targets: [], dataDir, extra: { siem: siem() } });
  for (let i = 0; i < 25; i++) await first.gw.audit.append('alice', fromModule('test.one'), null, { i });
  t.ok(await first.gw.siem.caughtUp(undefined, 15_000));
  const sent = bodies();
  t.same(sent, taken, 'all taken');
  for (const r of sent) t.equal(checkSignature(new Secret(KEY), r.body, r.headers['x-tollgate-signature'], Math.floor(Date.now() / 1000)), null, 'signed');
  t.ok(sent.every((r) => JSON.parse(r.body).events.length <= 10), 'at most `batch` events per request');
  t.match(JSON.parse(sent[0]!.body), { gateway: 'test', events: [{ seq: 1, action: String, hash: /^[0-9a-f]{64}$/, mac: /^[0-9a-f]{64}$/ }] });
  const head1 = (await first.store.lastAudit())!.seq;
  t.same(seqsOf(sent), Array.from({ length: head1 }, (_, i) => i + 1), 'every event once, in order');

  // The receiver refuses for a while: the same batch comes again until it is taken.
  hook.answer = (r) => { refused.push(r); return 503; };
  await first.gw.audit.append('alice', fromModule('test.refused'), null, {});
  await hook.waitFor(() => refused.length >= 3, 10_000, 'retries');
  t.same([...new Set(refused.map((r) => seqsOf([r])[0]))], [head1 + 1], 'each retry starts again right after the acknowledged seq (with what was appended meanwhile, e.g. siem.failing)');
  const st = (await first.api('carol', 'GET', '/api/v1/siem')).body[0];
  t.match(st, { sink: 'webhook:siem', kind: 'webhook', where: `http://127.0.0.1:${hook.port}`, seq: head1, lastError: /answered 503/ });
  t.ok(st.behind >= 1 && st.failures >= 3);
  t.notMatch(JSON.stringify(st), /s3cr3t-path/, 'the URL path is not shown');
  // A restart while it still refuses; the stop's drain gives up, nothing is acknowledged.
  await first.close();

  hook.answer = (r) => { taken.push(r); return 200; };
  const second = await startTestGateway({ targets: [], dataDir, extra: { siem: siem([{ name: 'late', url: `http://127.0.0.1:${hook.port}/late`, secret: { value: KEY }, from: 'now' }]) } });
  t.teardown(() => second.close());
  const startedAt = (await second.store.listAudit({ action: 'gateway.started' })).pop()!.seq;
  for (let i = 0; i < 5; i++) await second.gw.audit.append('bob', fromModule('test.two'), null, { i });
  const head2 = (await second.store.lastAudit())!.seq;
  t.ok(await second.gw.siem.caughtUp(head2, 15_000));
  const seqs = seqsOf(taken.filter((r) => r.path === '/hook/s3cr3t-path'));
  t.same([...new Set(seqs)], Array.from({ length: head2 }, (_, i) => i + 1), 'after the restart: every event, in order, from where it stopped');
  t.equal(seqs.length, head2, 'nothing that was acknowledged came twice');
  const late = seqsOf(bodies('/late'));
  const stoppedAt = (await second.store.listAudit({ action: 'gateway.stopped' })).pop()!.seq;
  t.ok(late.length > 0 && late[0]! > stoppedAt && late[0]! <= startedAt, `from: now begins at the end of the log when it was added (seq ${late[0]}, the first run stopped at ${stoppedAt})`);
  t.same(late, Array.from({ length: head2 - late[0]! + 1 }, (_, i) => late[0]! + i));
});
