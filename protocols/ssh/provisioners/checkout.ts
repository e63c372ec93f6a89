/**
 * 'checkout': log in with a stored account's password and rotate it on the target (chpasswd over
 * the admin connection) when the session or the grant ends. The current password is kept sealed
 * with the gateway key (no expiry) in a 0600 file under dataDir/ssh/checkout, never plain, never logged.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Secret, noteIssued } from '../../../auth/secret.js';
import { chpasswdScript, runScript, sessionHostKey } from '../admin.js';
import { NAME_RE } from '../config.js';
import type { Provisioner, UpstreamCredential } from './types.js';
import type { ProtocolContext, TargetConfig } from '../../types.js';
import { syncPaths, writeFileDurable } from '../../../auth/durable.js';

export const KIND = 'checkout-password';

function file(ctx: ProtocolContext, target: TargetConfig, account: string): string {
  const dir = join(ctx.config.dataDir, 'ssh', 'checkout');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return join(dir, `${target.name}--${account}`);
}

/** Write the password sealed (atomically through a temp file, mode 0600), synced: it may be the only copy of a rotated password. */
function store(ctx: ProtocolContext, path: string, pw: Secret): void {
  writeFileDurable(path, ctx.crypto.seal({ p: pw.reveal() }, Infinity), { mode: 0o600 });
}

export function currentPassword(ctx: ProtocolContext, target: TargetConfig, account: string): Secret {
  const f = file(ctx, target, account);
  if (!existsSync(f)) return ctx.config.resolveSecret(target.credentials.password, `targets.${target.name}.credentials.password`);
  const body = readFileSync(f, 'utf8');
  if (!body.startsWith('v1.')) {
    // Written plain by an older version: seal it now.
    const pw = new Secret(body);
    store(ctx, f, pw);
    return pw;
  }
  const v = ctx.crypto.unseal<{ p: string }>(body);
  if (!v || typeof v.p !== 'string') throw new Error(`the checked-out password of ${account} on ${target.name} cannot be unsealed (sealed with another gateway key?)`);
  return new Secret(v.p);
}

const chains = new Map<string, Promise<void>>();

/** Set a new random password on the target, then remember it. Serialised per account. */
export function rotate(ctx: ProtocolContext, target: TargetConfig, account: string): Promise<void> {
  if (!NAME_RE.test(account)) return Promise.reject(new Error('bad account name'));
  const key = `${target.name}/${account}`;
  const next = (chains.get(key) ?? Promise.resolve()).catch(() => undefined).then(async () => {
    const f = file(ctx, target, account);
    const pw = noteIssued('ssh_checkout_password', new Secret(randomBytes(18).toString('base64url')));
    store(ctx, `${f}.next`, pw);
    const r = await runScript(ctx, target, chpasswdScript(account, pw));
    if (r.code !== 0) {
      rmSync(`${f}.next`, { force: true });
      throw new Error(`could not rotate the password of ${account} on ${target.name}: ${r.stderr.trim().split('\n').pop() ?? 'exit ' + r.code}`);
    }
    renameSync(`${f}.next`, f);
    syncPaths([dirname(f)]);
    ctx.log.info({ target: target.name, account }, 'ssh: checked-out password rotated');
  });
  chains.set(key, next);
  return next;
}

/** The current password once any rotation under way has finished (the holder's reveal). */
export async function revealPassword(ctx: ProtocolContext, target: TargetConfig, account: string): Promise<Secret> {
  if (!NAME_RE.test(account)) throw new Error('bad account name');
  await (chains.get(`${target.name}/${account}`) ?? Promise.resolve()).catch(() => undefined);
  return currentPassword(ctx, target, account);
}

export const checkoutProvisioner: Provisioner = {
  kind: KIND,
  holds: 'a checked-out account password (rotated afterwards)',
  async mint(ctx, session, target) {
    const account = String(target.credentials.account);
    if (!NAME_RE.test(account)) throw new Error('credentials.account is not a valid user name');
    const hostKey = await sessionHostKey(ctx, target);
    return session.lease<UpstreamCredential>(KIND, { mode: 'checkout', account }, async () => {
      await (chains.get(`${target.name}/${account}`) ?? Promise.resolve()).catch(() => undefined);
      return { credential: { username: account, password: currentPassword(ctx, target, account), hostKey } };
    });
  },
  async revoke(ctx, target, lease) {
    const account = lease.data.account;
    if (typeof account !== 'string' || !NAME_RE.test(account)) throw new Error(`lease ${lease.id}: no account`);
    await rotate(ctx, target, account);
    return { revoked: true, detail: `the password of ${account} was rotated` };
  },
};

