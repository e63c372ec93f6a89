/** 'ephemeral-account': a Linux user minted for one session through the admin connection, deleted at the end. */
import { randomBytes } from 'node:crypto';
import { Secret } from '../../../auth/secret.js';
import { dialAdmin, runScript, sessionHostKey } from '../admin.js';
import { NAME_RE, roleGroups } from '../config.js';
import { mintSessionKey } from '../cert.js';
import { shellQuote } from '../../shell.js';
import { accountName, createAccountScript, deleteAccountScript, deletedDetail, isMintedName } from '../../linux-accounts.js';
import type { Provisioner, UpstreamCredential } from './types.js';
import type { TargetConfig } from '../../types.js';

export const KIND = 'linux-account';

export function prefixOf(target: TargetConfig): string {
  const p = target.credentials.prefix;
  return typeof p === 'string' ? p : 'tg-';
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
    const script = deleteAccountScript(account);
    const r = await runScript(ctx, target, script);
    if (r.code !== 0) throw new Error(`could not delete account ${account} on ${target.name}: ${r.stderr.trim().split('\n').pop() ?? 'exit ' + r.code}`);
    ctx.log.info({ account, target: target.name }, 'ssh: ephemeral account deleted');
    return { revoked: true, detail: `${deletedDetail(account, r.stdout)} on ${target.name}` };
  },
};
