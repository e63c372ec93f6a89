/**
 * Rotation of the PostgreSQL admin password kept in the vault (proxy/vault-rotation.ts runs it):
 * the admin logs in with its current password and sets the new one as a SCRAM verifier (the
 * cleartext never reaches the server or its logs); verification is a fresh login with it.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { Secret, noteIssued } from '../../auth/secret.js';
import type { AdminRotation } from '../types.js';
import { credentialsOf } from './config.js';
import { adminClient } from './provisioner.js';
import { makeVerifierAsync } from './scram.js';

export const postgresAdminRotation: AdminRotation = {
  fields: ['admin.password'],
  generate: () => new Secret(noteIssued('admin_password_rotated', randomBytes(24).toString('base64url'))),
  async set(ctx, target, _field, current, next) {
    const v = (await makeVerifierAsync(next.reveal(), randomBytes(16))).split(':');
    const stored = `SCRAM-SHA-256$${v[0]}:${v[1]}$${v[2]}:${v[3]}`;
    const c = await adminClient(ctx, target, undefined, current);
    try {
      await c.query(`ALTER ROLE ${pg.escapeIdentifier(credentialsOf(target).admin.user)} PASSWORD ${pg.escapeLiteral(stored)}`);
    } finally {
      await c.end().catch(() => {});
    }
  },
  async verify(ctx, target, _field, credential) {
    const c = await adminClient(ctx, target, undefined, credential);
    try {
      await c.query('SELECT 1');
    } finally {
      await c.end().catch(() => {});
    }
  },
};
