/**
 * 'sam-file' credentials: an existing account in a winpr SAM file (what FreeRDP servers check NLA
 * against; lines `user:domain::nthash:::` as `winpr-hash -f sam` prints them). At session start
 * a random password is minted and its NT hash written for the account; at the end (lease
 * revocation, also by the reaper after a crash, from the stored lease data alone) it is replaced
 * by the hash of a fresh random password nobody knows. Writes are atomic (temp file + rename,
 * mode 0600) and keep every other line. Passwords never reach logs.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { Secret, noteIssued } from '../../auth/secret.js';
import type { LeaseRecord } from '../../proxy/store/types.js';
import type { LiveSession, ProtocolContext, Revoked, TargetConfig } from '../types.js';
import { credentialsOf, SAM_NAME_RE } from './config.js';
import { ntHash } from './nlmp.js';
import type { RdpCredential } from './provisioner.js';

export const SAM_LEASE_KIND = 'rdp-sam-password';

/** One SAM line for an account (the format `winpr-hash -u user -p pw -f sam` prints, with the domain if any). */
export function samLine(user: string, domain: string, nthash: Buffer): string {
  return `${user}:${domain}::${nthash.toString('hex')}:::`;
}

/** The file's text with the account's line(s) replaced by one for `nthash` (appended when absent). */
export function replaceSamEntry(text: string, user: string, domain: string, nthash: Buffer): string {
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const out: string[] = [];
  let placed = false;
  for (const l of lines) {
    const f = l.split(':');
    const same = f.length >= 4 && f[0]!.toLowerCase() === user.toLowerCase() && (f[1] ?? '').toLowerCase() === domain.toLowerCase();
    if (!same) { out.push(l); continue; }
    if (!placed) { out.push(samLine(user, domain, nthash)); placed = true; }
  }
  if (!placed) out.push(samLine(user, domain, nthash));
  return `${out.join('\n')}\n`;
}

function writeAtomic(path: string, text: string): void {
  const tmp = join(dirname(path), `.${basename(path)}.tollgate-${randomBytes(6).toString('hex')}`);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
}

function readOrEmpty(path: string): string {
  try { return readFileSync(path, 'utf8'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw e;
  }
}

/** Set the account's password hash in the SAM file (serialised per file within this process). */
export async function setSamPassword(path: string, user: string, domain: string, password: Secret): Promise<void> {
  if (!isAbsolute(path)) throw new Error('SAM file path must be absolute');
  if (!SAM_NAME_RE.test(user) || (domain !== '' && !SAM_NAME_RE.test(domain))) throw new Error('bad SAM account or domain name');
  await withSamLock(path, async () => {
    writeAtomic(path, replaceSamEntry(readOrEmpty(path), user, domain, ntHash(password.reveal())));
  });
}

const locks = new Map<string, Promise<unknown>>();

/** Run fn while holding this process's lock for the SAM file (mint → upstream login, rotation). */
export function withSamLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(path) ?? Promise.resolve();
  const run = prev.catch(() => {}).then(fn);
  const tail = run.catch(() => {});
  locks.set(path, tail);
  void tail.then(() => { if (locks.get(path) === tail) locks.delete(path); });
  return run;
}

export function mintPassword(): Secret { return noteIssued('rdp_sam_password', new Secret(randomBytes(18).toString('base64url'))); }

/** Mint the session password for the target's SAM account (a lease: rotated when the session ends). */
export async function mintSamPassword(session: LiveSession, target: TargetConfig): Promise<RdpCredential> {
  const c = credentialsOf(target);
  if (c.mode !== 'sam-file') throw new Error('target does not use sam-file credentials');
  return session.lease<RdpCredential>(SAM_LEASE_KIND, { path: c.path, user: c.user, domain: c.domain }, async () => {
    const password = mintPassword();
    await writeLocked(c.path, c.user, c.domain, password);
    session.log.info({ account: c.user, samFile: c.path }, 'rdp: session password installed in the SAM file');
    return { credential: { username: c.user, domain: c.domain, password } };
  });
}

/** The caller already holds the file's lock (mint inside withSamLock): write without re-locking. */
async function writeLocked(path: string, user: string, domain: string, password: Secret): Promise<void> {
  if (!isAbsolute(path)) throw new Error('SAM file path must be absolute');
  if (!SAM_NAME_RE.test(user) || (domain !== '' && !SAM_NAME_RE.test(domain))) throw new Error('bad SAM account or domain name');
  writeAtomic(path, replaceSamEntry(readOrEmpty(path), user, domain, ntHash(password.reveal())));
}

/** Revocation: the account gets the hash of a random password nobody knows. Needs only the lease data. */
export async function rotateSamPassword(ctx: ProtocolContext, target: TargetConfig | null, lease: LeaseRecord): Promise<Revoked> {
  const { path, user, domain } = lease.data as Record<string, unknown>;
  if (typeof path !== 'string' || typeof user !== 'string' || typeof domain !== 'string') throw new Error(`lease ${lease.id}: incomplete SAM lease data`);
  await setSamPassword(path, user, domain, mintPassword());
  ctx.log.info({ account: user, samFile: path, target: target?.name }, 'rdp: SAM password rotated after the session');
  return { revoked: true, detail: `the password of ${domain ? `${domain}\\` : ''}${user} in ${path} was rotated` };
}
