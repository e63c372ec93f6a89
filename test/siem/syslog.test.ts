/**
 * SIEM push to syslog, received by Debian's rsyslog (imtcp with TLS, gtls): messages are RFC 5424
 * as rsyslog parses them, octet-counted; a gateway killed (SIGKILL) mid-stream and started again
 * on its data dir resumes from the acknowledged sequence, and rsyslog ends up with every event, in
 * order (an event after a crash may come twice: at least once, documented); a clean stop sends
 * what is left first; a connection cut in the middle of a batch gets the batch sent again (the
 * receiver has some events twice, still in order); a receiver whose certificate the configured CA
 * did not sign gets nothing.
 */
import t, { type Test } from 'tap';
import { fromModule } from '../../proxy/audit-events.js';
import { fork } from 'node:child_process';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureTlsMaterial } from '../../proxy/tls.js';
import { frame, syslogMessage } from '../../proxy/siem/syslog.js';
import type { AuditEventRecord } from '../../proxy/store/types.js';
import { startTestGateway } from '../support/gateway.js';
import { haveRsyslog, startRsyslog, type SyslogLine } from '../support/rsyslog.js';

const root = join(import.meta.dirname, '..', '..');

t.test('message format: RFC 5424 header, escaped structured data, octet count in bytes, oversized data replaced', async (t) => {
  const fmt = { facility: 10, appName: 'tollgate', hostname: 'gw.example', procId: 'gw1', sdId: 'tollgate@32473', maxMessageBytes: 2048 };
  const e: AuditEventRecord = { seq: 7, at: Date.UTC(2026, 10, 24, 9, 30, 1, 250), actor: 'al"i]ce\\', action: 'session.rule.kill', subject: 's1', data: { text: 'rm -rf /' }, prevHash: 'a'.repeat(64), hash: 'b'.repeat(64), mac: 'c'.repeat(64) };
  const m = syslogMessage(e, fmt);
  t.equal(m.slice(0, m.indexOf('{')),
    `<84>1 2026-11-24T09:30:01.250Z gw.example tollgate gw1 session.rule.kill [tollgate@32473 seq="7" actor="al\\"i\\]ce\\\\" subject="s1" hash="${'b'.repeat(64)}"] `,
    'PRI = authpriv (10) × 8 + warning (4); ", ] and \\ escaped in SD-PARAM values');
  t.same(JSON.parse(m.slice(m.indexOf('{'))), { seq: 7, at: e.at, actor: e.actor, action: e.action, subject: 's1', data: e.data, prevHash: e.prevHash, hash: e.hash, mac: e.mac }, 'the event as the audit log holds it');
  t.match(syslogMessage({ ...e, action: 'request.created' }, fmt), /^<86>1 /, 'info otherwise');
  t.match(syslogMessage({ ...e, action: 'weird action\u00e9' }, fmt), / weird_action_ \[/, 'MSGID is printable ASCII without spaces');
  const u = syslogMessage({ ...e, data: { t: 'é' } }, fmt);
  const f = frame(u);
  t.equal(f.toString('utf8'), `${Buffer.byteLength(u)} ${u}`, 'the octet count counts bytes, not characters');
  const big = syslogMessage({ ...e, data: { blob: 'x'.repeat(5000) } }, fmt);
  t.ok(Buffer.byteLength(big) <= 2048);
  t.match(JSON.parse(big.slice(big.indexOf('{'))), { seq: 7, data: { truncated: true, bytes: Number }, hash: e.hash }, 'an oversized event keeps its place with its size');
});

if (!haveRsyslog) {
  t.fail('rsyslogd with the gtls driver is not installed (apt-get install rsyslog rsyslog-gnutls; proxy/bin/ensure-deps.js does it)');
} else {
  const rs = await startRsyslog();
  t.teardown(() => rs.stop());
  const siem = (hostname: string, ca = rs.ca) => ({
    syslog: [{ name: 'soc', host: '127.0.0.1', port: rs.port, tls: { ca: { value: ca }, servername: 'localhost' }, batch: 20, hostname }],
    retry: { initialDelay: '100ms', maxDelay: '500ms' },
  });
  const from = (hostname: string) => rs.lines().filter((l) => l.hostname === hostname);

  /** Every event 1..head arrived, first occurrences in ascending order, no gap ever; repeats only as a replayed run. */
  function checkStream(t: Test, lines: SyslogLine[], head: number): { duplicates: number } {
    t.ok(lines.every((l) => l.event), 'every message is a whole event');
    const seqs = lines.map((l) => l.event!.seq);
    let max = 0;
    const gaps: string[] = [];
    for (const [i, s] of seqs.entries()) {
      if (s > max + 1) gaps.push(`after ${max} came ${s} (line ${i + 1})`);
      if (i > 0 && s !== seqs[i - 1]! + 1 && s > seqs[i - 1]!) gaps.push(`${seqs[i - 1]} then ${s}`);
      max = Math.max(max, s);
    }
    t.same(gaps, [], 'no gap and nothing out of order');
    const first = [...new Set(seqs)];
    t.same(first, Array.from({ length: head }, (_, i) => i + 1), `every event 1..${head}, in order`);
    return { duplicates: seqs.length - first.length };
  }

  t.test('a gateway killed mid-stream resumes from the acknowledged sequence: rsyslog has every event, in order', async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tg-siem-crash-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
    const cfg = siem('gw-crash');
    const child = fork(join(root, 'test/support/siem-child.ts'), [dataDir], {
      execArgv: ['--import=tsx'], stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: { ...process.env, TG_SIEM_CONFIG: JSON.stringify(cfg) },
    });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, sig) => r(sig)));
    t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
    await new Promise<void>((resolve, reject) => { child.once('message', () => resolve()); child.once('exit', () => reject(new Error(`the child died: ${err}`))); });
    await rs.waitFor(() => from('gw-crash').length >= 60, 30_000, 'the stream to start');
    child.kill('SIGKILL');
    t.equal(await exited, 'SIGKILL', 'killed, not stopped');
    await new Promise((r) => setTimeout(r, 500));
    const atKill = from('gw-crash');

    const tg = await startTestGateway({ targets: [], store: 'sqlite', dataDir, extra: { siem: cfg } });
    t.teardown(() => tg.close());
    const restarted = (await tg.store.listAudit({ action: 'gateway.started' })).pop()!;
    const beforeRestart = restarted.seq - 1;
    t.ok(atKill[atKill.length - 1]!.event!.seq < beforeRestart, `mid-stream: rsyslog had ${atKill.length} lines (to seq ${atKill[atKill.length - 1]!.event!.seq}) of ${beforeRestart} events when the gateway died`);
    for (let i = 0; i < 30; i++) await tg.gw.audit.append('bob', fromModule('test.after'), `a${i}`, { i });
    const head = (await tg.store.lastAudit())!.seq;
    t.ok(await tg.gw.siem.caughtUp(head, 60_000), 'the sink acknowledged the head');
    await new Promise((r) => setTimeout(r, 300));
    const lines = from('gw-crash');
    const { duplicates } = checkStream(t, lines, head);
    t.comment(`${lines.length} messages for ${head} events: ${duplicates} sent again after the crash (at least once)`);
    const stored = new Map((await tg.store.listAudit({ limit: 100_000 })).map((e) => [e.seq, e]));
    t.ok(lines.every((l) => l.event!.hash === stored.get(l.event!.seq)!.hash && l.event!.mac === stored.get(l.event!.seq)!.mac), 'each message carries the stored event (hash and HMAC)');
    const burst = lines.find((l) => l.msgId === 'test.burst')!;
    t.match(burst, { version: '1', facility: 10, severity: 6, hostname: 'gw-crash', appName: 'tollgate', procId: 'test', msgId: 'test.burst' }, 'rsyslog parsed RFC 5424: version, facility, severity, host, app, procid, msgid');
    t.match(burst.structuredData, new RegExp(`^\\[tollgate@32473 seq="${burst.event!.seq}" actor="alice" subject="e\\d+" hash="[0-9a-f]{64}"\\]$`));
    t.same(burst.event!.data.text, 'héllo "quoted" ]', 'UTF-8 and quotes survive');
    const st = await tg.api('carol', 'GET', '/api/v1/siem');
    t.match(st.body, [{ sink: 'syslog:soc', kind: 'syslog', where: `127.0.0.1:${rs.port}`, seq: head, head, behind: 0, holder: 'test', failures: 0, lastError: null }]);
    t.equal((await tg.api('bob', 'GET', '/api/v1/siem')).status, 403, 'SOC only');
  });

  t.test('a clean stop sends what is left first, up to gateway.stopped', async (t) => {
    const tg = await startTestGateway({ targets: [], extra: { siem: siem('gw-drain') } });
    let closed = false;
    t.teardown(() => (closed ? undefined : tg.close()));
    for (let i = 0; i < 200; i++) void tg.gw.audit.append('alice', fromModule('test.drain'), null, { i });
    await tg.close();
    closed = true;
    const lines = from('gw-drain');
    checkStream(t, lines, lines.length ? Math.max(...lines.map((l) => l.event!.seq)) : 1);
    t.equal(lines[lines.length - 1]!.msgId, 'gateway.stopped', 'the last event before the stop is there');
  });

  t.test('a connection cut in the middle of a batch: not acknowledged, sent again whole; rsyslog has repeats, in order, no gap', async (t) => {
    // A TCP relay in front of rsyslog that resets the first connection carrying more than 40 KB (a network
    // failure in the middle of a batch: TLS records of 16 KB before the cut reach rsyslog whole).
    let conns = 0;
    let cut = false;
    const relay = net.createServer((c) => {
      conns++;
      const up = net.connect(rs.port, '127.0.0.1');
      let bytes = 0;
      c.on('data', (d: Buffer) => {
        bytes += d.length;
        // rsyslog reads what came before the cut (then the stream ends); the gateway's side is reset.
        if (!cut && bytes > 40_000) { cut = true; up.end(d.subarray(0, 40_000 - (bytes - d.length))); c.resetAndDestroy(); return; }
        up.write(d);
      });
      up.on('data', (d) => c.write(d));
      c.on('end', () => up.end());
      up.on('end', () => c.end());
      for (const s of [c, up]) s.on('error', () => { c.destroy(); up.destroy(); });
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
    t.teardown(() => new Promise<void>((r) => relay.close(() => r())));
    const port = (relay.address() as net.AddressInfo).port;
    const cfg = siem('gw-cut');
    cfg.syslog[0] = { ...cfg.syslog[0]!, port, batch: 200 };
    const tg = await startTestGateway({ targets: [], extra: { siem: cfg } });
    t.teardown(() => tg.close());
    for (let i = 0; i < 300; i++) void tg.gw.audit.append('alice', fromModule('test.cut'), null, { i, pad: 'x'.repeat(400) });
    await tg.gw.audit.append('alice', fromModule('test.cut'), null, { last: true });
    const head = (await tg.store.lastAudit())!.seq;
    t.ok(await tg.gw.siem.caughtUp(head, 30_000), 'acknowledged to the head in the end');
    await new Promise((r) => setTimeout(r, 300));
    t.ok(cut && conns >= 2, `the cut batch went again over a new connection (${conns} connections)`);
    const lines = from('gw-cut').filter((l) => l.event && l.event.seq <= head);
    const { duplicates } = checkStream(t, lines, head);
    t.ok(duplicates > 0, `what arrived before the cut came again (${duplicates} repeats): at least once, not at most once`);
    t.match((await tg.store.listAudit({ action: 'siem.failing' }))[0]?.data, { error: /ECONNRESET|closed/ }, 'the failure is audited');
  });

  t.test('a receiver the configured CA did not sign gets nothing; the failure shows and is audited', async (t) => {
    const other = mkdtempSync(join(tmpdir(), 'tg-other-ca-'));
    t.teardown(() => rmSync(other, { recursive: true, force: true }));
    const tg = await startTestGateway({ targets: [], extra: { siem: siem('gw-badca', ensureTlsMaterial(other, ['127.0.0.1']).ca) } });
    t.teardown(() => tg.close());
    let st: any;
    const deadline = Date.now() + 15_000;
    do {
      await new Promise((r) => setTimeout(r, 100));
      st = (await tg.api('carol', 'GET', '/api/v1/siem')).body[0];
    } while (st.failures < 2 && Date.now() < deadline);
    t.match(st, { sink: 'syslog:soc', seq: 0, failures: Number, lastError: /127\.0\.0\.1:\d+: (UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|ERR_TLS_CERT_ALTNAME_INVALID|CERT_SIGNATURE_FAILURE)/ });
    t.ok(st.failures >= 2, 'tried again with backoff');
    t.ok(st.behind > 0);
    t.same(from('gw-badca'), [], 'nothing reached rsyslog');
    t.match(await tg.store.listAudit({ action: 'siem.failing' }), [{ subject: 'syslog:soc', data: { seq: 0 } }], 'audited once when it started failing');
  });
}
