// API tokens, web sessions, connection secrets and gateway keys against the real SQLite store.
import t from 'tap';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../../proxy/store/sqlite.js';
import type { GrantRecord, IdentityRecord, Store } from '../../proxy/store/types.js';
import { ManualClock } from '../../policies/clock.js';
import { Secret } from '../../auth/secret.js';
import {
  API_TOKEN_PREFIX, ApiTokens, ConnectionSecrets, SECRET_ALPHABET, WebSessions, hashToken, principalFrom, randomString,
} from '../../auth/credentials.js';
import { gatewayKey, createKeyFile, readKeyFile } from '../../auth/keys.js';

const dir = mkdtempSync(join(tmpdir(), 'tollgate-auth-'));
const dbPath = join(dir, 'tollgate.db');
let store: Store;
const clock = new ManualClock();
const plaintexts: string[] = [];

t.before(async () => { store = await openSqliteStore(dbPath); });
t.teardown(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

function grant(over: Partial<GrantRecord> = {}): GrantRecord {
  const now = clock.now();
  return {
    id: `g-${Math.random().toString(36).slice(2)}`, requestId: null, identity: 'alice', target: 'db1', role: 'read', state: 'active',
    startsAt: now, expiresAt: now + 3_600_000, breakGlass: false, createdAt: now, endedAt: null, endedBy: null, endReason: null, used: false,
    ...over,
  };
}

t.test('hashToken, randomString, principalFrom', async (t) => {
  t.equal(hashToken('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', 'SHA-256 hex');
  t.equal(hashToken(new Secret('abc')), hashToken('abc'));
  const s = randomString(1024);
  t.equal(s.length, 1024);
  t.ok([...s].every((c) => SECRET_ALPHABET.includes(c)), 'only the unambiguous alphabet');
  t.notOk(/[0O1lIo]/.test(SECRET_ALPHABET), 'no look-alike characters');
  t.ok(new Set(s).size > 40, 'uses the whole alphabet');
  t.throws(() => randomString(0));
  const id: IdentityRecord = { sub: 'alice', email: 'a@x', name: 'Alice', groups: ['dev'], firstSeen: 1, lastSeen: 2 };
  t.same(principalFrom(id, 'token', 5), { sub: 'alice', email: 'a@x', name: 'Alice', groups: ['dev'], mfaAt: 5, via: 'token' });
});

t.test('API tokens: create, verify, lastUsedAt throttled, expiry, list, revoke', async (t) => {
  const tokens = new ApiTokens(store, clock);
  const { token, record } = await tokens.create('alice', 'laptop cli', 24 * 3_600_000, clock.now() - 1000);
  plaintexts.push(token.reveal());
  t.ok(token.reveal().startsWith(API_TOKEN_PREFIX));
  t.ok(token.reveal().length >= API_TOKEN_PREFIX.length + 43, '256 bits of randomness');
  t.equal(String(token), '<secret>');
  t.equal(JSON.stringify({ token }), '{"token":"<secret>"}');
  t.equal(record.hash, hashToken(token));
  t.notOk(JSON.stringify(record).includes(token.reveal()), 'record has no plaintext');

  const v1 = await tokens.verify(token.reveal());
  t.equal(v1?.record.id, record.id);
  t.equal(v1?.record.lastUsedAt, clock.now(), 'first use recorded');
  const firstUse = clock.now();
  clock.advance(30_000);
  await tokens.verify(token);
  t.equal((await tokens.list('alice')).find((r) => r.id === record.id)?.lastUsedAt, firstUse, 'not rewritten within a minute');
  clock.advance(31_000);
  await tokens.verify(token);
  t.equal((await tokens.list('alice')).find((r) => r.id === record.id)?.lastUsedAt, clock.now(), 'rewritten after a minute');

  t.equal(await tokens.verify(token.reveal().slice(0, -1) + (token.reveal().endsWith('A') ? 'B' : 'A')), null, 'altered token refused');
  t.equal(await tokens.verify('not-a-token'), null);
  t.equal(await tokens.verify(''), null);
  t.equal(await tokens.verify(API_TOKEN_PREFIX + 'x'.repeat(5000)), null, 'oversized refused');

  await t.rejects(tokens.create('alice', '', 1000, null), /name/);
  await t.rejects(tokens.create('alice', 'bad\nname', 1000, null), /name/);
  await t.rejects(tokens.create('alice', 'x', 0, null), /lifetime/);

  const other = await tokens.create('bob', 'bob token', 60_000, null);
  plaintexts.push(other.token.reveal());
  t.same((await tokens.list('alice')).map((r) => r.name), ['laptop cli'], 'list shows only own tokens');
  t.equal(await tokens.revoke('alice', other.record.id), false, 'cannot revoke someone else\'s token');
  t.ok(await tokens.verify(other.token), 'bob\'s token still works');
  t.equal(await tokens.revoke('alice', record.id), true);
  t.equal(await tokens.verify(token), null, 'revoked token refused');
  t.equal(await tokens.revoke('alice', record.id), false, 'second revoke is a no-op');

  clock.advance(60_000);
  t.equal(await tokens.verify(other.token), null, 'expired token refused');
});

t.test('web sessions: create, verify, step-up, expiry, sign-out', async (t) => {
  const sessions = new WebSessions(store, clock);
  const { cookie, record } = await sessions.create('alice', null, 12 * 3_600_000);
  plaintexts.push(cookie.reveal());
  t.match(cookie.reveal(), /^[A-Za-z0-9_-]{43}$/);
  t.equal((await sessions.verify(cookie.reveal()))?.id, record.id);
  t.equal(await sessions.verify('x'.repeat(43)), null);
  t.equal(await sessions.verify('short'), null);
  const stepped = await sessions.markMfa(cookie, clock.now());
  t.equal(stepped?.mfaAt, clock.now());
  t.equal((await sessions.verify(cookie))?.mfaAt, clock.now(), 'mfaAt stored');
  t.equal(await sessions.revoke(cookie), true);
  t.equal(await sessions.verify(cookie), null, 'signed out');
  t.equal(await sessions.revoke(cookie), false);

  const s2 = await sessions.create('alice', 123, 1000);
  plaintexts.push(s2.cookie.reveal());
  t.equal((await sessions.verify(s2.cookie))?.mfaAt, 123);
  clock.advance(1000);
  t.equal(await sessions.verify(s2.cookie), null, 'expired');
});

t.test('a revoke or sign-out that commits while a token or web session is in use stays (no lost update)', async (t) => {
  const plain = new ApiTokens(store, clock);
  const { token, record } = await plain.create('alice', 'racing', 3_600_000, null);
  plaintexts.push(token.reveal());
  const cookies = new WebSessions(store, clock);
  const web = await cookies.create('alice', null, 3_600_000);
  plaintexts.push(web.cookie.reveal());
  // Another request (or gateway) revokes right after this one has read the record.
  const racing = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'getApiTokenByHash') {
        return async (h: string) => { const r = await target.getApiTokenByHash(h); await plain.revoke('alice', record.id); return r; };
      }
      if (prop === 'getWebSessionByHash') {
        return async (h: string) => { const r = await target.getWebSessionByHash(h); if (r && r.revokedAt === null) await cookies.revoke(web.cookie); return r; };
      }
      return Reflect.get(target, prop, receiver);
    },
  });
  t.equal(await new ApiTokens(racing, clock).verify(token), null, 'the token revoked meanwhile is refused');
  t.ok((await plain.list('alice')).find((r) => r.id === record.id)?.revokedAt, 'and stays revoked');
  t.equal(await new WebSessions(racing, clock).markMfa(web.cookie, clock.now()), null, 'no step-up on a session signed out meanwhile');
  t.equal(await cookies.verify(web.cookie), null, 'it stays signed out');
});

