/**
 * Hostile input at the gateway's PostgreSQL listener: malformed, truncated and oversized messages
 * before and after login, bad SCRAM, TLS confusion. Each gets an ErrorResponse with a SQLSTATE (or
 * a closed socket where the protocol has no room for one), the gateway keeps serving, and no
 * session role is left behind.
 */
import t from 'tap';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { DEFAULT_POLICIES, startTestGateway } from '../support/gateway.js';
import { havePostgres, startTestCluster } from '../support/pg.js';
import { FrameSplitter, decodeErrorFields, type ErrorFields } from '../../protocols/postgres/framing.js';

if (!havePostgres) {
  t.fail('PostgreSQL binaries are required');
} else {
  const pgc = await startTestCluster(t);
  const raw = { ...pgc.target, name: 'raw-db', options: { allowPlain: true, clientAuth: 'password' } };
  const scramPlain = { ...pgc.target, name: 'scram-db', options: { allowPlain: true } };
  const { freePort } = await import('../../protocols/net.js');
  const dead = { ...raw, name: 'dead-db', address: `127.0.0.1:${await freePort()}`, options: { allowPlain: true, clientAuth: 'password', connectTimeout: 3 } };
  const broken = { ...raw, name: 'broken-db', roles: [{ name: 'read', grants: ['no_such_role'] }] };
  const tg = await startTestGateway({ targets: [pgc.target, raw, scramPlain, dead, broken], policies: DEFAULT_POLICIES, listeners: ['postgres'] });
  t.teardown(() => tg.close());
  const { host, port } = tg.listener('postgres');
  const g = await tg.grant('alice', 'raw-db', 'read');
  const secret = (await tg.secret('alice', g.id, { reusable: true })).secret;
  const g2 = await tg.grant('alice', 'scram-db', 'read');
  await tg.secret('alice', g2.id, { reusable: true });
  const deadSecret = (await tg.secret('alice', (await tg.grant('alice', 'dead-db', 'read')).id)).secret;
  const brokenSecret = (await tg.secret('alice', (await tg.grant('alice', 'broken-db', 'read')).id)).secret;

  /** Send bytes (in steps), collect everything the gateway answers until it closes (or timeout). */
  function exchange(steps: (Buffer | ((got: Buffer) => Buffer | null))[], timeoutMs = 5000): Promise<{ bytes: Buffer; closed: boolean }> {
    return new Promise((resolve) => {
      const s = net.connect({ host, port });
      let got = Buffer.alloc(0);
      let i = 0;
      let closed = false;
      const next = () => {
        while (i < steps.length) {
          const st = steps[i]!;
          if (Buffer.isBuffer(st)) { s.write(st); i++; continue; }
          const b = st(got);
          if (!b) return;
          s.write(b);
          i++;
        }
      };
      s.on('connect', next);
      s.on('data', (d) => { got = Buffer.concat([got, d]); next(); });
      s.on('error', () => {});
      s.on('close', () => { closed = true; clearTimeout(timer); resolve({ bytes: got, closed }); });
      const timer = setTimeout(() => { s.destroy(); resolve({ bytes: got, closed }); }, timeoutMs);
    });
  }

  function errors(b: Buffer): ErrorFields[] {
    const out: ErrorFields[] = [];
    try {
      for (const f of new FrameSplitter(1 << 20).push(b)) if (f.type === 'E') out.push(decodeErrorFields(f.body));
    } catch { /* partial */ }
    return out;
  }

  const startup = (user: string) => serialize.startup({ user, database: 'app' });
  const afterReady = (payload: Buffer) => (got: Buffer) => (got.includes(Buffer.from([0x5a, 0, 0, 0, 5])) ? payload : null);
  const loginRaw = (then: Buffer) => [startup('raw-db'), (got: Buffer) => (got.length >= 9 && got[0] === 0x52 ? serialize.password(secret) : null), afterReady(then)];

  t.test('malformed start-up packets', async (t) => {
    const short = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0]);
    let r = await exchange([short]);
    t.equal(errors(r.bytes)[0]?.code, '08P01', 'length below 8');
    const huge = Buffer.alloc(8); huge.writeUInt32BE(0x7fffffff, 0); huge.writeUInt32BE(196608, 4);
    r = await exchange([huge]);
    t.match(errors(r.bytes)[0], { code: '08P01', message: /invalid start-up packet length/ }, 'oversized length');
    const v2 = Buffer.alloc(8); v2.writeUInt32BE(8, 0); v2.writeUInt32BE(2 << 16, 4);
    r = await exchange([v2]);
    t.match(errors(r.bytes)[0], { code: '08P01', message: /unsupported frontend protocol 2\.0/ });
    r = await exchange([startup('raw-db').subarray(0, 7)], 500);
    t.equal(r.bytes.length, 0, 'truncated start-up: nothing answered yet, nothing crashed');
    r = await exchange([serialize.startup({ database: 'app' })]);
    t.match(errors(r.bytes)[0], { code: '28000', message: /no user name given/ });
    const st = startup('raw-db');
    const bad = Buffer.from(st); bad[bad.length - 1] = 0x41; // missing terminator
    r = await exchange([bad]);
    t.equal(errors(r.bytes)[0]?.code, '08P01', 'unterminated parameter list');
  });

  t.test('TLS confusion and plain connections to TLS-only targets', async (t) => {
    let r = await exchange([Buffer.concat([serialize.requestSsl(), startup('prod-db')])]);
    t.match(errors(r.bytes)[0], { code: '08P01', message: /unencrypted data after SSLRequest/ });
    r = await exchange([serialize.requestSsl(), (got) => (got.length ? randomBytes(300) : null)]);
    t.equal(r.bytes.subarray(0, 1).toString(), 'S', 'SSL accepted, garbage handshake closes the socket');
    t.ok(r.closed);
    r = await exchange([startup('prod-db')]);
    t.match(errors(r.bytes)[0], { code: '28000', message: /sslmode=require/ });
    const gss = Buffer.alloc(8); gss.writeUInt32BE(8, 0); gss.writeUInt32BE(80877104, 4);
    r = await exchange([gss, (got) => (got.length ? startup('prod-db') : null)]);
    t.equal(r.bytes.subarray(0, 1).toString(), 'N', 'GSSENCRequest declined');
    t.equal(errors(r.bytes.subarray(1))[0]?.code, '28000');
  });

  t.test('direct TLS (sslnegotiation=direct): ALPN postgresql required, then a normal session', async (t) => {
    const { default: tls } = await import('node:tls');
    const talk = (alpn: string[] | undefined) => new Promise<{ frames: string[]; rows: string[]; closed: boolean; error?: string }>((resolve) => {
      const s = tls.connect({ host, port, ca: tg.gw.tls.ca, servername: 'localhost', ALPNProtocols: alpn });
      const sp = new FrameSplitter(1 << 20);
      const frames: string[] = [];
      const rows: string[] = [];
      let error: string | undefined;
      s.on('secureConnect', () => s.write(startup('raw-db')));
      s.on('data', (d) => {
        for (const f of sp.push(d)) {
          frames.push(f.type);
          if (f.type === 'R' && f.body.readInt32BE(0) === 3) s.write(serialize.password(secret));
          if (f.type === 'Z' && !frames.includes('D')) s.write(serialize.query("SELECT 'over direct tls' AS v"));
          if (f.type === 'D') { rows.push(f.body.subarray(6).toString()); s.end(serialize.end()); }
          if (f.type === 'E') error = decodeErrorFields(f.body).message;
        }
      });
      s.on('error', (e) => { error ??= e.message; });
      s.on('close', () => resolve({ frames, rows, closed: true, error }));
      setTimeout(() => { s.destroy(); }, 8000);
    });
    const ok = await talk(['postgresql']);
    t.same(ok.rows, ['over direct tls'], `rows over direct TLS (${ok.error ?? ''})`);
    const bad = await talk(['http/1.1']);
    t.same(bad.rows, [], 'no ALPN postgresql: refused');
    t.ok(bad.closed);
    t.same(await pgc.noSessionRoles(), []);
  });

  t.test('bad authentication messages', async (t) => {
    let r = await exchange([startup('raw-db'), (got) => (got.length ? serialize.query('SELECT 1') : null)]);
    t.match(errors(r.bytes)[0], { code: '08P01', message: /expected a password message/ });
    const bigPw = Buffer.from([0x70, 0x7f, 0, 0, 0]);
    r = await exchange([startup('raw-db'), (got) => (got.length ? bigPw : null)]);
    t.equal(errors(r.bytes)[0]?.code, '08P01', 'oversized password message');
    r = await exchange([startup('raw-db'), (got) => (got.length ? serialize.password('wrong') : null)]);
    t.match(errors(r.bytes)[0], { code: '28P01', message: /wrong connection secret/ });
    r = await exchange([startup('scram-db'), (got) => (got.length ? serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', 'garbage') : null)]);
    t.match(errors(r.bytes)[0], { code: '08P01', message: /malformed SCRAM/ });
    r = await exchange([startup('scram-db'), (got) => (got.length ? serialize.sendSASLInitialResponseMessage('PLAIN', 'x') : null)]);
    t.match(errors(r.bytes)[0], { code: '28000', message: /not supported/ });
    r = await exchange([startup('scram-db'), (got) => (got.length ? serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', 'n,,n=,r=abc') : null),
      (got) => (got.length > 20 ? serialize.sendSCRAMClientFinalMessage('c=biws,r=abcWRONG,p=' + Buffer.alloc(32).toString('base64')) : null)]);
    t.match(errors(r.bytes)[0], { code: '08P01', message: /nonce mismatch/ });
    t.same(await pgc.sessionRoles(), [], 'nothing created');
  });

  t.test('malformed messages after login: FATAL 08P01, session ended, role dropped', async (t) => {
    const cases: [string, Buffer, RegExp][] = [
      ['oversized Query length', Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff]), /exceeds the limit/],
      ['length below 4', Buffer.from([0x51, 0, 0, 0, 1]), /invalid message length/],
      ['truncated Bind body', Buffer.from([0x42, 0, 0, 0, 7, 0x61, 0, 0x62]), /truncated/],
      ['unknown message type', Buffer.from([0x7a, 0, 0, 0, 4]), /unexpected message type 'z'/],
      ['Query without terminator', Buffer.from([0x51, 0, 0, 0, 7, 0x61, 0x62, 0x63]), /truncated|unterminated/],
      ['password message after login', serialize.password('again'), /unexpected message type 'p'/],
    ];
    for (const [name, payload, re] of cases) {
      const r = await exchange(loginRaw(payload));
      const e = errors(r.bytes);
      t.ok(r.bytes.includes(Buffer.from([0x5a, 0, 0, 0, 5])), `${name}: logged in first`);
      t.match(e[e.length - 1], { code: '08P01', severity: 'FATAL', message: re }, name);
      t.ok(r.closed, `${name}: connection closed`);
    }
    for (let i = 0; i < 10; i++) await exchange(loginRaw(randomBytes(64 + i * 13)), 1500);
    t.same(await pgc.noSessionRoles(), [], 'every session role dropped');
    const ended = await tg.store.listSessions({ target: 'raw-db', state: 'active' });
    t.equal(ended.length, 0, 'no session left open');
  });

  t.test('dead target and a role mapping to a missing upstream role: clear errors, nothing left', async (t) => {
    const r1 = await exchange([startup('dead-db'), (got) => (got.length ? serialize.password(deadSecret) : null)], 15_000);
    t.match(errors(r1.bytes)[0], { code: '08006', message: /cannot reach the database server of dead-db \(ECONNREFUSED\)/ });
    const r2 = await exchange([startup('broken-db'), (got) => (got.length ? serialize.password(brokenSecret) : null)], 15_000);
    t.match(errors(r2.bytes)[0], { code: '42704', message: /could not create the session role on broken-db: role "no_such_role" does not exist/ });
    t.same(await pgc.noSessionRoles(), [], 'no role left by the failed mint');
    const leases = await tg.store.listLeases({ target: 'broken-db' });
    t.equal(leases.length, 1);
    t.equal(leases[0]!.state, 'revoked', 'failed mint: lease revoked');
  });

  t.test('client vanishing while its session is being set up: session ended, role dropped', async (t) => {
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve) => {
        const s = net.connect({ host, port }, () => s.write(startup('raw-db')));
        s.on('data', () => { s.write(serialize.password(secret)); setTimeout(() => s.destroy(), i * 15); });
        s.on('error', () => {});
        s.on('close', () => resolve());
      });
    }
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && (await tg.store.listSessions({ state: 'active' })).length) await new Promise((r) => setTimeout(r, 100));
    t.equal((await tg.store.listSessions({ state: 'active' })).length, 0, 'no session left live');
    t.same(await pgc.noSessionRoles(), [], 'no role left');
  });

  t.test('the gateway still serves a normal client afterwards', async (t) => {
    const c = new pg.Client({ host, port, user: 'raw-db', password: secret, database: 'app', ssl: false });
    await c.connect();
    t.equal((await c.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3);
    await c.end();
    t.same(await pgc.noSessionRoles(), []);
  });
}
