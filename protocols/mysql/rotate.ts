/**
 * Rotation of the MySQL/MariaDB admin password kept in the vault (proxy/vault-rotation.ts runs it):
 * the admin logs in with its current password (over TLS when the target has options.tls) and sets
 * the new one on its own account, named as the server matched it (ALTER USER 'user'@'host': both
 * servers keep it out of their logs in clear; MariaDB 10.11 writes `ALTER USER CURRENT_USER()` to
 * its tables but keeps authenticating with the old password, so the account is named explicitly);
 * verification is a fresh login with it.
 */
import { randomBytes } from 'node:crypto';
import { Secret, noteIssued } from '../../auth/secret.js';
import type { AdminRotation } from '../types.js';
import { account, adminConnect, quoteLiteral } from './provisioner.js';

export const mysqlAdminRotation: AdminRotation = {
  fields: ['admin.password'],
  generate: () => new Secret(noteIssued('admin_password_rotated', randomBytes(24).toString('base64url'))),
  async set(ctx, target, _field, current, next) {
    const c = await adminConnect(ctx, target, current);
    try {
      const [rows] = await c.query('SELECT CURRENT_USER() AS u');
      const me = String((rows as { u?: unknown }[])[0]?.u ?? '');
      const at = me.lastIndexOf('@');
      if (at <= 0) throw new Error(`the server did not say which account the admin is (${me.slice(0, 100)})`);
      await c.query(`ALTER USER ${account(me.slice(0, at), me.slice(at + 1))} IDENTIFIED BY ${quoteLiteral(next.reveal())}`);
    } finally {
      await c.end().catch(() => c.destroy());
    }
  },
  async verify(ctx, target, _field, credential) {
    const c = await adminConnect(ctx, target, credential);
    try {
      await c.query('SELECT 1');
    } finally {
      await c.end().catch(() => c.destroy());
    }
  },
};
