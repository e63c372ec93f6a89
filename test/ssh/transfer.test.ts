/**
 * File transfers (sftp, scp in SFTP mode, legacy scp -O), port forwarding, and the other two
 * sign-in methods (registered public key, browser approval through keyboard-interactive), all
 * with real OpenSSH clients through the real gateway.
 */
import t from 'tap';
import { readFileSync, writeFileSync, mkdtempSync, rmSync, mkdirSync, chmodSync, existsSync } from 'node:fs';
import ssh2 from 'ssh2';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { startTestGateway, type TestGateway } from '../support/gateway.js';
import { decideApproval } from '../support/signin.js';
import { haveSshd, startTestSshd, runClient, runCmd, until, usersWithPrefix, SSH_OPTS, type TestSshd } from '../support/sshd.js';
import { freePort } from '../../protocols/net.js';

// Unique per run: parallel runs of this file (several engineers, CI) never share accounts.
const PREFIX = `t${Math.random().toString(36).slice(2, 6).padEnd(4, '0')}-`;
const acct = (who: string, flags = '') => new RegExp(`${PREFIX}${who}-[a-z0-9]{4}`, flags);
const acctOnly = (who: string) => new RegExp(`^${PREFIX}${who}-[a-z0-9]{4}$`);
let env: TestSshd;
let gw: TestGateway;
let port: number;
const work = mkdtempSync(join(tmpdir(), 'tg-xfer-'));

