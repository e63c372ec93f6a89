/**
 * What an unauthenticated peer may cost each TCP listener: the login grace time (an idle socket is
 * closed, with the reason in the protocol where it has room for one) and the caps on
 * unauthenticated connections per source address and in total, while a signed-in session keeps
 * working. Real sockets on loopback; 127.0.0.2 and 127.0.0.3 are other sources (Linux routes
 * all of 127/8 to lo).
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { startTestGateway } from '../support/gateway.js';
import { havePostgres, runClient, startTestCluster } from '../support/pg.js';
import { run as runMariadb } from '../support/mariadb.js';
import { FrameSplitter, decodeErrorFields } from '../../protocols/postgres/framing.js';

interface Peer { sock: net.Socket; bytes(): Buffer; closed: Promise<{ afterMs: number; bytes: Buffer }> }

/** A raw client that sends `send` and then nothing; resolves `closed` when the gateway hangs up. */
function peer(port: number, opts: { localAddress?: string; send?: Buffer } = {}): Promise<Peer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress: opts.localAddress });
    let got = Buffer.alloc(0);
    const t0 = Date.now();
    const closed = new Promise<{ afterMs: number; bytes: Buffer }>((res) => sock.on('close', () => res({ afterMs: Date.now() - t0, bytes: got })));
    sock.on('data', (d) => { got = Buffer.concat([got, d]); });
    sock.on('error', () => { /* the close says it */ });
    sock.once('connect', () => {
      if (opts.send) sock.write(opts.send);
      resolve({ sock, bytes: () => got, closed });
    });
    sock.once('error', reject);
  });
}