t.test('connection secrets: single use, reusable until expiry, never past the grant, bound to target', async (t) => {
  const secrets = new ConnectionSecrets(store, clock);
  const g = grant();
  await store.insertGrant(g);

  const one = await secrets.issue({ grant: g, protocol: 'postgres', reusable: false, ttlMs: 600_000, verifiers: { 'scram-sha-256': 'SCRAM-SHA-256$4096:c2FsdA==$a:b' } });
  plaintexts.push(one.secret.reveal());
  t.equal(one.secret.reveal().length, 24);
  t.ok([...one.secret.reveal()].every((c) => SECRET_ALPHABET.includes(c)));
  t.equal(one.record.expiresAt, clock.now() + 600_000);
  t.equal(one.record.identity, 'alice');
  t.equal(one.record.role, 'read');

  t.same(await secrets.consume(one.secret, { target: 'db2', protocol: 'postgres' }), { ok: false, code: 'bad_secret', reason: 'the connection secret is not valid for this target' }, 'other target refused');
  t.equal((await secrets.consume(one.secret, { target: 'db1', protocol: 'mysql' })).ok, false, 'other protocol refused');
  t.equal((await secrets.consume(one.secret, { target: 'db1', role: 'admin', protocol: 'postgres' })).ok, false, 'other role refused');
  t.equal((await secrets.consume('nonsense', { target: 'db1', protocol: 'postgres' })).ok, false);
  const first = await secrets.consume(one.secret.reveal(), { target: 'db1', role: 'read', protocol: 'postgres' });
  t.equal(first.ok, true, 'first use accepted (after refusals did not burn it)');
  if (first.ok) { t.equal(first.record.uses, 1); t.equal(first.record.usedAt, clock.now()); }
  const second = await secrets.consume(one.secret, { target: 'db1', protocol: 'postgres' });
  t.same(second, { ok: false, code: 'secret_used', reason: 'the connection secret was already used; ask for a new one' });

  // Racing uses of a single-use secret: exactly one wins.
  const race = await secrets.issue({ grant: g, protocol: null, reusable: false, ttlMs: 600_000, verifiers: {} });
  plaintexts.push(race.secret.reveal());
  const results = await Promise.all(Array.from({ length: 8 }, () => secrets.consume(race.secret, { target: 'db1', protocol: 'ssh' })));
  t.equal(results.filter((r) => r.ok).length, 1, 'one winner among concurrent uses');
  t.ok(results.filter((r) => !r.ok).every((r) => !r.ok && r.code === 'secret_used'));

  const multi = await secrets.issue({ grant: g, protocol: null, reusable: true, ttlMs: 120_000, verifiers: {} });
  plaintexts.push(multi.secret.reveal());
  for (let i = 1; i <= 3; i++) {
    const r = await secrets.consume(multi.secret, { target: 'db1', protocol: i === 2 ? 'ssh' : 'postgres' });
    t.equal(r.ok && r.record.uses, i, `reusable use ${i} (any protocol when unbound)`);
  }
  clock.advance(120_000);
  t.same(await secrets.consume(multi.secret, { target: 'db1', protocol: 'postgres' }), { ok: false, code: 'secret_expired', reason: 'the connection secret has expired; ask for a new one' });

  // Never past the grant.
  const short = grant({ expiresAt: clock.now() + 30_000 });
  await store.insertGrant(short);
  const capped = await secrets.issue({ grant: short, protocol: 'ssh', reusable: true, ttlMs: 600_000, verifiers: {}, length: 32 });
  plaintexts.push(capped.secret.reveal());
  t.equal(capped.secret.reveal().length, 32);
  t.equal(capped.record.expiresAt, short.expiresAt, 'expiry capped at the grant');
  clock.advance(29_999);
  t.equal((await secrets.consume(capped.secret, { target: 'db1', protocol: 'ssh' })).ok, true);
  clock.advance(1);
  t.equal((await secrets.consume(capped.secret, { target: 'db1', protocol: 'ssh' })).ok, false, 'dead with the grant');
  await t.rejects(secrets.issue({ grant: short, protocol: 'ssh', reusable: false, ttlMs: 1000, verifiers: {} }), /not active/, 'no secret for an expired grant');
  await t.rejects(secrets.issue({ grant: grant({ state: 'revoked' }), protocol: 'ssh', reusable: false, ttlMs: 1000, verifiers: {} }), /not active/);
});

