/**
 * 'local-account': a Linux account with a random password, minted for one session on this host
 * (where xrdp authenticates through PAM), member of the role's groups, deleted with all its
 * processes at the end. Revocation needs only the stored lease data.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Secret } from '../../auth/secret.js';
import type { LiveSession, ProtocolContext, RoleConfig, TargetConfig } from '../types.js';
import type { LeaseRecord } from '../../proxy/store/types.js';
import { NAME_RE, credentialsOf, roleGroups } from './config.js';

export const LEASE_KIND = 'rdp-linux-account';

export interface RdpCredential { username: string; password: Secret; domain?: string }

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export function accountName(prefix: string, identity: string): string {
  const local = (identity.split('@')[0] ?? '').toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-+/g, '-').replace(/^-+|-+$/g, '');
  const base = local.slice(0, 14).replace(/-+$/, '') || 'user';
  const suffix = [...randomBytes(4)].map((b) => ALPHABET[b % ALPHABET.length]).join('');
  const name = `${prefix}${base}-${suffix}`;
  if (!NAME_RE.test(name)) throw new Error('could not form a valid account name');
  return name;
}

export function isMintedName(prefix: string, name: unknown): name is string {
  return typeof name === 'string' && NAME_RE.test(name) && name.startsWith(prefix) && /-[a-z0-9]{4}$/.test(name);
}

/** Retries commands that fail on /etc/passwd|shadow|group locks (parallel useradd/userdel). */
const RETRY_SH = `retry() {
  i=0
  while :; do
    if out=$("$@" 2>&1); then return 0; fi
    case "$out" in
      *lock*) i=$((i+1)); if [ "$i" -ge 100 ]; then echo "$out" >&2; return 1; fi; sleep 0.1 ;;
      *) echo "$out" >&2; return 1 ;;
    esac
  done
}`;

function runSh(script: string, stdin = ''): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('sh', ['-c', script], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => { if (stderr.length < 4000) stderr += d.toString(); });
    p.on('error', (e) => resolve({ code: 127, stderr: e.message }));
    p.on('close', (code) => resolve({ code: code ?? 1, stderr }));
    p.stdin.end(stdin);
  });
}

const shq = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;

export async function mintAccount(session: LiveSession, target: TargetConfig, role: RoleConfig): Promise<RdpCredential> {
  const c = credentialsOf(target);
  const prefix = c.mode === 'local-account' ? c.prefix : 'tg-';
  const account = accountName(prefix, session.principal.name ?? session.principal.sub);
  const groups = roleGroups(role);
  for (const g of groups) if (!NAME_RE.test(g)) throw new Error(`role ${role.name}: bad group name`);
  return session.lease<RdpCredential>(LEASE_KIND, { account, prefix, groups }, async () => {
    const password = randomBytes(18).toString('base64url');
    const script = [
      'set -e', RETRY_SH, `n=${shq(account)}`,
      `retry useradd -m -U -s /bin/bash -c 'tollgate rdp session account'${groups.length ? ` -G ${shq(groups.join(','))}` : ''} "$n"`,
      // The password arrives on stdin, never on a command line.
      'retry chpasswd',
    ].join('\n');
    const r = await runSh(script, `${account}:${password}\n`);
    if (r.code !== 0) throw new Error(`could not create account ${account}: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`}`);
    session.log.info({ account, groups }, 'rdp: ephemeral account created');
    return { credential: { username: account, password: new Secret(password) } };
  });
}

export async function deleteAccount(ctx: ProtocolContext, target: TargetConfig, lease: LeaseRecord): Promise<void> {
  const account = lease.data.account;
  const c = credentialsOf(target);
  const prefix = typeof lease.data.prefix === 'string' ? lease.data.prefix : c.mode === 'local-account' ? c.prefix : 'tg-';
  if (!isMintedName(prefix, account)) throw new Error(`lease ${lease.id}: refusing to delete a name this gateway did not mint`);
  const script = [
    RETRY_SH, `n=${shq(account)}`,
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
  const r = await runSh(script);
  if (r.code !== 0) throw new Error(`could not delete account ${account}: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`}`);
  ctx.log.info({ account, target: target.name }, 'rdp: ephemeral account deleted');
}