const until = async (what: string, fn: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

function pgErrors(b: Buffer) {
  return new FrameSplitter(1 << 16).push(b).filter((f) => f.type === 'E').map((f) => decodeErrorFields(f.body));
}

/** A mysql ERR packet's code and message (with or without the #state marker). */
function mysqlErr(b: Buffer): { code: number; message: string } | null {
  let off = 0;
  while (off + 4 <= b.length) {
    const len = b.readUIntLE(off, 3);
    const p = b.subarray(off + 4, off + 4 + len);
    if (p[0] === 0xff) {
      const rest = p.subarray(3).toString('utf8');
      return { code: p.readUInt16LE(1), message: rest.startsWith('#') ? rest.slice(6) : rest };
    }
    off += 4 + len;
  }
  return null;
}

const startup = Buffer.alloc(8);
startup.writeUInt32BE(8, 0);
startup.writeUInt32BE(80877103, 4); // SSLRequest

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required');
} else {
  const pgc = await startTestCluster(t);
  const grace = { loginTimeout: '1s' };
  const tg = await startTestGateway({
    targets: [pgc.target],
    listeners: ['ssh', 'postgres', 'mysql', 'vnc', 'rdp'],
    listenerOptions: {
      ssh: { ...grace, maxStartupsPerSource: 2 },
      postgres: { ...grace, maxStartups: 4, maxStartupsPerSource: 3 },
      mysql: { ...grace, maxStartupsPerSource: 1 },
      vnc: { ...grace, maxStartupsPerSource: 1 },
      rdp: { ...grace, maxStartupsPerSource: 1 },
    },
  });
  t.teardown(() => tg.close());
  const port = (p: string) => tg.listener(p).port;

  /** Closed by the gateway after about the grace time (generous bounds: never at once, well before the old 30-60 s or never). */
  const closedInGrace = async (t: Test, p: Peer, what: string) => {
    const c = await Promise.race([p.closed, new Promise<null>((r) => setTimeout(() => r(null), 8000))]);
    t.ok(c, `${what}: the gateway closed the idle socket`);
    if (c) t.ok(c.afterMs >= 800 && c.afterMs < 8000, `${what}: after the 1 s grace time (${c.afterMs} ms)`);
    if (!c) p.sock.destroy();
    return c?.bytes ?? Buffer.alloc(0);
  };

  t.test('ssh: an idle socket, and a client idling at the password prompt, are closed within the grace time', async (t) => {
    const raw = await peer(port('ssh'));
    const bytes = await closedInGrace(t, raw, 'ssh raw');
    t.match(bytes.toString('latin1'), /^SSH-2\.0-Tollgate/, 'it had offered its version string, nothing more');

    // A real OpenSSH client at the password stage: the password comes 3 s late (askpass sleeps).
    const dir = pgc.dir;
    const askpass = join(dir, 'slow-askpass.sh');
    writeFileSync(askpass, '#!/bin/sh\nsleep 3\necho not-the-secret\n', { mode: 0o755 });
    const t0 = Date.now();
    const r = await runClient('ssh', ['-p', String(port('ssh')), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password', '-o', 'NumberOfPasswordPrompts=1', 'prod-db@127.0.0.1', 'true'],
    { env: { SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: ':0' }, timeoutMs: 20_000 });
    t.not(r.code, 0, 'ssh failed');
    t.match(r.stderr, /Tollgate: not signed in within 1 s/, `ssh prints the reason: ${r.stderr.trim()}`);
    t.ok(Date.now() - t0 < 15_000, 'and did not hang');
  });

  t.test('postgres: an idle socket gets an ErrorResponse within the grace time', async (t) => {
    const raw = await peer(port('postgres'));
    const errs = pgErrors(await closedInGrace(t, raw, 'postgres raw'));
    t.match(errs[0], { severity: 'FATAL', code: '08006', message: /not signed in within 1 s/ });
  });

  t.test('mysql: a client that never answers the greeting gets an ERR packet within the grace time', async (t) => {
    const raw = await peer(port('mysql'));
    const bytes = await closedInGrace(t, raw, 'mysql raw');
    t.match(mysqlErr(bytes), { code: 1043, message: /not signed in within 1 s/ });
  });

  t.test('vnc: closed before the versions, a failure reason after them', async (t) => {
    const raw = await peer(port('vnc'));
    t.equal((await closedInGrace(t, raw, 'vnc raw')).toString('latin1'), 'RFB 003.008\n');
    const v = await peer(port('vnc'), { send: Buffer.from('RFB 003.008\n', 'latin1') });
    const bytes = await closedInGrace(t, v, 'vnc after the versions');
    // Security types (count, types...), then the failure: zero types and the reason.
    const rest = bytes.subarray(12 + 1 + bytes[12]!);
    t.equal(rest[0], 0, 'a negotiation failure');
    t.match(rest.subarray(5).toString('utf8'), /^Tollgate: not signed in within 1 s/, 'with the reason');
  });

  t.test('rdp: an idle socket is closed within the grace time', async (t) => {
    const raw = await peer(port('rdp'));
    t.equal((await closedInGrace(t, raw, 'rdp raw')).length, 0, 'RDP has no room for a reason before TLS');
  });

  // The caps on a gateway of their own with a long grace time: the idle sockets that fill the caps
  // must not time out while a loaded machine starts psql or mariadb.
  const caps = await startTestGateway({
    targets: [pgc.target],
    listeners: ['ssh', 'postgres', 'mysql', 'vnc', 'rdp'],
    listenerOptions: {
      ssh: { maxStartupsPerSource: 2 },
      postgres: { maxStartups: 4, maxStartupsPerSource: 3 },
      mysql: { maxStartupsPerSource: 1 },
      vnc: { maxStartupsPerSource: 1 },
      rdp: { maxStartupsPerSource: 1 },
    },
  });
  t.teardown(() => caps.close());
  const capPort = (p: string) => caps.listener(p).port;

  t.test('postgres: the caps refuse the (N+1)th unauthenticated socket per source and in total; a signed-in session keeps working', async (t) => {
    const g = await caps.grant('alice', 'prod-db', 'read');
    const s = await caps.secret('alice', g.id, { reusable: true });
    const live = new pg.Client({ host: '127.0.0.1', port: capPort('postgres'), user: 'prod-db', password: s.secret, database: 'app', ssl: { ca: caps.gw.tls.ca } });
    await live.connect();
    t.teardown(() => live.end().catch(() => undefined));

    const idle = [await peer(capPort('postgres')), await peer(capPort('postgres')), await peer(capPort('postgres'))];
    await until('three unauthenticated sockets', () => idle.every((p) => !p.sock.destroyed));
    const fourth = await peer(capPort('postgres'));
    const refused = await Promise.race([fourth.closed, new Promise<null>((r) => setTimeout(() => r(null), 3000))]);
    t.ok(refused && refused.afterMs < 800, 'the 4th socket from 127.0.0.1 is refused at once, not after the grace time');
    t.match(pgErrors(refused?.bytes ?? Buffer.alloc(0))[0], { code: '53300', message: /too many unauthenticated connections from your address/ });

    // Real psql is refused at once too. Recent libpq does not print the text of an error that
    // arrives in answer to its SSLRequest (it cannot be authenticated); the gateway will not spend a
    // TLS handshake on a connection it refuses, so psql says only that the server refused.
    const r = await runClient('psql', ['-X', `host=127.0.0.1 port=${capPort('postgres')} user=prod-db dbname=app sslmode=require`, '-c', 'SELECT 1'], { env: { PGPASSWORD: 'x' } });
    t.not(r.code, 0, 'psql is refused');
    t.match(r.stderr, /too many unauthenticated connections from your address|error response during SSL exchange/, `psql: ${r.stderr.trim()}`);

    // Another source still gets in (total 4 of 4), a third one is over the total.
    const other = await peer(capPort('postgres'), { localAddress: '127.0.0.2' });
    const third = await peer(capPort('postgres'), { localAddress: '127.0.0.3' });
    const t3 = await Promise.race([third.closed, new Promise<null>((r) => setTimeout(() => r(null), 3000))]);
    t.match(pgErrors(t3?.bytes ?? Buffer.alloc(0))[0], { code: '53300', message: /too many connections are signing in/ }, 'over the total cap');
    t.notOk(other.sock.destroyed, '127.0.0.2 was admitted');

    const q = await live.query('SELECT 40 + 2 AS n');
    t.equal(q.rows[0].n, 42, 'the signed-in session keeps working while the caps are full');

    // Slots come back when the idle sockets go (or time out): a new sign-in works.
    for (const p of [...idle, other]) p.sock.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const again = new pg.Client({ host: '127.0.0.1', port: capPort('postgres'), user: 'prod-db', password: s.secret, database: 'app', ssl: { ca: caps.gw.tls.ca } });
    await again.connect();
    t.equal((await again.query('SELECT 1 AS one')).rows[0].one, 1, 'a new sign-in works once slots are free');
    await again.end();
    await live.end();
  });

  t.test('ssh, mysql and vnc refuse over the cap in their own way; rdp just closes', async (t) => {
    const a = [await peer(capPort('ssh')), await peer(capPort('ssh'))];
    await until('ssh banners', () => a.every((p) => p.bytes().length > 0));
    const s3 = await peer(capPort('ssh'));
    const sshOut = (await s3.closed).bytes.toString('latin1');
    t.match(sshOut, /^Tollgate: too many unauthenticated connections from your address; try again in a moment\.\r\n$/, 'ssh: a line before any version string, then closed');
    for (const p of a) p.sock.destroy();

    const m1 = await peer(capPort('mysql'));
    await until('the mysql greeting', () => m1.bytes().length > 0);
    const mc = await runMariadb('mariadb', ['-h', '127.0.0.1', '-P', String(capPort('mysql')), '-u', 'prod-db', '-px', '-e', 'SELECT 1']);
    // The mariadb client shows the ERR packet (and warns that, sent before TLS, it is unauthenticated).
    t.match(mc.stderr, /1040 - Tollgate: too many unauthenticated connections from your address/, `mariadb: ${mc.stderr.trim()}`);
    m1.sock.destroy();

    const v1 = await peer(capPort('vnc'));
    await until('the vnc version', () => v1.bytes().length > 0);
    const v2 = await peer(capPort('vnc'), { send: Buffer.from('RFB 003.008\n', 'latin1') });
    const vb = (await v2.closed).bytes;
    t.equal(vb.subarray(0, 12).toString('latin1'), 'RFB 003.008\n');
    t.equal(vb[12], 0, 'vnc: zero security types');
    t.match(vb.subarray(17).toString('utf8'), /too many unauthenticated connections from your address/, 'vnc: the reason');
    v1.sock.destroy();

    const r1 = await peer(capPort('rdp'));
    await new Promise((r) => setTimeout(r, 100));
    const r2 = await peer(capPort('rdp'));
    const rc = await Promise.race([r2.closed, new Promise<null>((r) => setTimeout(() => r(null), 3000))]);
    t.ok(rc && rc.afterMs < 800 && rc.bytes.length === 0, 'rdp: closed at once');
    r1.sock.destroy();
  });
}
