import { appendFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { z } from 'zod';

/**
 * A value that must never reach a log, a recording or an error message.
 * toString/toJSON/inspect all print "<secret>"; call reveal() where the value is really needed.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) { this.#value = value; }
  reveal(): string { return this.#value; }
  toString(): string { return '<secret>'; }
  toJSON(): string { return '<secret>'; }
  [inspect.custom](): string { return '<secret>'; }
  equals(other: string | Secret): boolean {
    const o = typeof other === 'string' ? other : other.reveal();
    if (o.length !== this.#value.length) return false;
    let diff = 0;
    for (let i = 0; i < o.length; i++) diff |= o.charCodeAt(i) ^ this.#value.charCodeAt(i);
    return diff === 0;
  }
}

/**
 * Test-only: note a secret the gateway just issued (connection secret, API token, session cookie,
 * minted password, session private key) in the secret registry the test runner keeps
 * (TOLLGATE_SECRET_REGISTRY, only with TOLLGATE_TEST=1), so the secret scan after the suite can look
 * for it in every log, recording and store file. Outside tests this does nothing. Returns the value.
 */
export function noteIssued<T extends string | Secret>(kind: string, value: T): T {
  const file = process.env['TOLLGATE_SECRET_REGISTRY'];
  if (!file || process.env['TOLLGATE_TEST'] !== '1') return value;
  const v = typeof value === 'string' ? value : value.reveal();
  // One short line per append (O_APPEND): lines from parallel test processes do not interleave.
  appendFileSync(file, JSON.stringify({ kind, value: v }) + '\n');
  return value;
}

/**
 * How configuration names a secret without holding it: `{env: NAME}`, `{file: PATH}` (relative to
 * the config file), `{value: "..."}` or `{command: [argv...]}` (its stdout, e.g. a KMS or vault
 * client). proxy/config.ts resolves one into a Secret.
 */
export const secretRefSchema = z.union([
  z.object({ env: z.string().min(1) }).strict(),
  z.object({ file: z.string().min(1) }).strict(),
  z.object({ value: z.string() }).strict(),
  z.object({ command: z.array(z.string().min(1)).min(1) }).strict(),
], { error: 'a secret reference: {env: NAME}, {file: PATH}, {value: "..."} or {command: [argv...]}' });
export type SecretRef = z.infer<typeof secretRefSchema>;

/** Whether a value found at any depth under a protocol section (e.g. credentials.admin.password) is a secret reference. */
export function isSecretRef(v: unknown): v is SecretRef {
  if (!v || typeof v !== 'object') return false;
  const keys = Object.keys(v);
  if (keys.length !== 1) return false;
  const x = (v as Record<string, unknown>)[keys[0]!];
  if (keys[0] === 'command') return Array.isArray(x) && x.length > 0 && x.every((a) => typeof a === 'string' && a.length > 0);
  return ['env', 'file', 'value'].includes(keys[0]!) && typeof x === 'string';
}

/**
 * A target admin credential kept in Tollgate's vault instead of the config (`{vault: true}`): set
 * with `tollgate credentials set <target>` or the API, sealed in the store (proxy/vault.ts).
 */
export type VaultRef = { vault: true };
export function isVaultRef(v: unknown): v is VaultRef {
  return !!v && typeof v === 'object' && Object.keys(v).length === 1 && (v as Record<string, unknown>)['vault'] === true;
}
