/**
 * Child process for test/siem/syslog.test.ts: a gateway on the data dir given as argv[2] with the
 * `siem:` section from TG_SIEM_CONFIG (JSON), appending a backlog of audit events and then bursts faster
 * than the stream sends them, until the parent kills it (SIGKILL: a crash mid-stream).
 */
import { startTestGateway } from './gateway.js';
import { fromModule } from '../../proxy/audit-events.js';

// The parent gone (a test that failed before killing it): go too.
process.on('disconnect', () => process.exit(1));

const tg = await startTestGateway({ targets: [], store: 'sqlite', dataDir: process.argv[2]!, extra: { siem: JSON.parse(process.env['TG_SIEM_CONFIG']!) } });
let i = 0;
// A backlog first, so the gateway dies with events the stream has not sent yet even on a machine where
// the stream keeps up with the bursts below (2,000 events: batches of 20 take seconds to send).
const backlog: Promise<unknown>[] = [];
for (let k = 0; k < 2000; k++) backlog.push(tg.gw.audit.append('alice', fromModule('test.burst'), `e${i}`, { i: i++, text: 'héllo "quoted" ]' }));
await Promise.all(backlog);
const burst = () => {
  for (let k = 0; k < 50; k++) void tg.gw.audit.append('alice', fromModule('test.burst'), `e${i}`, { i: i++, text: 'héllo "quoted" ]' });
  setTimeout(burst, 20);
};
burst();
process.send!({ ready: true });