t.test('connection secrets: pending + consumeById for challenge-response', async (t) => {
  const secrets = new ConnectionSecrets(store, clock);
  const g = grant({ target: 'pg1', role: 'rw' });
  await store.insertGrant(g);
  const a = await secrets.issue({ grant: g, protocol: 'postgres', reusable: false, ttlMs: 60_000, verifiers: { 'scram-sha-256': 'verifier-a' } });
  const b = await secrets.issue({ grant: g, protocol: 'mysql', reusable: false, ttlMs: 60_000, verifiers: { mysql_native_password: 'verifier-b' } });
  const c = await secrets.issue({ grant: g, protocol: null, reusable: true, ttlMs: 60_000, verifiers: { 'scram-sha-256': 'verifier-c' } });
  plaintexts.push(a.secret.reveal(), b.secret.reveal(), c.secret.reveal());

  const pend = await secrets.pending({ target: 'pg1', protocol: 'postgres' });
  t.same(pend.map((p) => p.id).sort(), [a.record.id, c.record.id].sort(), 'postgres sees its own and unbound secrets');
  t.same(pend.find((p) => p.id === a.record.id)?.verifiers, { 'scram-sha-256': 'verifier-a' });
  t.notOk(JSON.stringify(pend).includes(a.secret.reveal()), 'candidates carry no secret');
  t.same(await secrets.pending({ target: 'pg1', role: 'ro', protocol: 'postgres' }), [], 'role filter');
  t.same(await secrets.pending({ target: 'other', protocol: 'postgres' }), []);

  t.equal((await secrets.consumeById(b.record.id, { target: 'pg1', protocol: 'postgres' })).ok, false, 'mysql-bound secret refused for postgres');
  const ok = await secrets.consumeById(a.record.id, { target: 'pg1', role: 'rw', protocol: 'postgres' });
  t.equal(ok.ok, true);
  const again = await secrets.consumeById(a.record.id, { target: 'pg1', protocol: 'postgres' });
  t.equal(!again.ok && again.code, 'secret_used');
  t.same((await secrets.pending({ target: 'pg1', protocol: 'postgres' })).map((p) => p.id), [c.record.id], 'used single-use secret no longer pending');
  t.equal((await secrets.consumeById('no-such-id', { target: 'pg1', protocol: 'postgres' })).ok, false);
  clock.advance(60_000);
  t.same(await secrets.pending({ target: 'pg1', protocol: 'postgres' }), [], 'expired secrets are not pending');
  const late = await secrets.consumeById(c.record.id, { target: 'pg1', protocol: 'postgres' });
  t.equal(!late.ok && late.code, 'secret_expired');
});

