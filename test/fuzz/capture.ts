/**
 * Captures the fuzz corpus from real clients talking to real servers (run once; the output is
 * committed under test/fuzz/corpus/): a recording TCP proxy sits between
 *   psql / pgbench / node-postgres and PostgreSQL (plain, so the bytes are readable),
 *   the mariadb client and MariaDB (--skip-ssl),
 *   TigerVNC's vncviewer and x11vnc (on Xvfb),
 *   curl (--path-as-is) and a listener that keeps the raw HTTP requests,
 * and the SFTP and scp streams are teed from OpenSSH's own sftp-server and scp (sftp -D, scp -O -S).
 * Each conversation is cut where the gateway's parsers take over (start-up vs. frames, handshake vs.
 * relay) and written as <corpus>/<target>/cap-<sha>.bin (at most 64 KiB each).
 *
 *   node --import=tsx test/fuzz/capture.ts            # as root (PostgreSQL and MariaDB run as their users)
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startCluster } from '../../protocols/postgres/demo.js';
import { startMariadb } from '../../protocols/mysql/demo.js';
import { startDesktop } from '../../protocols/vnc/demo.js';
import { readStartup, FrameSplitter } from '../../protocols/postgres/framing.js';
import { PacketReader } from '../../protocols/mysql/packets.js';
import { CORPUS_DIR, corpusName, encodeRecords, DEFAULT_MAX_LENGTH } from './engine.js';

const log = pino({ level: 'silent' });
type Chunk = { dir: 'c' | 's'; data: Buffer };
let written = 0;

function save(target: string, data: Buffer): void {
  if (!data.length) return;
  const b = data.subarray(0, DEFAULT_MAX_LENGTH);
  const dir = join(CORPUS_DIR, target);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, corpusName('cap', b)), b);
  written++;
}

/** A proxy to host:port that records every chunk in order; conversations() returns one list per connection. */
async function recorder(port: number): Promise<{ port: number; conversations: Chunk[][]; close(): Promise<void> }> {
  const conversations: Chunk[][] = [];
  const server = net.createServer((c) => {
    const conv: Chunk[] = [];
    conversations.push(conv);
    const u = net.connect({ host: '127.0.0.1', port });
    c.on('data', (d) => { conv.push({ dir: 'c', data: Buffer.from(d) }); u.write(d); });
    u.on('data', (d) => { conv.push({ dir: 's', data: Buffer.from(d) }); c.write(d); });
    c.on('end', () => u.end()); u.on('end', () => c.end());
    c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, conversations, close: () => new Promise((r) => server.close(() => r())) };
}

const side = (conv: Chunk[], dir: 'c' | 's') => Buffer.concat(conv.filter((c) => c.dir === dir).map((c) => c.data));

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<number | null> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'ignore', 'ignore'] });
    const t = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    p.on('close', (code) => { clearTimeout(t); resolve(code); });
    p.stdin.on('error', () => undefined); // the client may exit before reading its stdin
    p.stdin.end(opts.input ?? '');
  });
}

