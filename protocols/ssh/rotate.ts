/**
 * Rotation of an SSH target's admin credential kept in the vault (proxy/vault-rotation.ts runs it),
 * in both forms credentials.admin takes:
 *   admin.password    the admin logs in with its current password and sets the new one on its own
 *                     account with chpasswd (through `sudo -n` when it is not root), the password in
 *                     a here-document on the script's stdin: never on a command line or in a log;
 *   admin.privateKey  a new ed25519 key (OpenSSH format); its public key is appended to the admin's
 *                     ~/.ssh/authorized_keys (rewritten atomically, file mode kept), a fresh login
 *                     with the new key verifies it, and only then the old key's line is removed (over
 *                     that new-key login) and a further fresh login checks the new key once more. Any
 *                     failure after the new line was added removes it again (and puts the old
 *                     key's line back if it had gone) over the old key's still open login, so the
 *                     old key keeps working. An sshd reading another AuthorizedKeysFile for the
 *                     admin refuses the new key at verification: the rotation fails, old key kept.
 * Every login checks the target's host key like every other admin connection (./hostkeys.ts).
 * Verification is a fresh login offering only the credential being verified.
 */
import { randomBytes } from 'node:crypto';
import ssh2 from 'ssh2';
import { Secret, noteIssued } from '../../auth/secret.js';
import type { AdminRotation, ProtocolContext, TargetConfig } from '../types.js';
import { adminOf } from './config.js';
import { chpasswdScript, dialAdmin, exec, runScript, type AdminAuth } from './admin.js';
import { generateEd25519 } from './cert.js';
import { shellQuote } from '../shell.js';

const { utils } = ssh2;

type Field = AdminAuth['field'];
const FIELDS: readonly Field[] = ['admin.password', 'admin.privateKey'];

function fieldOf(field: string): Field {
  if (!(FIELDS as readonly string[]).includes(field)) throw new Error(`ssh targets cannot rotate ${field}`);
  return field as Field;
}

/** The comment on the authorized_keys lines this rotation writes: marks them as the gateway's for this target. */
export function keyComment(target: TargetConfig): string {
  return `tollgate-admin@${target.name.replace(/[^A-Za-z0-9._-]/g, '_')}`;
}

/** The public key of an OpenSSH/PEM private key: its type and base64 blob (what an authorized_keys line carries). */
function publicKeyOf(privateKey: Secret): { type: string; blob: string } {
  const k = utils.parseKey(privateKey.reveal());
  const key = Array.isArray(k) ? k[0] : k;
  if (!key || key instanceof Error) throw new Error('the admin private key cannot be read (an unencrypted OpenSSH or PEM key is needed)');
  return { type: key.type, blob: key.getPublicSSH().toString('base64') };
}

/** A base64 key blob, checked before it goes into a script. */
const BLOB_RE = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The sh script that rewrites the admin's own ~/.ssh/authorized_keys: lines whose key is one of
 * `drop` (and, with `dropTagged`, other lines carrying `tag`) go, `add` is appended unless its key is
 * there already. Written to a temporary file beside it with the old file's mode, then renamed over it
 * (readers see the old or the new file, never half of one). Refuses, changing nothing, when the file
 * is not writable by the admin.
 */
function authorizedKeysScript(o: { drop: string[]; add: string; tag: string; dropTagged: boolean }): string {
  for (const b of o.drop) if (!BLOB_RE.test(b)) throw new Error('a malformed public key');
  return [
    'set -e',
    'umask 077',
    'd="$HOME/.ssh"',
    'f="$d/authorized_keys"',
    `add=${shellQuote(o.add)}`,
    `drop=${shellQuote(o.drop.join(' '))}`,
    `tag=${shellQuote(o.dropTagged ? o.tag : '')}`,
    '[ -d "$d" ] || mkdir -m 700 "$d"',
    'if [ -e "$f" ]; then',
    '  [ -f "$f" ] && [ -w "$f" ] || { echo "$f is not a file the admin $(id -un) can write" >&2; exit 3; }',
    '  mode=$(stat -c %a "$f")',
    '  src="$f"',
    'else',
    '  mode=600',
    '  src=/dev/null',
    'fi',
    'tmp=$(mktemp "$d/.authorized_keys.tollgate.XXXXXX") || { echo "cannot create a file in $d" >&2; exit 3; }',
    'trap \'rm -f "$tmp"\' EXIT',
    // A line goes when any of its fields is a dropped key blob, or (dropTagged) it ends in the tag and is not the added key.
    `awk -v drop="$drop" -v add="$add" -v tag="$tag" '
BEGIN { n = split(drop, d, " "); for (i = 1; i <= n; i++) D[d[i]] = 1; split(add, a, " "); addb = a[2]; seen = 0 }
{
  keep = 1; mine = 0
  for (i = 1; i <= NF; i++) { if ($i in D) keep = 0; if (addb != "" && $i == addb) mine = 1 }
  if (tag != "" && NF > 0 && $NF == tag && !mine) keep = 0
  if (mine) { if (seen) keep = 0; seen = 1 }
  if (keep) print
}
END { if (add != "" && !seen) print add }' "$src" > "$tmp"`,
    'chmod "$mode" "$tmp"',
    'mv -f "$tmp" "$f"',
    'trap - EXIT',
  ].join('\n');
}

