/**
 * The start-up phase, direct vs through the gateway, from a raw client: which messages a client
 * gets for the start-up packets drivers send — a plain 3.0 start-up with parameters, a newer
 * minor protocol version and `_pq_.` protocol options (NegotiateProtocolVersion, as PostgreSQL
 * 15 answers), and a parameter the server does not know. Part of the fidelity summary (mode
 * `start-up`).
 */
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { serialize } from 'pg-protocol';
import { havePostgres } from '../../support/pg.js';
import { failed, judge, normalise, passed, reportSummary, summarise, type AcceptedDifference, type Rule, type Verdict } from '../common.js';
import { FrameSplitter, Reader, decodeErrorFields } from '../../../protocols/postgres/framing.js';
import { ScramClient } from '../../../protocols/postgres/scram.js';
import { PG_RULES, startFidelity, type Endpoint } from './harness.js';

const V3_0 = 3 << 16;

interface StartupCase { name: string; version: number; params: Record<string, string>; query?: string }

const CASES: StartupCase[] = [
  {
    name: 'protocol 3.0 with parameters', version: V3_0,
    params: { application_name: 'fidelity', client_encoding: 'UTF8', DateStyle: 'ISO, DMY', TimeZone: 'Europe/Paris', options: '-c search_path=public -c work_mem=8MB' },
    query: "SELECT current_setting('application_name'), current_setting('DateStyle'), current_setting('TimeZone'), current_setting('search_path'), current_setting('work_mem')",
  },
  { name: 'protocol 3.2 and a _pq_ option', version: V3_0 | 2, params: { '_pq_.fidelity_option': 'on', application_name: 'fidelity' }, query: 'SELECT 1' },
  { name: 'protocol 3.0 and _pq_ options', version: V3_0, params: { '_pq_.one': '1', '_pq_.two': '2' }, query: 'SELECT 2' },
  { name: 'a parameter the server does not know', version: V3_0, params: { no_such_setting: 'x' }, query: 'SELECT 3' },
];

const ACCEPTED: AcceptedDifference[] = [{
  case: 'a parameter the server does not know',
  reason: 'the gateway sends AuthenticationOk only once the database server has accepted the session role, and says in its FATAL that the database server refused the session (same SQLSTATE 42704, the server\'s message after its prefix)',
  lines: /^(AuthenticationOk|ErrorResponse FATAL 42704 (database server refused the session: )?unrecognized configuration parameter "no_such_setting")$/,
}];

const RULES: Rule[] = [
  ...PG_RULES,
  { pattern: /SCRAM-SHA-256-PLUS,/, with: '', why: 'channel binding (-PLUS) is offered only over TLS; the direct runs are not encrypted' },
];

