/**
 * Scheduled rotation of SSH admin credentials kept in the vault, against a real OpenSSH sshd on
 * loopback and non-root admin accounts this test creates (and removes):
 *   rot-pw   credentials.admin.password  {vault: true}: chpasswd through sudo -n;
 *   rot-key  credentials.admin.privateKey {vault: true}: a new ed25519 key in ~/.ssh/authorized_keys;
 *   rot-rsa  an RSA admin key on an account whose sshd Match block accepts only RSA keys, so the new
 *            ed25519 key is refused at verification: the rollback path.
 * After each scheduled rotation (`credentials.rotate: 1h`, time from a manual clock) the native
 * clients show the old credential refused by sshd and the new one working (sshpass for passwords,
 * ssh with BatchMode through an agent holding only the key for keys: no private key is ever written
 * to disk), and a session through the gateway still mints an ephemeral account with the rotated
 * admin. A rotation that fails (sudo refuses, authorized_keys not writable, the new key refused)
 * keeps the old credential working, is audited, alerts, and the scheduled ones are retried. The
 * store and data dir (and the gateway's and sshd's logs) hold none of the credentials.
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { Secret } from '../../auth/secret.js';
import { ManualClock } from '../../policies/clock.js';
import { startSshd } from '../../protocols/ssh/demo.js';
import { generateEd25519 } from '../../protocols/ssh/cert.js';
import { keyComment } from '../../protocols/ssh/rotate.js';
import { validateConfig } from '../../proxy/config.js';
import { vaultId } from '../../proxy/vault.js';
import { moduleMap } from '../../protocols/index.js';
import { startTestGateway } from '../support/gateway.js';
import { recordSecret } from '../support/secret-registry.js';
import { haveSshd, runClient, runCmd, until, usersWithPrefix } from '../support/sshd.js';
import { scanDirs } from '../reliability/secret-scan.js';

const HOUR = 3_600_000;
const MIN = 60_000;
const PW = 'admin.password';
const KEY = 'admin.privateKey';

if (!haveSshd) {
  t.fail('needs root and OpenSSH sshd (apt-get install openssh-server sshpass)');
} else {
  const tag = randomBytes(3).toString('hex');
  // Ephemeral accounts minted through the rotated admins, unique per run.
  const PREFIX = `r${tag.slice(0, 4)}-`;
  const users = { pw: `tgrp-${tag}`, key: `tgrk-${tag}`, rsa: `tgrr-${tag}` };
  const sudoers = (u: string) => `/etc/sudoers.d/tgrot-${u}`;
  const home = (u: string) => `/home/${u}`;
  const akFile = (u: string) => join(home(u), '.ssh', 'authorized_keys');
  const dir = mkdtempSync(join(tmpdir(), 'tg-sshrot-'));

  const cleanup = () => {
    for (const u of [...Object.values(users), ...usersWithPrefix(PREFIX)]) {
      spawnSync('pkill', ['-KILL', '-u', u]);
      if (spawnSync('id', ['-u', u]).status === 0) spawnSync('userdel', ['-r', '-f', u]);
      rmSync(sudoers(u), { force: true });
    }
  };
  process.once('exit', cleanup);
  t.teardown(() => { process.off('exit', cleanup); cleanup(); rmSync(dir, { recursive: true, force: true }); });

  const sh = (cmd: string, args: string[], input?: string) => {
    for (let i = 0; i < 50; i++) {
      const r = spawnSync(cmd, args, { input, encoding: 'utf8' });
      if (r.status === 0) return;
      if (!/lock/i.test(r.stderr ?? '')) throw new Error(`${cmd} ${args[0]} failed: ${(r.stderr ?? '').trim()}`);
      spawnSync('sleep', ['0.1']);
    }
    throw new Error(`${cmd}: /etc/passwd stayed locked`);
  };
  const grantSudo = (u: string) => writeFileSync(sudoers(u), `${u} ALL=(ALL) NOPASSWD: ALL\n`, { mode: 0o440 });

  // The starting credentials: made here, never written to disk (keys reach sshd only as public lines).
  const pwInitial = randomBytes(18).toString('base64url');
  const keyInitial = generateEd25519().private;
  const rsaPair = ssh2.utils.generateKeyPairSync('rsa', { bits: 2048 });
  for (const [k, v] of [['ssh_admin_password', pwInitial], ['ssh_admin_key', keyInitial], ['ssh_admin_key', rsaPair.private]] as const) recordSecret(k, v);
  const publicLine = (priv: string) => {
    const k = ssh2.utils.parseKey(priv) as ssh2.ParsedKey;
    return `${k.type} ${k.getPublicSSH().toString('base64')}`;
  };

  for (const u of Object.values(users)) sh('useradd', ['-m', '-U', '-s', '/bin/sh', '-c', 'tollgate rotation test admin', u]);
  sh('chpasswd', [], `${users.pw}:${pwInitial}\n`);
  for (const [u, priv] of [[users.key, keyInitial], [users.rsa, rsaPair.private]] as const) {
    sh('usermod', ['-p', '*', u]);
    mkdirSync(join(home(u), '.ssh'), { mode: 0o700 });
    writeFileSync(akFile(u), `# the admin's own keys\n${publicLine(priv)} operator-key\n`);
    // An unusual mode, to see that a rewrite keeps it.
    chmodSync(akFile(u), 0o640);
    const { uid, gid } = statSync(home(u));
    chownSync(join(home(u), '.ssh'), uid, gid);
    chownSync(akFile(u), uid, gid);
  }
  for (const u of [users.pw, users.key]) grantSudo(u);

  const sshd = await startSshd(join(dir, 'sshd'), { extraConfig: `Match User ${users.rsa}\n  PubkeyAcceptedAlgorithms rsa-sha2-512,rsa-sha2-256\n` });
  t.teardown(() => sshd.stop());

  // One ssh-agent for the key checks: it holds one key at a time, added from stdin.
  const agentDir = join(dir, 'agent');
  mkdirSync(agentDir, { mode: 0o700 });
  const sock = join(agentDir, 'sock');
  const agent: ChildProcess = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
  t.teardown(() => { agent.kill('SIGTERM'); });
  await until(() => existsSync(sock), 10_000, 'ssh-agent socket');
  const clientEnv = { ...process.env, HOME: agentDir, SSH_AUTH_SOCK: sock };

  const common = ['-F', '/dev/null', '-p', String(sshd.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=10'];
  /** sshd's answer to a password login: 'ok' or why not. */
  const pwLogin = async (user: string, password: string) => {
    const r = await runCmd('sshpass', ['-e', 'ssh', ...common, '-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password', '-o', 'NumberOfPasswordPrompts=1', `${user}@127.0.0.1`, 'echo in'],
      { env: { ...clientEnv, SSHPASS: password } });
    return r.code === 0 && r.stdout.trim() === 'in' ? 'ok' : (r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`);
  };
  /** sshd's answer to a key login (ssh -o BatchMode=yes, the key in the agent only): 'ok' or why not. */
  const keyLogin = async (user: string, privateKey: string) => {
    await runCmd('ssh-add', ['-D'], { env: clientEnv });
    const add = await runCmd('ssh-add', ['-q', '-'], { input: privateKey.endsWith('\n') ? privateKey : `${privateKey}\n`, env: clientEnv });
    if (add.code !== 0) throw new Error(`ssh-add: ${add.stderr.trim()}`);
    try {
      const r = await runCmd('ssh', [...common, '-o', 'BatchMode=yes', '-o', 'PasswordAuthentication=no', '-o', 'KbdInteractiveAuthentication=no', `${user}@127.0.0.1`, 'echo in'], { env: clientEnv });
      return r.code === 0 && r.stdout.trim() === 'in' ? 'ok' : (r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`);
    } finally {
      await runCmd('ssh-add', ['-D'], { env: clientEnv });
    }
  };

  const target = (name: string, admin: Record<string, unknown>, rotate?: string) => ({
    name, protocol: 'ssh', address: `${sshd.host}:${sshd.port}`, risk: 'medium', roles: [{ name: 'user' }],
    credentials: { mode: 'ephemeral-account', prefix: PREFIX, admin, ...(rotate ? { rotate } : {}) },
    options: { hostKeyFingerprint: sshd.hostKeyFingerprint },
  });
  const targets = [
    target('rot-pw', { username: users.pw, password: { vault: true } }, '1h'),
    target('rot-key', { username: users.key, privateKey: { vault: true } }, '1h'),
    target('rot-rsa', { username: users.rsa, privateKey: { vault: true }, sudo: false }),
  ];
  const logs: string[] = [];
  const clock = new ManualClock(Date.now());
  const tg = await startTestGateway({
    targets, listeners: ['ssh'], clock, store: 'sqlite', logSink: (l) => logs.push(l),
    extra: { credentials: { retry: '2m', retryMax: '10m' } },
  });
  t.teardown(() => tg.close());

  const meta = async (name: string) => (await tg.api('carol', 'GET', `/api/v1/targets/${name}/credentials`)).body[0];
  const current = async (name: string, field: string) => (await tg.gw.vault.current(name, field)).reveal();
  /** Every credential the vault held, for the store search at the end. */
  const seen = new Set<string>([pwInitial, keyInitial, rsaPair.private]);
  /**
   * Every scheduled rotation the last clock move made due has finished: neither target is due or
   * claimed (a claim moves the due time to exactly now + 5 min on the manual clock; a success to
   * now + 1h, a failure to now + 2, 4, 8 or 10 min). A clock move rotates both targets when both are due.
   */
  const settled = async () => {
    for (const name of ['rot-pw', 'rot-key']) {
      const m = await meta(name);
      const next = m.nextRotationAt === null ? Infinity : Date.parse(m.nextRotationAt) - clock.now();
      if (m.rotating || next <= 0 || next === 5 * MIN) return false;
    }
    for (const [name, field] of [['rot-pw', PW], ['rot-key', KEY]] as const) seen.add(await current(name, field));
    return true;
  };
  const rotateBy = async (name: string, ms: number, version: number) => {
    clock.advance(ms);
    return until(async () => { clock.advance(0); const m = await meta(name); return m.version > version && await settled() ? m : null; }, 60_000, `${name} rotated past version ${version}`);
  };
  const failedBy = async (name: string, ms: number, failures: number) => {
    clock.advance(ms);
    return until(async () => { clock.advance(0); const m = await meta(name); return m.failures >= failures && await settled() ? m : null; }, 60_000, `${name} failure ${failures}`);
  };
  const session = async (name: string) => {
    const g = await tg.grant('alice', name, 'user');
    const s = await tg.secret('alice', g.id);
    const r = await runClient(s.secret, 'ssh', ['-p', String(tg.listener('ssh').port), `${s.username}@127.0.0.1`, 'id -un'], { env: clientEnv });
    return r.code === 0 ? r.stdout.trim() : `exit ${r.code}: ${r.stderr.trim().split('\n').pop()}`;
  };
  const alerts = async (name: string) => (await tg.store.listAudit({ action: 'notify' })).map((e) => e.data as Record<string, unknown>)
    .filter((d) => d['action'] === 'credential.rotation_failed' && d['target'] === name);
  const authorizedKeys = (u: string) => readFileSync(akFile(u), 'utf8');
  const modeOf = (f: string) => statSync(f).mode & 0o777;

  t.test('config: an ssh admin password or key may be {vault: true}, and rotate needs one', async (t) => {
    const modules = moduleMap();
    const cfg = (credentials: Record<string, unknown>) => () => validateConfig({ targets: [{ ...targets[0], credentials }] }, '<test>', modules);
    const refused = (f: () => unknown): unknown => { try { f(); return 'accepted'; } catch (e) { return e; } };
    t.doesNotThrow(cfg({ mode: 'ephemeral-account', admin: { username: 'ops', privateKey: { vault: true } }, rotate: '24h' }));
    t.doesNotThrow(cfg({ mode: 'ephemeral-account', admin: { username: 'ops', password: { vault: true } }, rotate: '24h' }));
    t.match(refused(cfg({ mode: 'ephemeral-account', admin: { username: 'ops', privateKey: { file: 'k' } }, rotate: '24h' })), { path: 'targets[0].credentials.rotate', expected: /admin\.password or admin\.privateKey to \{vault: true\}/ });
    t.match(refused(cfg({ mode: 'ephemeral-account', admin: { username: 'ops', privateKey: { vault: 'yes' } } })), { path: /targets\[0\]\.credentials\.admin/ });
    t.match(refused(cfg({ mode: 'ephemeral-account', admin: { username: 'ops', password: { vault: true }, privateKey: 'inline' } })), { path: 'targets[0].credentials.admin.privateKey' });
  });

  t.test('the SOC stores the credentials (key from stdin through the CLI path, verified by a login); a wrong one is refused', async (t) => {
    t.match((await tg.api('carol', 'POST', '/api/v1/targets/rot-key/check')).body, { ok: false, detail: /not set yet/ });
    const stranger = generateEd25519().private;
    recordSecret('ssh_admin_key', stranger);
    const wrong = await tg.api('carol', 'PUT', '/api/v1/targets/rot-key/credentials', { secret: stranger });
    t.equal(wrong.status, 409, 'a key the target does not take is not stored');
    t.equal(wrong.body.code, 'verify_failed');
    for (const [name, secret] of [['rot-pw', pwInitial], ['rot-key', keyInitial.trimEnd()], ['rot-rsa', rsaPair.private]] as const) {
      const r = await tg.api('carol', 'PUT', `/api/v1/targets/${name}/credentials`, { secret });
      t.equal(r.status, 200, `${name}: ${JSON.stringify(r.body)}`);
      t.equal(r.body.field, name === 'rot-pw' ? PW : KEY);
      if (name !== 'rot-rsa') t.equal(Date.parse(r.body.nextRotationAt), clock.now() + HOUR, `${name}: next rotation in 1h`);
      t.match((await tg.api('carol', 'POST', `/api/v1/targets/${name}/check`)).body, { ok: true, detail: /admin credential works/ }, `${name}: the admin logs in with the vault credential`);
    }
  });

  t.test('each scheduled rotation: the old credential is refused by sshd, the new one works, sessions mint through the rotated admin', async (t) => {
    const versions = { 'rot-pw': (await meta('rot-pw')).version, 'rot-key': (await meta('rot-key')).version };
    for (let round = 1; round <= 2; round++) {
      const oldPw = await current('rot-pw', PW);
      const oldKey = await current('rot-key', KEY);
      const mk = await rotateBy('rot-key', HOUR + 1000, versions['rot-key']);
      const mp = await rotateBy('rot-pw', 0, versions['rot-pw']);
      versions['rot-key'] = mk.version;
      versions['rot-pw'] = mp.version;
      for (const m of [mp, mk]) t.match(m, { failures: 0, lastFailure: null }, `round ${round}: ${m.target} rotated`);
      const newPw = await current('rot-pw', PW);
      const newKey = await current('rot-key', KEY);
      seen.add(newPw).add(newKey);
      // Compared as booleans: a failing assertion must not print a credential.
      t.ok(newPw !== oldPw, 'a new password');
      t.ok(newKey !== oldKey, 'a new key');
      t.ok(newKey.startsWith('-----BEGIN OPENSSH PRIVATE KEY-----\n'), 'the new key is an OpenSSH private key');
      t.not(await pwLogin(users.pw, oldPw), 'ok', `round ${round}: sshd refuses the old admin password`);
      t.equal(await pwLogin(users.pw, newPw), 'ok', `round ${round}: the new admin password logs in`);
      t.match(await keyLogin(users.key, oldKey), /Permission denied \(publickey/, `round ${round}: sshd refuses the old admin key`);
      t.equal(await keyLogin(users.key, newKey), 'ok', `round ${round}: the new admin key logs in`);
      const ak = authorizedKeys(users.key);
      t.equal(ak, `# the admin's own keys\n${publicLine(newKey)} ${keyComment({ name: 'rot-key' } as never)}\n`, 'authorized_keys: the comment kept, the old line gone, the new one appended');
      t.equal(modeOf(akFile(users.key)), 0o640, 'its mode kept');
      t.equal(statSync(akFile(users.key)).uid, statSync(home(users.key)).uid, 'and its owner');
      for (const name of ['rot-pw', 'rot-key']) t.match(await session(name), new RegExp(`^${PREFIX}alice-[a-z0-9]{4}$`), `round ${round}: a session through ${name} mints an account with the rotated admin`);
    }
    for (const name of ['rot-pw', 'rot-key']) {
      const rotated = (await tg.store.listAudit({ action: 'credential.rotated', subject: name })).map((e) => e.data);
      t.ok(rotated.length >= 2, `${name}: each rotation is audited`);
      t.match(rotated.at(-1), { target: name, field: name === 'rot-pw' ? PW : KEY, recovered: false });
    }
  });

  t.test('rot-pw: sudo refuses the admin: the rotation keeps the old password, is audited, alerts, and is retried', async (t) => {
    const before = await meta('rot-pw');
    const old = await current('rot-pw', PW);
    rmSync(sudoers(users.pw));
    let restored = false;
    t.teardown(() => { if (!restored) grantSudo(users.pw); });
    const failed = await failedBy('rot-pw', HOUR + 1000, 1);
    t.match(failed, { version: before.version, failures: 1, lastFailure: { reason: /setting the new credential on the target failed: .*sudo/ } });
    t.ok(await current('rot-pw', PW) === old, 'the vault keeps the old password');
    t.equal(await pwLogin(users.pw, old), 'ok', 'sshd still takes it');
    t.notOk(failed.lastFailure.reason.includes(old), 'the reason does not hold the password');
    t.match((await tg.store.listAudit({ action: 'credential.rotation_failed', subject: 'rot-pw' })).at(-1)?.data, { field: PW, stillOld: true, failures: 1 });
    t.match((await alerts('rot-pw')).at(-1), { kind: 'alert', stillOld: true }, 'an alert went out');
    t.equal(Date.parse(failed.nextRotationAt), Date.parse(failed.lastFailure.at) + 2 * MIN, 'retried after credentials.retry');
    const again = await failedBy('rot-pw', 2 * MIN + 1000, 2);
    t.equal(Date.parse(again.nextRotationAt), Date.parse(again.lastFailure.at) + 4 * MIN, 'still refused: the retry fails and backs off');
    grantSudo(users.pw);
    restored = true;
    const ok = await rotateBy('rot-pw', 4 * MIN + 1000, before.version);
    t.match(ok, { failures: 0, lastFailure: null }, 'once sudo works again, the retry rotates');
    const now = await current('rot-pw', PW);
    seen.add(now);
    t.not(await pwLogin(users.pw, old), 'ok', 'the old password is refused');
    t.equal(await pwLogin(users.pw, now), 'ok', 'the new one works');
    t.match(await session('rot-pw'), new RegExp(`^${PREFIX}alice-`));
  });

  t.test('rot-key: authorized_keys is not writable by the admin: nothing changes, the old key works, audited, alerts, retried', async (t) => {
    const before = await meta('rot-key');
    const old = await current('rot-key', KEY);
    const file = akFile(users.key);
    const content = authorizedKeys(users.key);
    chmodSync(file, 0o440);
    let restored = false;
    t.teardown(() => { if (!restored) chmodSync(file, 0o640); });
    const failed = await failedBy('rot-key', HOUR + 1000, 1);
    t.match(failed, { version: before.version, failures: 1, lastFailure: { reason: /adding the new key in ~\/\.ssh\/authorized_keys .* failed: .*not a file the admin .* can write/ } });
    t.equal(authorizedKeys(users.key), content, 'authorized_keys is unchanged');
    t.equal(modeOf(file), 0o440);
    t.ok(await current('rot-key', KEY) === old, 'the vault keeps the old key');
    t.equal(await keyLogin(users.key, old), 'ok', 'sshd still takes it');
    t.match((await tg.store.listAudit({ action: 'credential.rotation_failed', subject: 'rot-key' })).at(-1)?.data, { field: KEY, stillOld: true, failures: 1 });
    t.match((await alerts('rot-key')).at(-1), { kind: 'alert', stillOld: true }, 'an alert went out');
    t.match(await session('rot-key'), new RegExp(`^${PREFIX}alice-`), 'sessions still mint with the old key');
    chmodSync(file, 0o640);
    restored = true;
    const ok = await rotateBy('rot-key', 2 * MIN + 1000, before.version);
    t.match(ok, { failures: 0 }, 'the retry rotates');
    const now = await current('rot-key', KEY);
    seen.add(now);
    t.match(await keyLogin(users.key, old), /Permission denied \(publickey/, 'the old key is refused');
    t.equal(await keyLogin(users.key, now), 'ok', 'the new one works');
    t.equal(modeOf(file), 0o640);
  });

  t.test('rot-key: a rotation interrupted after the new key was added is recovered; the next one removes the key it left', async (t) => {
    const rec = (await tg.store.getVaultCredential(vaultId('rot-key', KEY)))!;
    const old = await current('rot-key', KEY);
    const comment = keyComment({ name: 'rot-key' } as never);
    const next = generateEd25519(comment).private;
    recordSecret('ssh_admin_key', next);
    seen.add(next);
    // What a crash after "add the new key" leaves: both lines on the target, the new key pending in the vault.
    appendFileSync(akFile(users.key), `${publicLine(next)} ${comment}\n`);
    await tg.store.upsertVaultCredential({ ...rec, pendingSealed: tg.gw.vault.seal('rot-key', KEY, new Secret(next)), nextRotationAt: clock.now() + 1000 });
    const m = await rotateBy('rot-key', 61_000, rec.version);
    t.match(m, { failures: 0, rotating: false });
    t.ok(await current('rot-key', KEY) === next, 'the pending key became current (it logs in)');
    t.match((await tg.store.listAudit({ action: 'credential.rotated', subject: 'rot-key' })).at(-1)?.data, { recovered: true });
    t.equal(await keyLogin(users.key, old), 'ok', 'the key the crash left behind still logs in until the next rotation');
    const m2 = await rotateBy('rot-key', HOUR + 1000, m.version);
    t.match(m2, { failures: 0 });
    const now = await current('rot-key', KEY);
    t.match(await keyLogin(users.key, old), /Permission denied \(publickey/, 'the next rotation removed the key left behind (marked as the gateway\'s)');
    t.match(await keyLogin(users.key, next), /Permission denied \(publickey/, 'and the one it replaced');
    t.equal(await keyLogin(users.key, now), 'ok');
    t.equal(authorizedKeys(users.key), `# the admin's own keys\n${publicLine(now)} ${comment}\n`, 'one key line left');
  });

  t.test('rot-rsa: sshd refuses the new key at verification: its line is removed again and the old key keeps working', async (t) => {
    const before = await meta('rot-rsa');
    const content = authorizedKeys(users.rsa);
    const r = await tg.api('carol', 'POST', '/api/v1/targets/rot-rsa/credentials/rotate', {});
    t.equal(r.status, 409, 'the rotation fails');
    t.equal(r.body.code, 'rotation_failed');
    t.match(r.body.message, /the new key does not log in to rot-rsa .*the new key was removed again and the old key is kept/);
    t.equal(authorizedKeys(users.rsa), content, 'authorized_keys is as before (the new line was removed)');
    t.equal(modeOf(akFile(users.rsa)), 0o640);
    t.ok(await current('rot-rsa', KEY) === rsaPair.private, 'the vault keeps the old key');
    t.equal((await meta('rot-rsa')).version, before.version);
    t.equal(await keyLogin(users.rsa, rsaPair.private), 'ok', 'sshd still takes the old key');
    t.match((await tg.api('carol', 'POST', '/api/v1/targets/rot-rsa/check')).body, { ok: true }, 'the gateway still logs in as the admin');
    t.match((await tg.store.listAudit({ action: 'credential.rotation_failed', subject: 'rot-rsa' })).at(-1)?.data, { field: KEY, stillOld: true });
    t.match((await alerts('rot-rsa')).at(-1), { kind: 'alert', stillOld: true });
  });

  t.test('every session account is gone', async (t) => {
    await until(async () => usersWithPrefix(PREFIX).length === 0, 30_000, 'session accounts deleted').catch(() => undefined);
    t.same(usersWithPrefix(PREFIX), [], 'no ephemeral account left');
  });

  t.test('the store, the data dir and the logs hold none of the admin credentials', async (t) => {
    const secrets = [...seen].flatMap((v) => {
      // A private key also by the body lines of its PEM (a partial copy is a leak too), but the first:
      // it encodes only the format header ("openssh-key-v1", no cipher, the key type), the same in every key.
      const body = v.startsWith('-----BEGIN') ? v.split('\n').filter((l) => l && !l.startsWith('-----')).slice(1) : [];
      return [{ kind: 'admin', value: v }, ...body.map((l) => ({ kind: 'admin-key-line', value: l }))];
    });
    t.ok(seen.size >= 9, `searching for ${seen.size} credentials (${secrets.length} patterns)`);
    const logDir = join(dir, 'logs');
    mkdirSync(logDir);
    writeFileSync(join(logDir, 'gateway.log'), logs.join(''));
    writeFileSync(join(logDir, 'sshd.log'), sshd.logs());
    t.ok(existsSync(join(tg.dataDir, 'tollgate.db')), 'the SQLite store is in the data dir');
    const res = scanDirs([tg.dataDir, logDir], secrets);
    t.ok(res.files >= 3, `scanned ${res.files} files`);
    t.same(res.hits.map((h) => `${h.file} (${h.form}, ${h.kind})`), [], 'no credential in clear or encoded in the store, data dir or logs');
    // Control: the search finds a credential where one is.
    writeFileSync(join(logDir, 'control'), Buffer.from(`x${[...seen][0]}y`).toString('base64'));
    t.ok(scanDirs([logDir], secrets).hits.length > 0, 'control: a planted credential is found');
  });
}
