/**
 * Linux session accounts, shared by the modules that mint them: SSH over the target's admin
 * connection (protocols/ssh/provisioners/ephemeral.ts), RDP on the gateway host where xrdp signs in
 * through PAM (protocols/rdp/provisioner.ts). Names are minted here and only names that this code
 * could have minted are ever deleted.
 */
import { randomBytes } from 'node:crypto';
import { shellQuote } from './shell.js';

/** A Linux user or group name (useradd's default rule, at most 32 characters). */
export const LINUX_NAME_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

/** A shell function that retries commands failing on /etc/passwd|shadow|group locks (parallel useradd). */
export const RETRY_SH = `retry() {
  i=0
  while :; do
    if out=$("$@" 2>&1); then return 0; fi
    case "$out" in
      *lock*) i=$((i+1)); if [ "$i" -ge 100 ]; then echo "$out" >&2; return 1; fi; sleep 0.1 ;;
      *) echo "$out" >&2; return 1 ;;
    esac
  done
}`;

/** The identity's name reduced to [a-z0-9-] for a readable account name. */
export function sanitiseName(raw: string): string {
  const local = raw.split('@')[0] ?? '';
  const s = local.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-+/g, '-').replace(/^-+|-+$/g, '');
  return s.slice(0, 16).replace(/-+$/, '') || 'user';
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
/** <prefix><name>-<4 random characters>, e.g. tg-alice-7f3k. */
export function accountName(prefix: string, identity: string): string {
  const bytes = randomBytes(4);
  const suffix = [...bytes].map((b) => ALPHABET[b % ALPHABET.length]).join('');
  const name = `${prefix}${sanitiseName(identity)}-${suffix}`;
  if (!LINUX_NAME_RE.test(name)) throw new Error('could not form a valid account name');
  return name;
}

/** Only accounts accountName could have made are ever deleted. */
export function isMintedName(prefix: string, name: unknown): name is string {
  return typeof name === 'string' && LINUX_NAME_RE.test(name) && name.startsWith(prefix) && /-[a-z0-9]{4}$/.test(name);
}

/**
 * The shell lines that create a local Linux account (its own group, a home, the given groups,
 * `passwordField` as the shadow field when given).
 */
export function createAccountScript(account: string, groups: string[], opts: { comment: string; passwordField?: string }): string[] {
  return [
    'set -e',
    RETRY_SH,
    `n=${shellQuote(account)}`,
    `retry useradd -m -U${opts.passwordField ? ` -p ${shellQuote(opts.passwordField)}` : ''} -s /bin/bash -c ${shellQuote(opts.comment)}${groups.length ? ` -G ${shellQuote(groups.join(','))}` : ''} "$n"`,
  ];
}

/**
 * A script that kills the account's processes and deletes it with its home. It prints "deleted"
 * or "absent" (the account did not exist) and exits 0, or exits 1 if the account still exists.
 */
export function deleteAccountScript(account: string): string {
  return [
    RETRY_SH,
    `n=${shellQuote(account)}`,
    'if ! id -u "$n" >/dev/null 2>&1; then echo absent; exit 0; fi',
    'pkill -KILL -u "$n" 2>/dev/null || true',
    'for a in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do',
    '  retry userdel -r -f "$n" 2>/dev/null || true',
    '  id -u "$n" >/dev/null 2>&1 || break',
    '  pkill -KILL -u "$n" 2>/dev/null || true; sleep 0.2',
    'done',
    'if id -u "$n" >/dev/null 2>&1; then echo "account still exists" >&2; exit 1; fi',
    'echo deleted',
    'exit 0',
  ].join('\n');
}

/** What deleteAccountScript's output says, for the revoke's confirmation. */
export function deletedDetail(account: string, stdout: string): string {
  return /\babsent\b/.test(stdout) ? `account ${account} was already gone` : `account ${account} deleted`;
}