/** One start-up from a raw socket: every message as a line (values that differ by nature left out). */
function startup(e: Endpoint, c: StartupCase): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines: string[] = [];
    const raw = net.connect({ host: e.host, port: e.port });
    let sock: net.Socket = raw;
    const split = new FrameSplitter(1 << 24);
    let scram: ScramClient | null = null;
    let queried = false;
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`start-up "${c.name}" timed out`)); }, 30_000);
    const finish = () => { clearTimeout(timer); resolve(lines.join('\n') + '\n'); };
    const send = () => {
      const body: Buffer[] = [];
      for (const [k, v] of Object.entries({ user: e.user, database: e.database, ...c.params })) body.push(Buffer.from(`${k}\0${v}\0`, 'utf8'));
      body.push(Buffer.from([0]));
      const head = Buffer.alloc(8);
      const b = Buffer.concat(body);
      head.writeUInt32BE(8 + b.length, 0);
      head.writeUInt32BE(c.version, 4);
      sock.write(Buffer.concat([head, b]));
    };
    const onData = (d: Buffer) => {
      for (const f of split.push(d)) {
        const r = new Reader(f.body);
        switch (f.type) {
          case 'v': {
            // PostgreSQL sends its newest version as a whole protocol number (3.0 = 196608).
            const newest = r.int32();
            const n = r.int32();
            const opts = Array.from({ length: n }, () => r.cstring());
            lines.push(`NegotiateProtocolVersion ${newest >>> 16}.${newest & 0xffff} not understood: ${opts.join(', ') || '(none)'}`);
            break;
          }
          case 'R': {
            const code = r.int32();
            if (code === 0) lines.push('AuthenticationOk');
            else if (code === 10) {
              const mechs: string[] = [];
              for (let m = r.cstring(); m; m = r.cstring()) mechs.push(m);
              lines.push(`AuthenticationSASL ${mechs.join(',')}`);
              scram = new ScramClient(e.password);
              sock.write(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.clientFirst()));
            } else if (code === 11) {
              lines.push('AuthenticationSASLContinue');
              sock.write(serialize.sendSCRAMClientFinalMessage(scram!.serverFirst(r.rest().toString('utf8'))));
            } else if (code === 12) {
              scram!.serverFinal(r.rest().toString('utf8'));
              lines.push('AuthenticationSASLFinal (server proof checked)');
            } else if (code === 3) {
              lines.push('AuthenticationCleartextPassword');
              sock.write(serialize.password(e.password));
            } else lines.push(`Authentication ${code}`);
            break;
          }
          case 'S': lines.push(`ParameterStatus ${r.cstring()}=${r.cstring()}`); break;
          case 'K': lines.push('BackendKeyData'); break;
          case 'E': case 'N': {
            const x = decodeErrorFields(f.body);
            lines.push(`${f.type === 'E' ? 'ErrorResponse' : 'NoticeResponse'} ${x.severity} ${x.code} ${x.message}`);
            break;
          }
          case 'T': lines.push('RowDescription'); break;
          case 'D': {
            const n = r.int16();
            const vals = Array.from({ length: n }, () => { const len = r.int32(); return len < 0 ? 'NULL' : r.bytes(len).toString('utf8'); });
            lines.push(`DataRow ${vals.join(' | ')}`);
            break;
          }
          case 'C': lines.push(`CommandComplete ${r.cstring()}`); break;
          case 'Z': {
            lines.push(`ReadyForQuery ${String.fromCharCode(r.byte())}`);
            if (c.query && !queried) { queried = true; sock.write(serialize.query(c.query)); } else { sock.end(serialize.end()); }
            break;
          }
          default: lines.push(`message '${f.type}'`);
        }
      }
    };
    raw.on('error', (err) => { clearTimeout(timer); reject(err); });
    raw.once('connect', () => {
      if (!e.ca) {
        raw.on('data', onData);
        raw.on('close', finish);
        send();
        return;
      }
      raw.write(serialize.requestSsl());
      raw.once('data', (b: Buffer) => {
        if (b[0] !== 0x53) { clearTimeout(timer); reject(new Error('TLS refused')); return; }
        const s = tls.connect({ socket: raw, ca: e.ca, checkServerIdentity: (_h, cert) => tls.checkServerIdentity(e.host, cert) });
        sock = s;
        s.on('error', (err) => { clearTimeout(timer); reject(err); });
        s.on('data', onData);
        s.on('close', finish);
        s.once('secureConnect', send);
      });
    });
  });
}

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required');
} else {
  const fid = await startFidelity(t);
  await fid.freshDb();
  const verdicts: Verdict[] = [];
  for (const c of CASES) {
    t.test(c.name, async (t) => {
      try {
        const direct = await startup(await fid.endpoint('direct'), c);
        const gateway = await startup(await fid.endpoint('gateway'), c);
        await fid.settle('gateway');
        t.match(direct, /\nReadyForQuery I\n|\nErrorResponse FATAL/, 'the direct start-up ended in ReadyForQuery or a FATAL');
        const v = judge(c.name, 'start-up', normalise(direct, RULES), normalise(gateway, RULES), ACCEPTED);
        verdicts.push(v);
        if (v.status === 'identical') t.pass('identical');
        else if (v.status === 'accepted') t.pass(`accepted difference: ${v.reason}`);
        else t.fail(`direct and gateway differ:\n${v.diff}`);
        if (c.version !== V3_0 || Object.keys(c.params).some((k) => k.startsWith('_pq_.'))) {
          t.match(gateway, /^NegotiateProtocolVersion 3\.0 not understood: /, 'NegotiateProtocolVersion first, as from PostgreSQL 15');
          t.match(gateway, /\nDataRow \d\nCommandComplete SELECT 1\nReadyForQuery I\n/, 'then the session works in 3.0');
        }
      } catch (e) {
        verdicts.push(failed(c.name, 'start-up', e));
        t.fail(`run failed: ${(e as Error).message}`);
      }
    });
  }
  t.test('summary', async (t) => {
    const s = summarise('postgres', 'start-up', verdicts, ACCEPTED);
    reportSummary(t, s);
    t.ok(passed(s), `postgres start-up: ${s.identical}/${s.total} identical, ${s.accepted.length} accepted`);
  });
}
