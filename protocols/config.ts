import { z } from 'zod';
import { riskLevels } from '../policies/config.js';

/**
 * The configuration of a target and its roles, as every protocol module receives it. The parts
 * that differ per protocol (credentials, options, extra role keys) are validated by the module
 * (ProtocolModule.validateTarget); proxy/config.ts composes this schema into the gateway's YAML.
 */

export const roleSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'a role name of letters, digits, _ . -'),
  description: z.string().optional(),
}).catchall(z.unknown());
export type RoleConfig = z.infer<typeof roleSchema> & Record<string, unknown>;

export const targetSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a target name of letters, digits, _ . - (used as a login name)'),
  protocol: z.string(),
  address: z.string().min(1),
  risk: z.enum(riskLevels).default('medium'),
  description: z.string().optional(),
  roles: z.array(roleSchema).min(1, 'at least one role'),
  /** How credentials are minted: { mode: ..., admin: {...}, ... } - validated by the protocol module. */
  credentials: z.record(z.string(), z.unknown()).default({}),
  /** Protocol-specific options - validated by the protocol module. */
  options: z.record(z.string(), z.unknown()).default({}),
}).strict();
export type TargetConfig = z.infer<typeof targetSchema>;
