/**
 * 'local-account': a Linux account with a random password, minted for one session on this host
 * (where xrdp authenticates through PAM), member of the role's groups, deleted with all its
 * processes at the end. Revocation needs only the stored lease data. The account scripts and
 * names are shared with the SSH module (protocols/linux-accounts.ts), run here locally.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accountName, createAccountScript, deleteAccountScript, deletedDetail, isMintedName } from '../linux-accounts.js';
import { Secret, noteIssued } from '../../auth/secret.js';
import type { LiveSession, ProtocolContext, Revoked, RoleConfig, TargetConfig } from '../types.js';
import type { LeaseRecord } from '../../proxy/store/types.js';
import { NAME_RE, credentialsOf, roleDirectoryGroups, roleGroups } from './config.js';
import { ACCOUNT_KIND, createAccount, planAccount } from '../directory-leases.js';

export const LEASE_KIND = 'rdp-linux-account';

export interface RdpCredential { username: string; password: Secret; domain?: string }

function runSh(script: string, stdin = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('sh', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { if (stdout.length < 4000) stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { if (stderr.length < 4000) stderr += d.toString(); });
    p.on('error', (e) => resolve({ code: 127, stdout, stderr: e.message }));
    p.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    // A script that ends before reading its stdin (useradd refused) gives EPIPE here: its exit status says why.
    p.stdin.on('error', () => undefined);
    p.stdin.end(stdin);
  });
}

export async function mintAccount(session: LiveSession, target: TargetConfig, role: RoleConfig): Promise<RdpCredential> {
  const c = credentialsOf(target);
  const prefix = c.mode === 'local-account' ? c.prefix : 'tg-';
  const account = accountName(prefix, session.principal.name ?? session.principal.sub);
  const groups = roleGroups(role);
  for (const g of groups) if (!NAME_RE.test(g)) throw new Error(`role ${role.name}: bad group name`);
  return session.lease<RdpCredential>(LEASE_KIND, { account, prefix, groups }, async () => {
    const password = noteIssued('rdp_password', randomBytes(18).toString('base64url'));
    const script = [
      ...createAccountScript(account, groups, { comment: 'tollgate rdp session account' }),
      // The password arrives on stdin, never on a command line.
      'retry chpasswd',
    ].join('\n');
    const r = await runSh(script, `${account}:${password}\n`);
    if (r.code !== 0) throw new Error(`could not create account ${account}: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`}`);
    session.log.info({ account, groups }, 'rdp: ephemeral account created');
    return { credential: { username: account, password: new Secret(password) } };
  });
}

/**
 * 'directory-account': a domain account minted in the configured directory for this session (see
 * protocols/directory-leases.ts), in the role's directoryGroups; the upstream login (Client Info
 * and NLA) carries DOMAIN\\account and its password. Revoked by revokeAccount from the lease alone.
 */
export async function mintDirectoryAccount(ctx: ProtocolContext, session: LiveSession, role: RoleConfig): Promise<RdpCredential> {
  const data = await planAccount(ctx, session.principal.name ?? session.principal.sub, roleDirectoryGroups(role), session.grant.expiresAt);
  return session.lease<RdpCredential>(ACCOUNT_KIND, { ...data }, async (leaseId) => {
    const c = await createAccount(ctx, leaseId, data);
    return { credential: { username: c.username, password: c.password, domain: c.domain } };
  });
}

export async function deleteAccount(ctx: ProtocolContext, target: TargetConfig, lease: LeaseRecord): Promise<Revoked> {
  const account = lease.data.account;
  const c = credentialsOf(target);
  const prefix = typeof lease.data.prefix === 'string' ? lease.data.prefix : c.mode === 'local-account' ? c.prefix : 'tg-';
  if (!isMintedName(prefix, account)) throw new Error(`lease ${lease.id}: refusing to delete a name this gateway did not mint`);
  const script = deleteAccountScript(account);
  const r = await runSh(script);
  if (r.code !== 0) throw new Error(`could not delete account ${account}: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`}`);
  ctx.log.info({ account, target: target.name }, 'rdp: ephemeral account deleted');
  return { revoked: true, detail: deletedDetail(account, r.stdout) };
}
