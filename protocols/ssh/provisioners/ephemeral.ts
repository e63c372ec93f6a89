/**
 * 'ephemeral-account': a Linux user minted for one session through the admin connection, deleted at
 * the end. With options.keepHome the home directory outlives the account: see keepHomeScript.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Secret } from '../../../auth/secret.js';
import { dialAdmin, runScript, sessionHostKey } from '../admin.js';
import { NAME_RE, roleGroups } from '../config.js';
import { mintSessionKey } from '../cert.js';
import { shellQuote } from '../../shell.js';
import { accountName, createAccountScript, deleteAccountScript, deletedDetail, isMintedName, RETRY_SH, sanitiseName } from '../../linux-accounts.js';
import type { Provisioner, UpstreamCredential } from './types.js';
import type { TargetConfig } from '../../types.js';
import type { LeaseRecord } from '../../../proxy/store/types.js';

export const KIND = 'linux-account';

export function prefixOf(target: TargetConfig): string {
  const p = target.credentials.prefix;
  return typeof p === 'string' ? p : 'tg-';
}

/** Where kept homes live on the target, and the first uid they get (options.keepHomeDir, options.keepHomeUidBase). */
export interface KeepHome { dir: string; key: string; uidBase: number; group: string }

export const DEFAULT_KEEP_HOME_DIR = '/home/tollgate';
export const DEFAULT_KEEP_HOME_UID_BASE = 200_000;

/** The kept home of one identity on one target: a readable name and a hash of both (never another identity's). */
export function keepHomeOf(target: TargetConfig, identity: { sub: string; name: string | null }): KeepHome | null {
  if (target.options.keepHome !== true) return null;
  const key = `${sanitiseName(identity.name ?? identity.sub)}-${createHash('sha256').update(`${identity.sub}\u0000${target.name}`).digest('hex').slice(0, 16)}`;
  return {
    dir: typeof target.options.keepHomeDir === 'string' ? target.options.keepHomeDir : DEFAULT_KEEP_HOME_DIR,
    key,
    uidBase: typeof target.options.keepHomeUidBase === 'number' ? target.options.keepHomeUidBase : DEFAULT_KEEP_HOME_UID_BASE,
    group: `${prefixOf(target)}home`,
  };
}

const KEEP_COMMENT = (key: string) => `tollgate session account (kept home ${key})`;

/**
 * Mint an account whose home persists (options.keepHome). Security reasoning:
 * - One home and one stable uid per identity and target, under a root-owned directory; the uid is
 *   chosen on the target under a lock (flock) and checked there to own no other kept home and to
 *   belong to no account but this identity's session accounts, so no two identities ever share
 *   files, whatever the gateways' state.
 * - Each session still gets its own account name (deleted at the end), sharing that uid; the home's
 *   group is a per-uid group, never a role group. When no other session of the identity runs on
 *   the target, the home is chowned back to uid:gid without following links (which also clears
 *   setuid/setgid bits), so nothing a session with more groups (e.g. sudo) left behind keeps them.
 * - The session key is written as the account itself (setpriv), so a link planted in the home
 *   (.ssh -> /etc) cannot make root write elsewhere; authorized_keys keeps only the keys of the
 *   identity's live session accounts.
 */