async function postgres(dir: string): Promise<void> {
  const c = await startCluster(join(dir, 'pg'), log);
  if (!c) { process.stdout.write('PostgreSQL not installed: skipped\n'); return; }
  const rec = await recorder(c.port);
  try {
    const env = { PGPASSWORD: c.superuser.password, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10' };
    const conn = ['-h', '127.0.0.1', '-p', String(rec.port), '-U', c.superuser.user, '-d', 'postgres'];
    const scripts = [
      "select 1; select 'a' as x, now(); create table t (id int, v text); insert into t values (1, 'x'), (2, null); update t set v = 'y' where id = 1; drop table t;",
      'begin; create temp table c (a int); \\copy c from stdin\n1\n2\n\\.\nselect count(*) from c; declare cur cursor for select * from c; fetch 1 from cur; rollback;',
      "select repeat('x', 20000); select error_here; select 1/0; do $$ begin raise notice 'hello'; end $$; listen ch; notify ch, 'p';",
      "prepare p(int) as select $1 + 1; execute p(41); deallocate p; select * from pg_stat_activity limit 3; \\d pg_class",
    ];
    for (const s of scripts) await run('psql', [...conn, '-X', '-v', 'ON_ERROR_STOP=0'], { env, input: s });
    await run('pgbench', ['-i', '-s', '1', ...conn.filter((x) => x !== '-d' && x !== 'postgres'), 'postgres'], { env });
    await run('pgbench', ['-M', 'prepared', '-t', '20', '-c', '1', ...conn.filter((x) => x !== '-d' && x !== 'postgres'), 'postgres'], { env });
    await run('pgbench', ['-M', 'extended', '-t', '10', '-c', '1', '-S', ...conn.filter((x) => x !== '-d' && x !== 'postgres'), 'postgres'], { env });
    await new Promise((r) => setTimeout(r, 300));
    for (const conv of rec.conversations) {
      const client = side(conv, 'c');
      const server = side(conv, 's');
      // The start-up: packets until the StartupMessage, then the password / SASL messages until AuthenticationOk.
      let off = 0;
      for (;;) {
        const r = readStartup(client.subarray(off));
        if (!r) break;
        off += r.used;
        if (r.packet.kind === 'startup') break;
      }
      const sp = new FrameSplitter(1 << 30);
      let authEnd = off;
      let n = 0;
      for (const f of sp.push(client.subarray(off))) { if (f.type !== 'p' || n++ > 2) break; authEnd += f.raw.length; }
      save('postgres.startup', client.subarray(0, authEnd));
      save('postgres.client-frames', client.subarray(authEnd));
      save('postgres.server-frames', server);
    }
  } finally {
    await rec.close();
    await c.stop();
  }
}

async function mysql(dir: string): Promise<void> {
  const m = await startMariadb(join(dir, 'my'), log);
  if (!m) { process.stdout.write('MariaDB not installed: skipped\n'); return; }
  const rec = await recorder(m.port);
  try {
    const base = ['-h', '127.0.0.1', '-P', String(rec.port), '-u', m.adminUser, `-p${m.adminPassword}`, '--skip-ssl', '--protocol=TCP'];
    const scripts = [
      "select 1; select 'a' as x, now(); use shop; select * from customers; select * from orders where qty > 1;",
      "create database fz; use fz; create table t (id int primary key, v varchar(20)); insert into t values (1,'x'),(2,null); update t set v='y'; delete from t; drop database fz;",
      "select error_here; select repeat('x', 20000); show databases; show processlist; prepare s from 'select ? + 1'; set @a = 41; execute s using @a; deallocate prepare s;",
      "begin; select * from shop.products for update; rollback; select 1; select 2; -- comment\nselect /* c */ 3; select 1 /*!50000 + 1 */;",
    ];
    for (const s of scripts) await run('mariadb', [...base, '--force'], { input: s });
    await run('mariadb', [...base, '-e', 'select 1'], { env: {} });
    await new Promise((r) => setTimeout(r, 300));
    for (const conv of rec.conversations) {
      const client = side(conv, 'c');
      const server = side(conv, 's');
      // The handshake ends with the server's first OK; the relay starts with the client's next command.
      const pr = new PacketReader(1 << 30);
      pr.push(server);
      let serverBytes = 0;
      let handshakeEnd = -1;
      for (let p = pr.next(), i = 0; p; p = pr.next(), i++) {
        serverBytes += p.raw.length;
        if (i > 0 && p.payload[0] === 0x00) { handshakeEnd = serverBytes; break; }
      }
      // Client bytes sent before the handshake ended (in arrival order).
      let s = 0;
      let cBefore = 0;
      const after: { tag: number; data: Buffer }[] = [];
      for (const ch of conv) {
        if (ch.dir === 's') {
          const before = s;
          s += ch.data.length;
          if (handshakeEnd >= 0 && s > handshakeEnd) after.push({ tag: 1, data: before >= handshakeEnd ? ch.data : ch.data.subarray(handshakeEnd - before) });
        } else if (handshakeEnd >= 0 && s >= handshakeEnd) after.push({ tag: 0, data: ch.data });
        else cBefore += ch.data.length;
      }
      save('mysql.handshake', client.subarray(0, cBefore));
      save('mysql.server-packets', server);
      if (after.length) save('mysql.relay', encodeRecords(after));
    }
  } finally {
    await rec.close();
    await m.stop();
  }
}

async function vnc(dir: string): Promise<void> {
  const d = await startDesktop(join(dir, 'vnc'), { size: '160x120x24' });
  if (!d) { process.stdout.write('Xvfb/x11vnc not installed: skipped\n'); return; }
  const rec = await recorder(d.port);
  try {
    for (const enc of ['ZRLE', 'Hextile', 'Raw']) {
      const viewer = spawn('vncviewer', [`-PasswordFile=${d.passwordFile}`, `-PreferredEncoding=${enc}`, '-AutoSelect=0', '-FullColor', `127.0.0.1::${rec.port}`], { env: { ...process.env, DISPLAY: d.display }, stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 2500));
      spawnSync('xdotool', ['type', '--delay', '20', 'echo hi'], { env: { ...process.env, DISPLAY: d.display } });
      spawnSync('xdotool', ['mousemove', '20', '20', 'click', '1'], { env: { ...process.env, DISPLAY: d.display } });
      await new Promise((r) => setTimeout(r, 1500));
      viewer.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 300));
    }
    for (const conv of rec.conversations) {
      const client = side(conv, 'c');
      const server = side(conv, 's');
      // Server: version, security types (3.7+: count + list), VNC auth challenge, SecurityResult, ServerInit.
      if (server.length < 12 + 1) continue;
      const nTypes = server[12]!;
      let so = 12 + 1 + nTypes + 16 + 4;
      if (server.length < so + 24) continue;
      const nameLen = server.readUInt32BE(so + 20);
      const initEnd = so + 24 + nameLen;
      save('vnc.handshake', server.subarray(0, initEnd));
      save('vnc.server-messages', Buffer.concat([server.subarray(so, so + 24), server.subarray(initEnd)]));
      // Client: version, chosen type, the 16-byte response, ClientInit; then messages.
      save('vnc.client-messages', client.subarray(12 + 1 + 16 + 1));
      so = 0;
    }
  } finally {
    await rec.close();
    await d.stop();
  }
}