t.before(async () => {
  if (!haveSshd) return;
  env = await startTestSshd(t);
  const eph = env.targets[0]!;
  gw = await startTestGateway({
    targets: [{
      ...eph, credentials: { ...eph.credentials, prefix: PREFIX },
      roles: [{ name: 'user' }, { name: 'tunnel', allowPortForwarding: true }, { name: 'agent', allowAgentForwarding: true }],
    }],
    listeners: ['ssh'],
  });
  port = gw.listener('ssh').port;
});
t.teardown(async () => {
  await gw?.close();
  rmSync(work, { recursive: true, force: true });
  for (const u of usersWithPrefix(PREFIX)) { spawnSync('pkill', ['-KILL', '-u', u]); spawnSync('userdel', ['-r', '-f', u]); }
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function transfers(grantId: string): Promise<Record<string, any>[]> {
  const out: Record<string, any>[] = [];
  for (const s of await gw.store.listSessions({ grantId })) {
    for (const r of (await gw.store.listRecordings({ sessionId: s.id })).filter((x) => x.kind === 'events')) {
      for (const line of readFileSync((await gw.gw.recorder.pathOf(r.id))!, 'utf8').split('\n').filter(Boolean)) {
        const ev = JSON.parse(line);
        const data = ev.data ?? ev;
        if ((ev.type ?? ev.event) === 'file-transfer' || data.direction) out.push(data);
      }
    }
  }
  return out;
}

t.test('sftp, scp and scp -O: files arrive intact and each transfer is recorded with its SHA-256', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const s = await gw.secret('alice', grant.id, { reusable: true });
  const up = randomBytes(300_000 + 123);
  const upFile = join(work, 'up.bin');
  writeFileSync(upFile, up);
  // Each session is a different minted account: a sticky world-writable directory on the target.
  const dest = `/tmp/tg-xfer-${randomBytes(4).toString('hex')}`;
  mkdirSync(dest, { mode: 0o1777 });
  chmodSync(dest, 0o1777);
  t.teardown(() => rmSync(dest, { recursive: true, force: true }));
  // One session: mkdir, put, get back (sftp reads commands from stdin).
  const sftp = await runClient(s.secret, 'sftp', ['-P', String(port), `${s.username}@127.0.0.1`], {
    input: `mkdir ${dest}/s\nput ${upFile} ${dest}/s/a.bin\nget ${dest}/s/a.bin ${join(work, 'back.bin')}\nbye\n`,
  });
  t.equal(sftp.code, 0, sftp.stderr);
  t.same(readFileSync(join(work, 'back.bin')), up, 'sftp round trip intact');
  await until(async () => (await gw.store.listSessions({ grantId: grant.id })).every((x) => x.state === 'ended'));
  let ev = await transfers(grant.id);
  t.match(ev, [
    { protocol: 'sftp', path: `${dest}/s/a.bin`, direction: 'upload', size: up.length, sha256: sha(up) },
    { protocol: 'sftp', path: `${dest}/s/a.bin`, direction: 'download', size: up.length, sha256: sha(up) },
  ], 'sftp upload and download recorded');

  // scp (SFTP protocol by default in OpenSSH 9) and the legacy scp protocol (-O).
  const scp1 = await runClient(s.secret, 'scp', ['-P', String(port), upFile, `${s.username}@127.0.0.1:${dest}/b.bin`]);
  t.equal(scp1.code, 0, scp1.stderr);
  const scp2 = await runClient(s.secret, 'scp', ['-O', '-P', String(port), upFile, `${s.username}@127.0.0.1:${dest}/c.bin`]);
  t.equal(scp2.code, 0, scp2.stderr);
  const scp3 = await runClient(s.secret, 'scp', ['-O', '-P', String(port), `${s.username}@127.0.0.1:${dest}/c.bin`, join(work, 'c-back.bin')]);
  t.equal(scp3.code, 0, scp3.stderr);
  t.same(readFileSync(join(work, 'c-back.bin')), up, 'scp -O round trip intact');
  t.same(readFileSync(`${dest}/b.bin`), up, 'scp upload intact on the target');
  await until(async () => (await gw.store.listSessions({ grantId: grant.id })).every((x) => x.state === 'ended'));
  ev = await transfers(grant.id);
  t.ok(ev.some((e) => e.protocol === 'sftp' && e.path === `${dest}/b.bin` && e.direction === 'upload' && e.sha256 === sha(up)), 'scp (sftp mode) upload recorded');
  t.ok(ev.some((e) => e.protocol === 'scp' && e.base === `${dest}/c.bin` && e.direction === 'upload' && e.size === up.length && e.sha256 === sha(up)), 'scp -O upload recorded');
  t.ok(ev.some((e) => e.protocol === 'scp' && e.base === `${dest}/c.bin` && e.path === 'c.bin' && e.direction === 'download' && e.sha256 === sha(up)), 'scp -O download recorded');
  const audit = await gw.store.listAudit({ action: 'scp.upload' });
  t.ok(audit.length >= 1, 'transfers audited');
});

function readBanner(p: number): Promise<string> {
  return new Promise((resolve) => {
    const c = connect(p, '127.0.0.1');
    let got = '';
    c.on('data', (d) => { got += d.toString(); if (got.includes('\n')) c.destroy(); });
    c.on('close', () => resolve(got));
    c.on('error', () => resolve(got));
    setTimeout(() => c.destroy(), 5000);
  });
}

async function withForward(secret: string, user: string, fn: (localPort: number) => Promise<void>) {
  const local = await freePort();
  const p = spawn('sshpass', ['-p', secret, 'ssh', ...SSH_OPTS, '-L', `${local}:127.0.0.1:${env.sshd.port}`, '-p', String(port), `${user}@127.0.0.1`, 'sleep 8'], { stdio: 'ignore' });
  try {
    await until(() => new Promise<boolean>((r) => { const c = connect(local, '127.0.0.1'); c.on('connect', () => { c.destroy(); r(true); }); c.on('error', () => r(false)); }), 10_000, 'local forward');
    await new Promise((r) => setTimeout(r, 500));
    await fn(local);
  } finally {
    p.kill('SIGKILL');
  }
}

t.test('port forwarding only when the role allows it', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const g1 = await gw.grant('alice', 'web01', 'user');
  const s1 = await gw.secret('alice', g1.id);
  await withForward(s1.secret, s1.username, async (local) => {
    t.equal(await readBanner(local), '', 'the user role gets no forwarded connection');
  });
  await until(async () => (await gw.store.listAudit({ action: 'ssh.port_forward.refused' })).length > 0, 10_000, 'refusal audited');
  const g2 = await gw.grant('alice', 'web01', 'tunnel');
  const s2 = await gw.secret('alice', g2.id);
  t.equal(s2.username.startsWith('web01'), true);
  await withForward(s2.secret, s2.username.includes(':') ? s2.username : 'web01:tunnel', async (local) => {
    t.match(await readBanner(local), /^SSH-2\.0-OpenSSH/, 'the tunnel role reaches the target through the forward');
  });
});