export function keepHomeScript(account: string, groups: string[], kh: KeepHome, publicLine: string): string {
  return [
    'set -e',
    RETRY_SH,
    `n=${shellQuote(account)}; base=${shellQuote(kh.dir)}; me=${shellQuote(kh.key)}; uid=${kh.uidBase}; comment=${shellQuote(KEEP_COMMENT(kh.key))}`,
    `key=${shellQuote(`${publicLine} tollgate-session ${account}`)}; groups=${shellQuote(groups.join(','))}`,
    'if [ -L "$base" ]; then echo "$base is a symbolic link" >&2; exit 1; fi',
    'install -d -m 755 -o root -g root "$base"',
    'exec 9>"$base/.lock"',
    'flock -w 60 9',
    'h="$base/$me"',
    'if [ -L "$h" ]; then rm -f "$h"; fi',
    'if [ -d "$h" ]; then',
    '  uid=$(stat -c %u "$h")',
    'else',
    '  while getent passwd "$uid" >/dev/null || getent group "$uid" >/dev/null || [ -n "$(find "$base" -mindepth 1 -maxdepth 1 -uid "$uid" -print -quit)" ]; do uid=$((uid+1)); done',
    '  mkdir -m 700 "$h"',
    'fi',
    'if [ -n "$(find "$base" -mindepth 1 -maxdepth 1 -uid "$uid" ! -name "$me" -print -quit)" ]; then echo "uid $uid owns another kept home" >&2; exit 1; fi',
    'if getent passwd | awk -F: -v u="$uid" -v c="$comment" \'$3==u && $5!=c {f=1} END {exit !f}\'; then echo "uid $uid belongs to another account" >&2; exit 1; fi',
    `g=${shellQuote(kh.group)}"$uid"`,
    'if ! getent group "$uid" >/dev/null; then retry groupadd -g "$uid" "$g"; fi',
    'if [ "$(getent group "$uid" | cut -d: -f1)" != "$g" ]; then echo "gid $uid belongs to another group" >&2; exit 1; fi',
    'if [ -n "$groups" ]; then retry useradd -o -u "$uid" -g "$uid" -M -d "$h" -p \'*\' -s /bin/bash -c "$comment" -G "$groups" "$n"',
    'else retry useradd -o -u "$uid" -g "$uid" -M -d "$h" -p \'*\' -s /bin/bash -c "$comment" "$n"; fi',
    'others=$(getent passwd | awk -F: -v u="$uid" -v n="$n" -v c="$comment" \'$3==u && $1!=n && $5==c {print $1}\' | tr "\\n" " ")',
    'if [ -z "$others" ]; then chown -R -h -P "$uid:$uid" "$h"; fi',
    'chown -h "$uid:$uid" "$h"',
    'chmod 700 "$h"',
    // As the account's uid: keep the keys of the identity's live accounts, add this one.
    'printf \'%s\\n\' "$key" | setpriv --reuid="$uid" --regid="$uid" --clear-groups env HOME="$h" sh -c \'',
    '  umask 077; cd "$HOME" || { echo "the kept home $HOME cannot be reached by its account: every directory above it must be searchable (x) by others" >&2; exit 1; }',
    '  if [ -z "$1" ]; then find . -xdev -type f -perm /6000 -exec chmod ug-s {} + 2>/dev/null || true; fi',
    '  if [ -L .ssh ]; then rm -f .ssh; fi',
    '  mkdir -p .ssh; chmod 700 .ssh',
    '  if [ -L .ssh/authorized_keys ]; then rm -f .ssh/authorized_keys; fi',
    '  { if [ -f .ssh/authorized_keys ]; then for a in $1; do grep -F " tollgate-session $a" .ssh/authorized_keys || true; done; fi; cat; } > .ssh/authorized_keys.new',
    '  mv -f .ssh/authorized_keys.new .ssh/authorized_keys\' sh "$others"',
    'echo "uid=$uid home=$h"',
  ].join('\n');
}

/**
 * Delete a kept-home account, never its home. With another session of the identity still running
 * there, only the processes holding a group the remaining accounts do not have are killed (the
 * rest share the remaining sessions' rights and end with the last of them); otherwise every
 * process of the uid. Its session key leaves authorized_keys.
 */
export function deleteKeepHomeScript(account: string, kh: Pick<KeepHome, 'dir' | 'key'>): string {
  return [
    RETRY_SH,
    `n=${shellQuote(account)}; base=${shellQuote(kh.dir)}; comment=${shellQuote(KEEP_COMMENT(kh.key))}`,
    'if id -u "$n" >/dev/null 2>&1; then',
    '  uid=$(id -u "$n"); h=$(getent passwd "$n" | cut -d: -f6)',
    '  if [ -d "$base" ] && [ ! -L "$base" ]; then exec 9>"$base/.lock"; flock -w 60 9 || true; fi',
    '  others=$(getent passwd | awk -F: -v u="$uid" -v n="$n" -v c="$comment" \'$3==u && $1!=n && $5==c {print $1}\')',
    '  if [ -z "$others" ]; then',
    '    for a in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do',
    '      pkill -KILL -U "$uid" 2>/dev/null || true',
    '      retry userdel -f "$n" 2>/dev/null || true',
    '      id -u "$n" >/dev/null 2>&1 || break',
    '      sleep 0.2',
    '    done',
    '    pkill -KILL -U "$uid" 2>/dev/null || true',
    '  else',
    '    allowed=" $(for a in $others; do id -G "$a"; done | tr " " "\\n" | sort -u | tr "\\n" " ") "',
    '    for p in $(pgrep -U "$uid"); do',
    '      for gid in $(awk \'/^Groups:/ { for (i = 2; i <= NF; i++) print $i }\' "/proc/$p/status" 2>/dev/null); do',
    '        case "$allowed" in *" $gid "*) ;; *) kill -KILL "$p" 2>/dev/null || true; break ;; esac',
    '      done',
    '    done',
    '    retry userdel -f "$n" 2>/dev/null || true',
    '  fi',
    '  if [ -n "$h" ] && [ -d "$h" ]; then',
    '    setpriv --reuid="$uid" --regid="$uid" --clear-groups env HOME="$h" sh -c \'cd "$HOME" || exit 0; f=.ssh/authorized_keys; if [ -f "$f" ] && [ ! -L "$f" ]; then grep -v -F " tollgate-session $1" "$f" > "$f.new" || true; mv -f "$f.new" "$f"; fi\' sh "$n" || true',
    '  fi',
    'fi',
    'if id -u "$n" >/dev/null 2>&1; then echo "account still exists" >&2; exit 1; fi',
    'exit 0',
  ].join('\n');
}

