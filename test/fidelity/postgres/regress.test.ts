/**
 * PostgreSQL's own regression SQL (sql/, from PostgreSQL 15.18) run directly and through the
 * gateway, diffed after normalising what legitimately differs per session. Two modes per case:
 *  - psql: the file through `psql -X -a -q` as pg_regress runs it (simple query protocol, COPY
 *    FROM STDIN, psql's own \d queries, notices, errors);
 *  - extended: the start-up (authentication steps, ParameterStatus, ReadyForQuery), then the
 *    file's statements through node-postgres with the extended protocol (named statement,
 *    Describe, Bind, named portal, Execute with a row limit and PortalSuspended, Close, Sync),
 *    every backend message in the transcript.
 * Both runs of a case start from a fresh copy of the same template database. `npm test` runs the
 * fast subset; `npm run test:fidelity` (TOLLGATE_FIDELITY=full) every case. See README.md.
 */
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { havePostgres } from '../../support/pg.js';
import { failed, judge, normalise, passed, reportSummary, selectCases, summarise, type Verdict } from '../common.js';
import { ACCEPTED, CASES, FAST } from './cases.js';
import { EXTENDED_RULES, PG_RULES, SQL_DIR, caseStatements, startFidelity } from './harness.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required (apt-get install postgresql postgresql-client)');
} else {
  const fid = await startFidelity(t);
  const cases: string[] = selectCases(CASES, (c) => c, FAST);
  const verdicts: Verdict[] = [];

  const check = (t: Test, v: Verdict) => {
    verdicts.push(v);
    if (v.status === 'identical') t.pass(`identical (${v.bytes} bytes)`);
    else if (v.status === 'accepted') t.pass(`accepted difference: ${v.reason}`);
    else t.fail(v.status === 'failed' ? `run failed: ${v.reason}` : `direct and gateway differ:\n${v.diff}`);
  };

  /** A run that never reached the server would compare equal to another such run: refuse it. */
  const ran = (t: Test, output: string, via: string) => {
    t.notMatch(output, /^psql: error:|could not connect|connection closed$/m, `the ${via} run reached the server`);
  };

  for (const name of cases) {
    const file = join(SQL_DIR, `${name}.sql`);
    t.test(`${name} (psql)`, async (t) => {
      const t0 = Date.now();
      try {
        const direct = await fid.psql(file, 'direct');
        const gateway = await fid.psql(file, 'gateway');
        ran(t, direct, 'direct');
        ran(t, gateway, 'gateway');
        check(t, judge(name, 'psql', normalise(direct, PG_RULES), normalise(gateway, PG_RULES), ACCEPTED, Date.now() - t0));
      } catch (e) {
        check(t, failed(name, 'psql', e, Date.now() - t0));
      }
    });
    t.test(`${name} (extended protocol)`, async (t) => {
      const t0 = Date.now();
      const statements = caseStatements(file);
      t.ok(statements.length > 0, `${statements.length} statements`);
      try {
        const direct = await fid.extended(statements, 'direct');
        const gateway = await fid.extended(statements, 'gateway');
        ran(t, direct, 'direct');
        ran(t, gateway, 'gateway');
        t.equal(direct.split('\nReadyForQuery ').length - 1, statements.length + 1, 'the start-up and every statement answered (one ReadyForQuery each)');
        check(t, judge(name, 'extended', normalise(direct, EXTENDED_RULES), normalise(gateway, EXTENDED_RULES), ACCEPTED, Date.now() - t0));
      } catch (e) {
        check(t, failed(name, 'extended', e, Date.now() - t0));
      }
    });
  }

  t.test('the comparison notices a gateway that answers differently', async (t) => {
    // Role 'tampered' has a deny rule for statements naming booltbl2: its replies differ from the server's.
    const file = join(SQL_DIR, 'boolean.sql');
    const psql = judge('boolean', 'psql', normalise(await fid.psql(file, 'direct'), PG_RULES),
      normalise(await fid.psql(file, 'gateway', { role: 'tampered' }), PG_RULES));
    t.equal(psql.status, 'different', 'psql mode');
    t.match(psql.diff, /\n\+ERROR:  blocked by Tollgate policy: booltbl2 is off limits\n/, "the diff shows the gateway's error");
    const statements = caseStatements(file);
    const ext = judge('boolean', 'extended', normalise(await fid.extended(statements, 'direct'), EXTENDED_RULES),
      normalise(await fid.extended(statements, 'gateway', { role: 'tampered' }), EXTENDED_RULES));
    t.equal(ext.status, 'different', 'extended mode');
    t.match(ext.diff, /\n\+ErrorResponse severity="ERROR" code="42501" message="blocked by Tollgate policy: booltbl2 is off limits"/, "the diff shows the gateway's error");
  });

  t.test('summary', async (t) => {
    for (const mode of ['psql', 'extended']) {
      const s = summarise('postgres', mode, verdicts, ACCEPTED.filter((a) => cases.includes(a.case)));
      reportSummary(t, s);
      t.ok(passed(s), `postgres ${mode}: ${s.identical}/${s.total} identical, ${s.accepted.length} accepted`);
    }
  });
}