function gatewayClient(secret: string, username: string): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.on('ready', () => resolve(c));
    c.on('error', reject);
    c.connect({ host: '127.0.0.1', port, username, password: secret, readyTimeout: 20_000 });
  });
}

function execOut(c: ssh2.Client, cmd: string): Promise<string> {
  return new Promise((resolve, reject) => c.exec(cmd, (err, st) => {
    if (err) return reject(err);
    let o = '';
    st.on('data', (d: Buffer) => { o += d; });
    st.stderr.on('data', (d: Buffer) => { o += d; });
    st.on('close', () => resolve(o));
  }));
}

t.test('remote forwarding (ssh -R) only when the role allows port forwarding', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const g1 = await gw.grant('alice', 'web01', 'user');
  const c1 = await gatewayClient((await gw.secret('alice', g1.id)).secret, 'web01:user');
  t.teardown(() => c1.end());
  await t.rejects(new Promise((resolve, reject) => c1.forwardIn('127.0.0.1', 0, (err, p) => (err ? reject(err) : resolve(p)))), 'refused for the user role');
  const g2 = await gw.grant('alice', 'web01', 'tunnel');
  const c2 = await gatewayClient((await gw.secret('alice', g2.id)).secret, 'web01:tunnel');
  t.teardown(() => c2.end());
  c2.on('tcp connection', (_info, accept) => { const ch = accept(); ch.end('hello-from-the-client-side'); });
  const rport = await new Promise<number>((resolve, reject) => c2.forwardIn('127.0.0.1', 0, (err, p) => (err ? reject(err) : resolve(p))));
  t.ok(rport > 0, `the target listens on ${rport}`);
  const got = await execOut(c2, `bash -c 'exec 3<>/dev/tcp/127.0.0.1/${rport}; cat <&3'`);
  t.equal(got, 'hello-from-the-client-side', 'a connection on the target reaches the client through the gateway');
});

t.test('agent forwarding only when the role allows it', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const sock = join(work, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
  t.teardown(() => { agent.kill('SIGTERM'); });
  await until(() => existsSync(sock), 5_000, 'agent socket');
  const keyFile = join(work, 'agent_key');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'forwarded-key', '-f', keyFile]);
  const agentEnv = { ...process.env, SSH_AUTH_SOCK: sock };
  t.equal((await runCmd('ssh-add', [keyFile], { env: agentEnv })).code, 0, 'key in the agent');
  const g1 = await gw.grant('alice', 'web01', 'user');
  const s1 = await gw.secret('alice', g1.id);
  const refused = await runClient(s1.secret, 'ssh', ['-A', '-p', String(port), `${s1.username}@127.0.0.1`, 'ssh-add -l'], { env: agentEnv });
  t.not(refused.code, 0, 'no agent on the target for the user role');
  t.notMatch(refused.stdout, /forwarded-key/);
  const g2 = await gw.grant('alice', 'web01', 'agent');
  const s2 = await gw.secret('alice', g2.id);
  const ok = await runClient(s2.secret, 'ssh', ['-A', '-p', String(port), `${s2.username}@127.0.0.1`, 'ssh-add -l'], { env: agentEnv });
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /forwarded-key \(ED25519\)/, 'the target sees the person\'s own agent');
});

