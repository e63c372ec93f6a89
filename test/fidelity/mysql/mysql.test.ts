/**
 * MySQL/MariaDB wire fidelity: the same work directly against a real MariaDB and through the
 * gateway, diffed after normalising what legitimately differs per session (the session account's
 * name). Two kinds of case (see cases.ts and driver-cases.ts):
 *  - MariaDB's own mysql-test cases run by mariadb-test (libmariadb) in text protocol, with
 *    prepared statements (--ps-protocol) and, for some, with cursors (--cursor-protocol):
 *    their recorded result files, exit codes and last messages must be the same;
 *  - driver cases with mysql2 and MariaDB's `mariadb` connector: what the driver hands back.
 * `npm test` runs the fast subset; `npm run test:fidelity` (TOLLGATE_FIDELITY=full) every case;
 * TOLLGATE_FIDELITY_CASES=a,b narrows a run to named cases. See README.md in this folder.
 */
import t, { type Test } from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { failed, judge, normalise, passed, reportSummary, selectCases, summarise, type Verdict } from '../common.js';
import { ACCEPTED, FAST, MYSQLTEST_CASES } from './cases.js';
import { DRIVER_CASES, openDriver, show } from './driver-cases.js';
import { MYSQL_RULES, SCRATCH_DB, mysqltestTranscript, startMysqlFidelity, type TestMode, type Via } from './harness.js';

const fid = await startMysqlFidelity(t);

interface Named { name: string; kind: 'mysqltest' | 'driver' }
const all: Named[] = [
  ...MYSQLTEST_CASES.map((c) => ({ name: c.name, kind: 'mysqltest' as const })),
  ...DRIVER_CASES.map((c) => ({ name: c.name, kind: 'driver' as const })),
];
const selected = new Set(selectCases(all, (c) => c.name, FAST).map((c) => c.name));
const verdicts: Verdict[] = [];
const modes = new Set<string>();

/** TOLLGATE_FIDELITY_DUMP=<dir>: keep both normalised outputs of every case there (to study a difference). */
const dumpDir = process.env['TOLLGATE_FIDELITY_DUMP'];
const dump = (name: string, mode: string, direct: string, gateway: string) => {
  if (!dumpDir) return;
  mkdirSync(dumpDir, { recursive: true });
  writeFileSync(join(dumpDir, `${name}.${mode}.direct`), direct);
  writeFileSync(join(dumpDir, `${name}.${mode}.gateway`), gateway);
};

const check = (t: Test, v: Verdict) => {
  verdicts.push(v);
  modes.add(v.mode);
  if (v.status === 'identical') t.pass(`identical (${v.bytes} bytes)`);
  else if (v.status === 'accepted') t.pass(`accepted difference: ${v.reason}`);
  else t.fail(v.status === 'failed' ? `run failed: ${v.reason}` : `direct and gateway differ:\n${v.diff}`);
};

for (const c of MYSQLTEST_CASES) {
  if (!selected.has(c.name)) continue;
  for (const mode of c.modes) {
    t.test(`${c.name} (${mode})`, async (t) => {
      const t0 = Date.now();
      try {
        const direct = await fid.mysqltest(c.name, mode, 'direct');
        const gateway = await fid.mysqltest(c.name, mode, 'gateway');
        // a run that never reached the server would compare equal to another such run
        t.equal(direct.code, 0, `the direct run passes (${direct.log.trim().split('\n').pop() ?? ''})`);
        t.ok(direct.result.length > 0, 'the direct run recorded a result');
        const [d, g] = [normalise(mysqltestTranscript(direct), MYSQL_RULES), normalise(mysqltestTranscript(gateway), MYSQL_RULES)];
        dump(c.name, mode, d, g);
        check(t, judge(c.name, mode, d, g, ACCEPTED, Date.now() - t0));
      } catch (e) {
        check(t, failed(c.name, mode, e, Date.now() - t0));
      }
    });
  }
}

async function driverRun(name: string, via: Via): Promise<string> {
  const c = DRIVER_CASES.find((x) => x.name === name)!;
  await fid.freshDb();
  const e = await fid.endpoint(via);
  const d = await openDriver(c.driver, e, SCRATCH_DB, c.options);
  try {
    for (const s of c.setup ?? []) {
      if (c.driver === 'mysql2') await d.conn.mysql2.query(s);
      else await d.conn.mariadb.query(s);
    }
    const out = await c.run(d.conn);
    return out.map((x) => show(x)).join('\n') + '\n';
  } finally {
    await d.close();
    await fid.settle(via);
  }
}

for (const c of DRIVER_CASES) {
  if (!selected.has(c.name)) continue;
  t.test(`${c.name} (${c.driver})`, async (t) => {
    const t0 = Date.now();
    try {
      const direct = await driverRun(c.name, 'direct');
      const gateway = await driverRun(c.name, 'gateway');
      const [d, g] = [normalise(direct, MYSQL_RULES), normalise(gateway, MYSQL_RULES)];
      dump(c.name, c.driver, d, g);
      check(t, judge(c.name, c.driver, d, g, ACCEPTED, Date.now() - t0));
    } catch (e) {
      check(t, failed(c.name, c.driver, e, Date.now() - t0));
    }
  });
}

t.test('the comparison notices a gateway that answers differently', async (t) => {
  // Role 'tampered' denies statements naming t_tampered: its answers differ from the server's.
  const mode: TestMode = 'text';
  const run = async (via: Via, role: 'fid' | 'tampered') => {
    await fid.freshDb();
    const e = await fid.endpoint(via, role);
    const d = await openDriver('mysql2', e, SCRATCH_DB, { multipleStatements: true });
    try {
      const out: string[] = [];
      for (const s of ['CREATE TABLE t_tampered (id INT)', 'INSERT INTO t_tampered VALUES (1)', 'SELECT * FROM t_tampered']) {
        try { out.push(show((await d.conn.mysql2.query(s))[0])); } catch (err) { out.push(show({ error: (err as { errno?: number }).errno, message: (err as Error).message })); }
      }
      return out.join('\n');
    } finally {
      await d.close();
      await fid.settle(via);
    }
  };
  const v = judge('tampered', mode, normalise(await run('direct', 'fid'), MYSQL_RULES), normalise(await run('gateway', 'tampered'), MYSQL_RULES));
  t.equal(v.status, 'different');
  t.match(v.diff, /\+.*blocked by Tollgate policy: t_tampered is off limits/, "the diff shows the gateway's error");
  const same = judge('untampered', mode, normalise(await run('direct', 'fid'), MYSQL_RULES), normalise(await run('gateway', 'fid'), MYSQL_RULES));
  t.equal(same.status, 'identical', 'and the same work through the untampered role compares identical');
});

t.test('summary', async (t) => {
  for (const mode of [...modes].sort()) {
    const s = summarise('mysql', mode, verdicts, ACCEPTED.filter((a) => selected.has(a.case)));
    reportSummary(t, s);
    t.ok(passed(s), `mysql ${mode}: ${s.identical}/${s.total} identical, ${s.accepted.length} accepted`);
  }
  t.ok(modes.size > 0, 'some cases ran');
});