/** The kept home recorded on a lease (null: an ordinary ephemeral account). */
function keptHomeOfLease(lease: LeaseRecord): Pick<KeepHome, 'dir' | 'key'> | null {
  const k = lease.data.keepHome as { dir?: unknown; key?: unknown } | undefined;
  return k && typeof k.dir === 'string' && typeof k.key === 'string' ? { dir: k.dir, key: k.key } : null;
}

export const ephemeralProvisioner: Provisioner = {
  kind: KIND,
  holds: 'a Linux account on the target',
  async mint(ctx, session, target, role) {
    const prefix = prefixOf(target);
    const account = accountName(prefix, session.principal.name ?? session.principal.sub);
    const groups = roleGroups(role);
    for (const g of groups) if (!NAME_RE.test(g)) throw new Error(`role ${role.name}: bad group name`);
    // The admin connection checks the target's host key (or pins it, the first time) before any lease exists.
    const admin = await dialAdmin(ctx, target);
    const kh = keepHomeOf(target, session.principal);
    try {
      const hostKey = await sessionHostKey(ctx, target);
      const data = { mode: 'ephemeral-account', account, prefix, groups, ...(kh ? { keepHome: { dir: kh.dir, key: kh.key } } : {}) };
      return await session.lease<UpstreamCredential>(KIND, data, async () => {
        const { publicLine, privateText } = mintSessionKey();
        if (kh) {
          const r = await runScript(ctx, target, keepHomeScript(account, groups, kh, publicLine), admin);
          if (r.code !== 0) throw new Error(`could not create account ${account} with its kept home on ${target.name}: ${r.stderr.trim().split('\n').pop() ?? 'exit ' + r.code}`);
          const m = /uid=(\d+) home=(\S+)/.exec(r.stdout);
          session.log.info({ account, groups, uid: m?.[1], home: m?.[2] }, 'ssh: ephemeral account created with its kept home');
          return { credential: { username: account, privateKey: new Secret(privateText), hostKey }, data: { uid: m ? Number(m[1]) : null, home: m?.[2] ?? null } };
        }
        const script = [
          // Password field '*': no password can match it, yet the account is not locked ('!', useradd's
          // default), which sshd would refuse even with a key. Set by useradd itself: one process and
          // one /etc/shadow lock fewer than a separate usermod.
          ...createAccountScript(account, groups, { comment: 'tollgate session account', passwordField: '*' }),
          'h=$(getent passwd "$n" | cut -d: -f6)',
          'install -d -m 700 -o "$n" -g "$n" "$h/.ssh"',
          `printf '%s\\n' ${shellQuote(`${publicLine} tollgate-session`)} > "$h/.ssh/authorized_keys"`,
          'chown "$n:$n" "$h/.ssh/authorized_keys"',
          'chmod 600 "$h/.ssh/authorized_keys"',
        ].join('\n');
        const r = await runScript(ctx, target, script, admin);
        if (r.code !== 0) throw new Error(`could not create account ${account} on ${target.name}: ${r.stderr.trim().split('\n').pop() ?? 'exit ' + r.code}`);
        session.log.info({ account, groups }, 'ssh: ephemeral account created');
        return { credential: { username: account, privateKey: new Secret(privateText), hostKey } };
      });
    } finally {
      admin.end();
    }
  },
  async revoke(ctx, target, lease) {
    const account = lease.data.account;
    const prefix = typeof lease.data.prefix === 'string' ? lease.data.prefix : prefixOf(target);
    if (!isMintedName(prefix, account)) throw new Error(`lease ${lease.id}: refusing to delete a name this gateway did not mint`);
    const kept = keptHomeOfLease(lease);
    const script = kept ? deleteKeepHomeScript(account, kept) : deleteAccountScript(account);
    const r = await runScript(ctx, target, script);
    if (r.code !== 0) throw new Error(`could not delete account ${account} on ${target.name}: ${r.stderr.trim().split('\n').pop() ?? 'exit ' + r.code}`);
    ctx.log.info({ account, target: target.name }, 'ssh: ephemeral account deleted');
    return { revoked: true, detail: `${deletedDetail(account, r.stdout)} on ${target.name}` };
  },
};
