/**
 * Rotation of the MySQL/MariaDB admin password kept in the vault (proxy/vault-rotation.ts runs it):
 * the admin logs in with its current password (over TLS when the target has options.tls) and sets
 * the new one on its own account (ALTER USER CURRENT_USER(), which both servers keep out of their
 * logs in clear); verification is a fresh login with it.
 */
import { randomBytes } from 'node:crypto';
import { Secret } from '../../auth/secret.js';
import type { AdminRotation } from '../types.js';
import { adminConnect, quoteLiteral } from './provisioner.js';

export const mysqlAdminRotation: AdminRotation = {
  fields: ['admin.password'],
  generate: () => new Secret(randomBytes(24).toString('base64url')),
  async set(ctx, target, _field, current, next) {
    const c = await adminConnect(ctx, target, current);
    try {
      await c.query(`ALTER USER CURRENT_USER() IDENTIFIED BY ${quoteLiteral(next.reveal())}`);
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