t.test('sign-in with a registered public key', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  await until(async () => (await gw.store.listSessions({ state: 'active' })).length === 0, 15_000, 'earlier sessions ended');
  const keyFile = join(work, 'erin_key');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
  const reg = await gw.registerKey('erin', keyFile, 'laptop');
  t.equal(reg.status, 201, JSON.stringify(reg.body));
  const ssh = (user: string) => runCmd('ssh', ['-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'PreferredAuthentications=publickey', '-p', String(port), `${user}@127.0.0.1`, 'id -un'], { timeoutMs: 20_000 });
  const before = usersWithPrefix(PREFIX);
  const refused = await ssh('web01');
  t.not(refused.code, 0, 'no active grant yet');
  t.match(refused.stderr, /Tollgate: /, `the client reads why (${refused.stderr.trim()})`);
  t.same(usersWithPrefix(PREFIX), before, 'nothing created');
  await gw.grant('erin', 'web01', 'user');
  const ok = await ssh('web01:user');
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout.trim(), acctOnly('erin'));
  // A key nobody registered gets nowhere.
  const other = join(work, 'other_key');
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
  const stranger = await runCmd('ssh', ['-i', other, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'PreferredAuthentications=publickey', '-p', String(port), 'web01@127.0.0.1', 'id -un'], { timeoutMs: 20_000 });
  t.not(stranger.code, 0);
  t.match(stranger.stderr, /Permission denied/);
});

t.test('keyboard-interactive: the person approves in the browser, or types the secret', { skip: !haveSshd && 'needs root and sshd' }, async (t) => {
  const grant = await gw.grant('alice', 'web01', 'user');
  const kbd = ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=keyboard-interactive'];
  // Browser approval: the client prints the URL, the person presses Enter (sshpass types an empty answer).
  const p = spawn('sshpass', ['-p', '', 'ssh', ...kbd, '-p', String(port), 'web01@127.0.0.1', 'id -un'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => { out += d; });
  p.stderr.on('data', (d) => { out += d; });
  const closed = new Promise<number | null>((r) => p.on('close', r));
  const url = await until(() => /(http:\/\/\S+\/approve-login\/[0-9a-f-]+)/.exec(out)?.[1], 15_000, 'approval URL');
  const res = await decideApproval(url, { authorization: `Bearer ${gw.token('alice')}` }, 'approve');
  t.equal(res.status, 200, res.page);
  t.match(res.opened, /<code id="client-addr">127\.0\.0\.1:\d+<\/code>/, 'the page shows the client address');
  t.equal(await closed, 0, out);
  t.match(out, acct('alice'), 'signed in through the browser approval');
  // Denied in the browser: the client reads why, nothing is created (counted once the approved
  // session's teardown has deleted its account: the client exits before that).
  await until(async () => (await gw.store.listSessions({ grantId: grant.id })).every((x) => x.state === 'ended'), 15_000, 'the approved session ended');
  const before = usersWithPrefix(PREFIX);
  const p2 = spawn('sshpass', ['-p', '', 'ssh', ...kbd, '-p', String(port), 'web01@127.0.0.1', 'id -un'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out2 = '';
  p2.stdout.on('data', (d) => { out2 += d; });
  p2.stderr.on('data', (d) => { out2 += d; });
  const closed2 = new Promise<number | null>((r) => p2.on('close', r));
  const url2 = await until(() => /(http:\/\/\S+\/approve-login\/[0-9a-f-]+)/.exec(out2)?.[1], 15_000, 'approval URL');
  await decideApproval(url2, { authorization: `Bearer ${gw.token('alice')}` }, 'deny');
  t.not(await closed2, 0);
  t.match(out2, /Tollgate: /, 'the refusal is shown');
  t.same(usersWithPrefix(PREFIX), before, 'nothing created');
  // The same prompt takes a connection secret (so `sshpass -p <secret> ssh` works whatever method the client picks).
  const s = await gw.secret('alice', grant.id);
  const r = await runClient(s.secret, 'ssh', ['-p', String(port), `${s.username}@127.0.0.1`, 'id -un'], { extraOpts: kbd });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, acct('alice'));
});