/** Run an authorized_keys rewrite as the admin itself (its own file: no sudo). */
async function rewriteKeys(c: ssh2.Client, target: TargetConfig, o: Parameters<typeof authorizedKeysScript>[0], what: string): Promise<void> {
  const r = await exec(c, 'sh -s', `${authorizedKeysScript(o)}\n`, 60_000);
  if (r.code !== 0) throw new Error(`${what} in ~/.ssh/authorized_keys of ${adminOf(target).username} on ${target.name} failed: ${lastLine(r.stderr) || `exit ${r.code}`}`);
}

function lastLine(s: string): string {
  return s.trim().split('\n').pop()?.slice(0, 300) ?? '';
}

/** A fresh login offering only `auth`; the connection is closed after one command ran. */
async function login(ctx: ProtocolContext, target: TargetConfig, auth: AdminAuth): Promise<void> {
  const c = await dialAdmin(ctx, target, auth);
  try {
    const r = await exec(c, 'true', undefined, 15_000);
    if (r.code !== 0) throw new Error(`logged in to ${target.name}, but a command failed (exit ${r.code})`);
  } finally {
    c.end();
  }
}

async function setPassword(ctx: ProtocolContext, target: TargetConfig, current: Secret, next: Secret): Promise<void> {
  const admin = adminOf(target);
  const c = await dialAdmin(ctx, target, { field: 'admin.password', secret: current });
  try {
    const r = await runScript(ctx, target, chpasswdScript(admin.username, next), c);
    if (r.code !== 0) throw new Error(`setting the password of ${admin.username} on ${target.name} failed: ${lastLine(r.stderr) || `exit ${r.code}`}`);
  } finally {
    c.end();
  }
}

async function setKey(ctx: ProtocolContext, target: TargetConfig, current: Secret, next: Secret): Promise<void> {
  const field = 'admin.privateKey';
  const oldKey = publicKeyOf(current);
  const newKey = publicKeyOf(next);
  const tag = keyComment(target);
  const newLine = `${newKey.type} ${newKey.blob} ${tag}`;
  const old = await dialAdmin(ctx, target, { field, secret: current });
  // Any failure once the new line is in: the new line goes and the old key is there (put back if it went).
  const undo = (why: string, kept: string) => undoNewKey(old, target, { newBlob: newKey.blob, oldLine: `${oldKey.type} ${oldKey.blob} ${tag}` }, why, kept);
  try {
    await rewriteKeys(old, target, { drop: [], add: newLine, tag, dropTagged: false }, 'adding the new key');
    // Verified by a fresh login with the new key; over that login the old key's line goes (and lines of keys earlier rotations left behind).
    let fresh: ssh2.Client;
    try {
      fresh = await dialAdmin(ctx, target, { field, secret: next });
    } catch (e) {
      return await undo(`the new key does not log in to ${target.name} (${(e as Error).message})`, 'the old key is kept');
    }
    try {
      await rewriteKeys(fresh, target, { drop: [oldKey.blob], add: newLine, tag, dropTagged: true }, 'removing the old key');
    } catch (e) {
      return await undo((e as Error).message, 'the old key is kept');
    } finally {
      fresh.end();
    }
    try {
      await login(ctx, target, { field, secret: next });
    } catch (e) {
      // The new key stopped working once the old one was removed: the old one goes back (over its still open login).
      return await undo(`the new key was refused after the old one was removed (${(e as Error).message})`, 'the old key was put back');
    }
  } finally {
    old.end();
  }
}

/** Remove the new key's line again and make sure the old key's is there, over the old key's login; fail with why. */
async function undoNewKey(old: ssh2.Client, target: TargetConfig, o: { newBlob: string; oldLine: string }, why: string, kept: string): Promise<never> {
  const r = await rewriteKeys(old, target, { drop: [o.newBlob], add: o.oldLine, tag: '', dropTagged: false }, 'removing the new key again').then(() => null, (e: Error) => e);
  throw new Error(`${why}; ${r ? `removing the new key again failed too: ${r.message}` : `the new key was removed again and ${kept}`}`);
}

export const sshAdminRotation: AdminRotation = {
  fields: FIELDS,
  generate(target, field) {
    if (fieldOf(field) === 'admin.privateKey') return new Secret(noteIssued('ssh_admin_private_key_rotated', generateEd25519(keyComment(target)).private));
    return new Secret(noteIssued('admin_password_rotated', randomBytes(24).toString('base64url')));
  },
  async set(ctx, target, field, current, next) {
    if (fieldOf(field) === 'admin.privateKey') await setKey(ctx, target, current, next);
    else await setPassword(ctx, target, current, next);
  },
  async verify(ctx, target, field, credential) {
    await login(ctx, target, { field: fieldOf(field), secret: credential });
  },
};
