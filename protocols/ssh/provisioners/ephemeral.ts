/** 'ephemeral-account': a Linux user minted for one session through the admin connection, deleted at the end. */
import { randomBytes } from 'node:crypto';
import { Secret } from '../../../auth/secret.js';
import { dialAdmin, runScript, sessionHostKey } from '../admin.js';
import { NAME_RE, roleGroups } from '../config.js';
import { mintSessionKey } from '../cert.js';
import { RETRY_SH, shq, type Provisioner, type UpstreamCredential } from './types.js';
import type { TargetConfig } from '../../types.js';

export const KIND = 'linux-account';

export function prefixOf(target: TargetConfig): string {
  const p = target.credentials.prefix;
  return typeof p === 'string' ? p : 'tg-';
}

/** The identity's name reduced to [a-z0-9-] for a readable account name. */
export function sanitiseName(raw: string): string {
  const local = raw.split('@')[0] ?? '';
  const s = local.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-+/g, '-').replace(/^-+|-+$/g, '');
  return s.slice(0, 16).replace(/-+$/, '') || 'user';
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
export function accountName(prefix: string, identity: string): string {
  const bytes = randomBytes(4);
  const suffix = [...bytes].map((b) => ALPHABET[b % ALPHABET.length]).join('');
  const name = `${prefix}${sanitiseName(identity)}-${suffix}`;
  if (!NAME_RE.test(name)) throw new Error('could not form a valid account name');
  return name;
}

/** Only accounts this provisioner could have made are ever deleted. */
export function isMintedName(prefix: string, name: unknown): name is string {
  return typeof name === 'string' && NAME_RE.test(name) && name.startsWith(prefix) && /-[a-z0-9]{4}$/.test(name);
}

/**
 * The shell lines that create a local Linux account (its own group, a home, the given groups,
 * `passwordField` as the shadow field when given). Shared with the RDP module's local accounts.
 */
export function createAccountScript(account: string, groups: string[], opts: { comment: string; passwordField?: string }): string[] {
  return [
    'set -e',
    RETRY_SH,
    `n=${shq(account)}`,
    `retry useradd -m -U${opts.passwordField ? ` -p ${shq(opts.passwordField)}` : ''} -s /bin/bash -c ${shq(opts.comment)}${groups.length ? ` -G ${shq(groups.join(','))}` : ''} "$n"`,
  ];
}

/** A script that kills the account's processes and deletes it with its home; exit 1 if it still exists. */
export function deleteAccountScript(account: string): string {
  return [
    RETRY_SH,
    `n=${shq(account)}`,
    'if id -u "$n" >/dev/null 2>&1; then',
    '  pkill -KILL -u "$n" 2>/dev/null || true',
    '  for a in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do',
    '    retry userdel -r -f "$n" 2>/dev/null || true',
    '    id -u "$n" >/dev/null 2>&1 || break',
    '    pkill -KILL -u "$n" 2>/dev/null || true; sleep 0.2',
    '  done',
    'fi',
    'if id -u "$n" >/dev/null 2>&1; then echo "account still exists" >&2; exit 1; fi',
    'exit 0',
  ].join('\n');
}

export const ephemeralProvisioner: Provisioner = {
  kind: KIND,
  async mint(ctx, session, target, role) {
    const prefix = prefixOf(target);
    const account = accountName(prefix, session.principal.name ?? session.principal.sub);
    const groups = roleGroups(role);
    for (const g of groups) if (!NAME_RE.test(g)) throw new Error(`role ${role.name}: bad group name`);
    // The admin connection checks the target's host key (or pins it, the first time) before any lease exists.
    const admin = await dialAdmin(ctx, target);
    try {
      const hostKey = await sessionHostKey(ctx, target);
      return await session.lease<UpstreamCredential>(KIND, { mode: 'ephemeral-account', account, prefix, groups }, async () => {
        const { publicLine, privateText } = mintSessionKey();
        const script = [
          // Password field '*': no password can match it, yet the account is not locked ('!', useradd's
          // default), which sshd would refuse even with a key. Set by useradd itself: one process and
          // one /etc/shadow lock fewer than a separate usermod.
          ...createAccountScript(account, groups, { comment: 'tollgate session account', passwordField: '*' }),
          'h=$(getent passwd "$n" | cut -d: -f6)',
          'install -d -m 700 -o "$n" -g "$n" "$h/.ssh"',
          `printf '%s\\n' ${shq(`${publicLine} tollgate-session`)} > "$h/.ssh/authorized_keys"`,
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
    const script = deleteAccountScript(account);
    const r = await runScript(ctx, target, script);
    if (r.code !== 0) throw new Error(`could not delete account ${account} on ${target.name}: ${r.stderr.trim().split('\n').pop() ?? 'exit ' + r.code}`);
    ctx.log.info({ account, target: target.name }, 'ssh: ephemeral account deleted');
  },
};