t.test('gateway key: one key file, seal/unseal with expiry, HKDF labels', async (t) => {
  const file = join(dir, 'gateway.key');
  createKeyFile(file);
  t.equal(Buffer.from(readFileSync(file, 'utf8'), 'base64').length, 32, 'a 32-byte key in the file (base64)');
  const k1 = gatewayKey(readKeyFile(file), clock);
  const k2 = gatewayKey(createKeyFile(file), clock);
  t.equal(readKeyFile(file).toString('hex'), Buffer.from(readFileSync(file, 'utf8'), 'base64').toString('hex'), 'creating again keeps the existing key');
  const other = gatewayKey(createKeyFile(join(dir, 'other.key')), clock);
  t.same(k1.deriveKey('scram-salt:pg1'), k2.deriveKey('scram-salt:pg1'), 'stable across loads');
  t.notSame(k1.deriveKey('a'), k1.deriveKey('b'), 'labels separate keys');
  t.notSame(k1.deriveKey('a'), other.deriveKey('a'), 'names separate keys');
  t.equal(k1.deriveKey('a').length, 32);

  const sealed = k1.seal({ returnTo: '/x', n: 1 }, 60_000);
  t.notOk(sealed.includes('returnTo'), 'sealed value is opaque');
  t.same(k2.unseal(sealed), { returnTo: '/x', n: 1 }, 'another instance with the same key unseals');
  t.equal(other.unseal(sealed), null, 'another key cannot');
  const body = sealed.slice(3);
  const flipped = `v1.${body.slice(0, 20)}${body[20] === 'A' ? 'B' : 'A'}${body.slice(21)}`;
  t.equal(k1.unseal(flipped), null, 'tampering detected');
  t.equal(k1.unseal('garbage'), null);
  t.equal(k1.unseal(''), null);
  const forever = k1.seal({ p: 'x' }, Infinity);
  clock.advance(60_000);
  t.equal(k1.unseal(sealed), null, 'expired');
  clock.advance(400 * 86_400_000);
  t.same(k1.unseal(forever), { p: 'x' }, 'sealed with ttl Infinity never expires');
  t.throws(() => gatewayKey(Buffer.alloc(16)), /32 bytes/);
});

t.test('the database never holds a plaintext token, cookie or secret', async (t) => {
  t.ok(plaintexts.length >= 10, `${plaintexts.length} plaintexts collected`);
  // Checkpoint so the WAL content also lands in the main file, then read every file of the store.
  await store.close();
  const files = readdirSync(dir).map((f) => join(dir, f));
  t.ok(files.length >= 1);
  const bytes = Buffer.concat(files.map((f) => readFileSync(f)));
  t.ok(bytes.length > 4096, 'read the database files');
  for (const p of plaintexts) t.equal(bytes.indexOf(Buffer.from(p)), -1, 'plaintext absent');
  t.ok(plaintexts.some((p) => bytes.indexOf(Buffer.from(hashToken(p))) >= 0), 'hashes are what is stored');
  store = await openSqliteStore(dbPath);
});
