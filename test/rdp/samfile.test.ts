/**
 * 'sam-file' credentials without a server: line replacement keeps other lines, atomic 0600
 * writes, and revocation (the rotation) from the stored lease data alone — what the reaper does
 * after a crash — through the module's revokeLease.
 */
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Secret } from '../../auth/secret.js';
import rdpModule from '../../protocols/rdp/index.js';
import { validateTarget } from '../../protocols/rdp/config.js';
import { ntHash } from '../../protocols/rdp/nlmp.js';
import { replaceSamEntry, SAM_LEASE_KIND, samLine, setSamPassword } from '../../protocols/rdp/samfile.js';
import { revokeWithModule } from '../../protocols/types.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-sam-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const h = (pw: string) => ntHash(pw);

t.test('replaceSamEntry', async (t) => {
  const text = `alice:::${h('a').toString('hex')}:::\nbob:CORP::${h('b').toString('hex')}:::\nbob:::${h('old').toString('hex')}:::\n`;
  const out = replaceSamEntry(text, 'bob', '', h('new'));
  t.equal(out, `alice:::${h('a').toString('hex')}:::\nbob:CORP::${h('b').toString('hex')}:::\n${samLine('bob', '', h('new'))}\n`, 'only bob without domain changes, in place');
  t.equal(replaceSamEntry(text, 'BOB', 'corp', h('x')).split('\n')[1], samLine('BOB', 'corp', h('x')), 'names compare case-insensitively');
  t.equal(replaceSamEntry('', 'carol', '', h('c')), `${samLine('carol', '', h('c'))}\n`, 'appended when absent');
  const dup = `dave:::${h('1').toString('hex')}:::\ndave:::${h('2').toString('hex')}:::\n`;
  t.equal(replaceSamEntry(dup, 'dave', '', h('3')), `${samLine('dave', '', h('3'))}\n`, 'duplicate lines collapse to one');
});

t.test('setSamPassword writes atomically with mode 0600 and keeps other lines', async (t) => {
  const sam = join(dir, 'SAM');
  writeFileSync(sam, 'other:::00112233445566778899aabbccddeeff:::\n', { mode: 0o644 });
  await setSamPassword(sam, 'svc', '', new Secret('pw-1'));
  t.equal(readFileSync(sam, 'utf8'), `other:::00112233445566778899aabbccddeeff:::\n${samLine('svc', '', h('pw-1'))}\n`);
  t.equal(statSync(sam).mode & 0o777, 0o600, 'mode 0600');
  t.same(readdirSync(dir).filter((f) => f.includes('tollgate')), [], 'no temp files left');
  await Promise.all([1, 2, 3, 4, 5].map((i) => setSamPassword(sam, `u${i}`, '', new Secret(`p${i}`))));
  const lines = readFileSync(sam, 'utf8').trim().split('\n');
  t.equal(lines.length, 7, 'parallel writers in one process do not lose each other\'s lines');
  await t.rejects(setSamPassword(sam, 'bad:name', '', new Secret('x')), /bad SAM account/);
  await t.rejects(setSamPassword('relative/SAM', 'svc', '', new Secret('x')), /absolute/);
});

t.test('revocation from the stored lease data alone rotates the password', async (t) => {
  const sam = join(dir, 'SAM2');
  writeFileSync(sam, `${samLine('svc', '', h('minted'))}\nkeep:::${h('k').toString('hex')}:::\n`, { mode: 0o600 });
  const target = { name: 'win', protocol: 'rdp', address: '127.0.0.1:3389', roles: [{ name: 'user' }], credentials: { mode: 'sam-file', path: sam, user: 'svc' }, options: {} } as never;
  t.equal(validateTarget(target), null, 'the target config is valid');
  const ctx = { log: pino({ level: 'silent' }) } as never;
  const lease = { id: 'l1', kind: SAM_LEASE_KIND, data: { path: sam, user: 'svc', domain: '' } } as never;
  await revokeWithModule(rdpModule, ctx, target, lease);
  const after = readFileSync(sam, 'utf8').split('\n');
  t.not(after[0], samLine('svc', '', h('minted')), 'the minted hash is gone');
  t.match(after[0], /^svc:::[0-9a-f]{32}:::$/, 'replaced by another hash');
  t.equal(after[1], `keep:::${h('k').toString('hex')}:::`, 'other lines kept');
  await t.rejects(revokeWithModule(rdpModule, ctx, target, { id: 'l2', kind: SAM_LEASE_KIND, data: { path: sam } } as never), /incomplete SAM lease data/);
  t.same(validateTarget({ ...(target as object), credentials: { mode: 'sam-file', path: 'rel', user: 'svc' } } as never)?.path, 'credentials.path');
  t.same(validateTarget({ ...(target as object), credentials: { mode: 'sam-file', path: sam, user: 'a:b' } } as never)?.path, 'credentials.user');
  t.same(validateTarget({ ...(target as object), options: { nla: 'yes' } } as never)?.path, 'options.nla');
});
