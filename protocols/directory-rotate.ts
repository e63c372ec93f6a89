/**
 * Rotation of the directory's bind password (`directory.bind.password: {vault: true}`), run by
 * proxy/vault-rotation.ts like a target's admin password. The vault keys credentials by target and
 * field; the top-level bind account is given to it as a pseudo-target, `@directory` (a name no
 * target can have), with the one field `bind.password`, rotated every `directory.bind.rotate`
 * (default: the top-level credentials.rotate). Its rotation is a pseudo-module `directory` that only
 * the vault sees (it has no listener, no leases, no targets of its own).
 *
 * - set: bind as the account with the current password and change its own password — AD: replace
 *   unicodePwd over LDAPS (needs the reset right; else the delete-old/add-new change any account may
 *   make), OpenLDAP: the Password Modify extended operation;
 * - verify: a fresh bind with the credential. Only then does the vault make it current.
 */
import { Secret, isVaultRef, noteIssued } from '../auth/secret.js';
import type { TargetConfig } from './config.js';
import type { AdminRotation, ProtocolModule } from './types.js';
import { randomPassword, type Directory, type DirectoryConfig } from './directory.js';

export const DIRECTORY_VAULT_TARGET = '@directory';
export const DIRECTORY_VAULT_FIELD = 'bind.password';
export const DIRECTORY_PROTOCOL = 'directory';

/** The vault's pseudo-target for the bind account; null when its password is not kept in the vault. */
export function directoryVaultTarget(c: DirectoryConfig | undefined): TargetConfig | null {
  if (!c || !isVaultRef(c.bind.password)) return null;
  return {
    name: DIRECTORY_VAULT_TARGET, protocol: DIRECTORY_PROTOCOL, address: c.url, risk: 'high', roles: [{ name: 'bind' }], options: {},
    credentials: { bind: { password: { vault: true } }, ...(c.bind.rotate !== undefined ? { rotate: c.bind.rotate } : {}) },
  };
}

function directoryOf(dir: () => Directory | null): Directory {
  const d = dir();
  if (!d) throw new Error('no directory is configured (the `directory` section)');
  return d;
}

export function directoryBindRotation(dir: () => Directory | null): AdminRotation {
  return {
    fields: [DIRECTORY_VAULT_FIELD],
    generate: () => noteIssued('directory_bind_password_rotated', new Secret(randomPassword())),
    async set(_ctx, _target, _field, current, next) {
      const d = directoryOf(dir);
      const bindName = d.config.bind.dn;
      await d.with(async (c) => c.setPassword(await c.bindDn(bindName), next, current), { dn: bindName, password: current });
    },
    async verify(_ctx, _target, _field, credential) {
      const d = directoryOf(dir);
      await d.with(async () => undefined, { dn: d.config.bind.dn, password: credential });
    },
  };
}

/** The pseudo-module the vault's rotation finds the bind account's rotation in. */
export function directoryVaultModule(dir: () => Directory | null): ProtocolModule {
  return { name: DIRECTORY_PROTOCOL, defaultPort: 636, leaseKinds: {}, adminRotation: directoryBindRotation(dir) };
}