async function sftpAndScp(dir: string): Promise<void> {
  const work = join(dir, 'ssh');
  mkdirSync(join(work, 'files'), { recursive: true });
  writeFileSync(join(work, 'files', 'up.bin'), Buffer.alloc(70_000, 7));
  writeFileSync(join(work, 'files', 'small.txt'), 'hello\n');
  // sftp -D runs sftp-server directly: tee both directions into files.
  const tee = join(work, 'sftp-tee.sh');
  writeFileSync(tee, `#!/bin/sh\ntee -a ${work}/c2s.bin | /usr/lib/openssh/sftp-server | tee -a ${work}/s2c.bin\n`);
  chmodSync(tee, 0o755);
  const batch = join(work, 'batch');
  writeFileSync(batch, `cd ${work}/files\nput ${work}/files/up.bin up2.bin\nget small.txt ${work}/got.txt\nmkdir d1\nrename up2.bin up3.bin\nrm up3.bin\nrmdir d1\nls -l\n`);
  await run('sftp', ['-b', batch, '-D', tee]);
  const c2s = readFileSync(join(work, 'c2s.bin'));
  const s2c = readFileSync(join(work, 's2c.bin'));
  save('ssh.sftp', encodeRecords([{ tag: 0, data: c2s }, { tag: 1, data: s2c }]));
  // Interleaved in request/answer order would need timing; a second file with the halves swapped in pieces.
  const pieces: { tag: number; data: Buffer }[] = [];
  for (let i = 0; i < Math.max(c2s.length, s2c.length); i += 4096) {
    pieces.push({ tag: 0, data: c2s.subarray(i, i + 4096) }, { tag: 1, data: s2c.subarray(i, i + 4096) });
  }
  save('ssh.sftp', encodeRecords(pieces.filter((p) => p.data.length)));

  // scp -O (the legacy protocol) with -S: the "ssh" it runs executes the remote scp here, teed.
  const sshw = join(work, 'scp-ssh.sh');
  writeFileSync(sshw, `#!/bin/sh\nwhile [ $# -gt 0 ]; do case "$1" in -*) [ "$1" = "-o" ] && shift; shift;; *) break;; esac; done\nshift\necho "$*" > ${work}/cmd-$$.txt\ntee ${work}/in-$$.bin | sh -c "$*" | tee ${work}/out-$$.bin\n`);
  chmodSync(sshw, 0o755);
  await run('scp', ['-O', '-S', sshw, '-r', join(work, 'files'), `host:${work}/copy`]);
  await run('scp', ['-O', '-S', sshw, `host:${work}/files/small.txt`, join(work, 'down.txt')]);
  for (const f of spawnSync('ls', [work], { encoding: 'utf8' }).stdout.split('\n').filter((x) => x.startsWith('cmd-'))) {
    const id = f.slice(4, -4);
    const cmd = readFileSync(join(work, f), 'utf8').trim();
    const upload = / -t /.test(` ${cmd} `);
    const stream = readFileSync(join(work, `${upload ? 'in' : 'out'}-${id}.bin`));
    save('ssh.scp', Buffer.concat([Buffer.from(`${cmd}\n`), stream]));
  }
}

async function http(): Promise<void> {
  const requests: Buffer[] = [];
  const server = net.createServer((s) => {
    let got = Buffer.alloc(0);
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.includes('\r\n\r\n')) { requests.push(got); s.end('HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n'); }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const paths = ['/', '/admin', '/ADMIN/users', '/admin;jsessionid=1/users', '//admin//x', '/x/../admin', '/x/%2e%2e/admin', '/%61dmin', '/%252e%252e/admin', '/a\\..\\admin', '/apps/wiki/admin?x=1', '/Secret', '/admin?_method=DELETE'];
  for (const p of paths) {
    for (const [m, extra] of [['GET', []], ['DELETE', []], ['POST', ['-H', 'X-HTTP-Method-Override: DELETE', '-H', 'X_Forwarded_For: 1.2.3.4', '-H', 'Cookie: tg_session=a; app=b']]] as [string, string[]][]) {
      await run('curl', ['-s', '--path-as-is', '-X', m, ...extra, '-H', 'Host: wiki.gw.example:8080', `http://127.0.0.1:${port}${p}`], { timeoutMs: 10_000 });
    }
  }
  await new Promise<void>((r) => server.close(() => r()));
  for (const raw of requests) {
    // The request line and headers as the target reads them: method, Host, target, header lines.
    const [line = '', ...hs] = raw.toString('latin1').split('\r\n\r\n')[0]!.split('\r\n');
    const [method, target] = line.split(' ');
    const host = hs.find((h) => /^host:/i.test(h))?.slice(5).trim() ?? '';
    save('http.routing', Buffer.from([method, host, target, ...hs.filter((h) => !/^host:/i.test(h)).map((h) => h.replace(/^([^:]+):\s*/, (_, k: string) => `${k.toLowerCase()}: `))].join('\n'), 'latin1'));
  }
}

const dir = mkdtempSync(join(tmpdir(), 'tg-capture-'));
chmodSync(dir, 0o755);
try {
  for (const [name, f] of [['postgres', () => postgres(dir)], ['mysql', () => mysql(dir)], ['vnc', () => vnc(dir)], ['sftp/scp', () => sftpAndScp(dir)], ['http', () => http()]] as const) {
    const before = written;
    await f();
    process.stdout.write(`${name}: ${written - before} corpus files\n`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
