import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parseDocument, visit, isMap, isPair, isScalar, isSeq, type Document } from 'yaml';
import { z } from 'zod';
import { Secret, isVaultRef, secretRefSchema, type SecretRef } from '../auth/secret.js';
import type { ProtocolModule } from '../protocols/types.js';
import { targetSchema } from '../protocols/config.js';
import { directorySchema } from '../protocols/directory.js';
import { checkOwnAccountGroups } from './grant-lease-kinds.js';
import { breakGlassSchema, durationSchema, parseDuration, policySchema, reviewScheduleSchema } from '../policies/config.js';
import type { KeySource } from '../auth/keys.js';
import { clusterGatewayFields } from './cluster/config.js';
import { checkNotifications, notificationsSchema } from './notifications/config.js';
import { vaultFields } from './vault.js';
import { checkSiem, siemSchema } from './siem/config.js';

/**
 * One YAML file configures a gateway: listeners, IdP, store, targets, policies. Each folder owns
 * its part of the schema (targets: protocols/config.ts; policies, rules, hours, break-glass and
 * durations: policies/config.ts; secret references: auth/secret.ts); this file composes them.
 * Secrets may be `{env: NAME}`, `{file: PATH}` (relative to the config file), `{value: "..."}` or
 * `{command: [argv...]}` (its stdout, e.g. a KMS or vault client); they are resolved into Secret
 * objects that never print.
 */

export class ConfigError extends Error {
  constructor(readonly file: string, readonly path: string, readonly expected: string) {
    super(`${file}: ${path || '(top level)'}: ${expected}`);
    this.name = 'ConfigError';
  }
}

const duration = durationSchema;

const SIZE_UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 } as const;
const SIZE_RE = /^(\d+)\s*(B|KiB|MiB|GiB)$/;

/** A size in bytes: a number, or a string such as 64MiB, 512KiB, 1GiB. */
export function parseSize(v: number | string): number {
  if (typeof v === 'number') return v;
  const m = SIZE_RE.exec(v.trim());
  if (!m) throw new Error(`not a size: ${v}`);
  return Number(m[1]) * SIZE_UNITS[m[2] as keyof typeof SIZE_UNITS];
}

const DEFAULT_SESSION_BUFFER = 128 * 1024 * 1024;

const size = z.union([z.number().int().positive(), z.string().regex(SIZE_RE, 'a size such as 64MiB, 512KiB or a number of bytes')])
  .transform(parseSize);

const listenerSchema = z.object({
  host: z.string().default('127.0.0.1'),
  port: z.number().int().min(0).max(65535),
  /** A connection not signed in by then is closed (HTTP: a request body not received by then gets 408). Default 30s. */
  loginTimeout: duration.optional(),
  /** Unauthenticated connections at once, in total and from one source address; beyond, new ones are refused. Not on http. */
  maxStartups: z.number().int().min(1).optional(),
  maxStartupsPerSource: z.number().int().min(1).optional(),
  /** HTTP front only: terminate TLS here, with this certificate and key or (true) the gateway's own TLS material. */
  tls: z.union([z.literal(true), z.object({ cert: secretRefSchema, key: secretRefSchema }).strict()]).optional(),
}).strict();
export type ListenerConfig = z.infer<typeof listenerSchema>;

const devUserSchema = z.object({
  name: z.string().regex(/^[a-z0-9_.-]+$/),
  email: z.string().optional(),
  password: secretRefSchema,
  groups: z.array(z.string()).default([]),
  /** Base32 TOTP secret: when set, sign-in may add an authenticator code (amr: mfa, otp). */
  totp: secretRefSchema.optional(),
}).strict();

const configSchema = z.object({
  gateway: z.object({
    /** Public base URL of the HTTP front (used for OIDC redirects and printed commands). */
    publicUrl: z.string().url().optional(),
    /** Host name printed in native-client commands. */
    publicHost: z.string().optional(),
    dataDir: z.string().default('.tollgate'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    tls: z.object({ cert: secretRefSchema, key: secretRefSchema, ca: secretRefSchema.optional() }).strict().optional(),
    /** How long before a grant's end live sessions are warned. */
    expiryWarning: duration.default('60s'),
    secretTtl: duration.default('10m'),
    webSessionTtl: duration.default('12h'),
    /** Longest lifetime an API token may have (POST /api/v1/tokens, device sign-in). */
    maxTokenTtl: duration.default('30d'),
    reaperInterval: duration.default('60s'),
    /** Groups that run the SOC console: see every session, watch, kill, lock, read the audit log. */
    socGroups: z.array(z.string()).default(['soc']),
    /** Cookies get the Secure flag (set when the front is behind TLS). */
    secureCookies: z.boolean().default(false),
    /**
     * The gateway's master key (seals stored secrets, keys the audit log), kept outside the store:
     * a secret reference holding 32 bytes as base64 or hex. A {file} must be mode 0600. Default:
     * <dataDir>/gateway.key, created on first start.
     */
    key: secretRefSchema.optional(),
    /** Failed secret attempts from one source address within failureWindow before it is refused for failureCooldown. */
    maxFailures: z.number().int().min(1).default(10),
    failureWindow: duration.default('5m'),
    failureCooldown: duration.default('5m'),
    /** Device sign-ins (CLI) and SSH browser approvals waiting for a person: at most this many at once, and per source address. */
    maxPendingSignIns: z.number().int().min(1).default(100),
    maxPendingSignInsPerSource: z.number().int().min(1).default(10),
    /** HTTP apps are served at <app>.<appsDomain> (default: <app>.<gateway host>, <app>.localhost for an IP). */
    appsDomain: z.string().regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'a lower-case DNS name such as apps.example.com').optional(),
    /** When set, GET /metrics needs "Authorization: Bearer <this>". */
    metricsToken: secretRefSchema.optional(),
    /** Several nodes and worker processes: id, nodeTimeout, storeLossTimeout, drainTimeout, workers, internal, ca, recordingsDir, timerSweep. */
    ...clusterGatewayFields,
  }).strict().prefault({}),
  listeners: z.record(z.string(), listenerSchema).default({ http: { host: '127.0.0.1', port: 8080 } }),
  /** SQLite (one machine; the file defaults to <dataDir>/tollgate.db) or PostgreSQL (several gateways on one database). */
  store: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('sqlite'), path: z.string().optional() }).strict(),
    z.object({
      kind: z.literal('postgres'),
      /** postgres://user:password@host:5432/database[?sslmode=…]: a secret reference, never printed with its password. */
      url: secretRefSchema,
      /** Connections each gateway keeps to the database. */
      poolSize: z.number().int().min(2).max(200).default(10),
    }).strict(),
  ], { error: 'expected one of "sqlite", "postgres"' }).default({ kind: 'sqlite' }),
  idp: z.object({
    issuer: z.string().url().optional(),
    clientId: z.string().default('tollgate'),
    clientSecret: secretRefSchema.optional(),
    groupsClaim: z.string().default('groups'),
    scopes: z.array(z.string()).default(['openid', 'email', 'profile', 'groups']),
    /** ACR value requested for MFA step-up. */
    mfaAcr: z.string().default('mfa'),
    /** How recent an MFA must be for critical requests. */
    mfaMaxAge: duration.default('15m'),
    /** How often groups are re-checked with the IdP (refresh token or userinfo) for web sessions and API tokens. */
    revalidate: duration.default('15m'),
    /** The built-in dev IdP (oidc-provider). When present, issuer defaults to it. */
    dev: z.object({
      host: z.string().default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(0),
      users: z.array(devUserSchema).default([]),
    }).strict().optional(),
  }).strict().prefault({}),
  /** recordings.dir: the older name of gateway.recordingsDir (either may be set, not both). */
  recordings: z.object({
    dir: z.string().optional(),
    /**
     * When a recording cannot be written (disk full, directory gone, I/O error): refuse (default) new
     * sessions and end the session whose recording failed; terminate: also end every other live
     * session at once; continue: let sessions run unrecorded (audited and alerted all the same).
     */
    onFailure: z.enum(['refuse', 'terminate', 'continue']).default('refuse'),
  }).strict().default({ onFailure: 'refuse' }),
  targets: z.array(targetSchema).default([]),
  /** The directory (Active Directory / Samba AD, or OpenLDAP) where directory-account and directory-group leases live. */
  directory: directorySchema.optional(),
  policies: z.array(policySchema).default([]),
  breakGlass: breakGlassSchema.prefault({}),
  /** Access review schedules (recertification) per policy. */
  reviews: z.array(reviewScheduleSchema).default([]),
  audit: z.object({
    /** How often a signed checkpoint of the audit head is written (only when there are new events); one more on shutdown. */
    checkpointInterval: duration.default('60s'),
    checkpoints: z.object({
      /** Append-only file of checkpoint lines (default <dataDir>/audit-checkpoints.log; false: none). */
      file: z.union([z.string().min(1), z.literal(false)]).optional(),
      /** Command (argv) run with each checkpoint line on stdin, e.g. [logger, -n, syslog.example.com, -t, tollgate-audit]. */
      command: z.array(z.string().min(1)).min(1).optional(),
    }).strict().prefault({}),
  }).strict().prefault({}),
  /** Notification hook for `alert` rules and break-glass (argv; event JSON on stdin). */
  notify: z.object({ command: z.array(z.string()).optional() }).strict().default({}),
  /**
   * The credential vault (proxy/vault.ts): admin credentials configured as {vault: true} rotate
   * every `rotate` (a target's own credentials.rotate wins; false turns it off there). A failed
   * rotation is retried after `retry`, doubling up to `retryMax`.
   */
  credentials: z.object({
    rotate: duration.optional(),
    retry: duration.default('5m'),
    retryMax: duration.default('6h'),
  }).strict().prefault({}),
  /** Webhooks and email for the workflow's events, with retries (proxy/notifications/config.ts). */
  notifications: notificationsSchema,
  /** The audit stream pushed to syslog (RFC 5424 over TLS) and webhooks (proxy/siem/config.ts). */
  siem: siemSchema,
  /** Per-session budgets: a session that exceeds one ends with reason resource_limit. */
  limits: z.object({
    /**
     * Bytes one session's inspectors may hold at once: partial messages (PostgreSQL, MySQL), out-of-order
     * SFTP data, request tracking. The default fits a 64 MiB message each way (the client-message limit).
     */
    sessionBufferBytes: size.default(DEFAULT_SESSION_BUFFER),
  }).strict().default({ sessionBufferBytes: DEFAULT_SESSION_BUFFER }),
}).strict();

export type RawConfig = z.infer<typeof configSchema>;

export interface GatewayConfig extends RawConfig {
  /** Absolute path of the file this came from ('<inline>' when built in code). */
  file: string;
  baseDir: string;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type') return `expected ${issue.expected}`;
  if (issue.code === 'unrecognized_keys') return `unknown key(s) ${issue.keys.map((k) => (/^[\w.-]+$/.test(k) ? k : JSON.stringify(k))).join(', ')}`;
  if (issue.code === 'invalid_value') return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  return issue.message;
}

export function formatPath(path: PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

/** Validate a parsed document. Protocol modules validate their own target sections. */
export function validateConfig(raw: unknown, file: string, modules: ReadonlyMap<string, ProtocolModule>): GatewayConfig {
  const parsed = configSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(file, formatPath(issue.path), describeIssue(issue));
  }
  const cfg = parsed.data;
  for (const key of ['maxStartups', 'maxStartupsPerSource'] as const) {
    // uWebSockets.js accepts HTTP connections without telling the gateway: there is nothing to count.
    if (cfg.listeners['http']?.[key] !== undefined) throw new ConfigError(file, `listeners.http.${key}`, 'not set: the http listener bounds request bodies and their time (loginTimeout), not connections');
  }
  for (const [name, l] of Object.entries(cfg.listeners)) {
    if (l.tls !== undefined && name !== 'http') throw new ConfigError(file, `listeners.${name}.tls`, 'nothing: only the http listener terminates TLS this way (protocol listeners use gateway.tls)');
  }
  if (cfg.gateway.recordingsDir !== undefined && cfg.recordings.dir !== undefined) {
    throw new ConfigError(file, 'recordings.dir', 'not set together with gateway.recordingsDir (its newer name)');
  }
  const section = checkNotifications(cfg.notifications) ?? checkSiem(cfg.siem);
  if (section) throw new ConfigError(file, section.path, section.expected);
  const names = new Set<string>();
  cfg.targets.forEach((t, i) => {
    if (names.has(t.name)) throw new ConfigError(file, `targets[${i}].name`, `a unique target name ("${t.name}" is used twice)`);
    names.add(t.name);
    const mod = modules.get(t.protocol);
    if (!mod) throw new ConfigError(file, `targets[${i}].protocol`, `one of ${[...modules.keys()].join(', ')}`);
    const roleNames = new Set<string>();
    t.roles.forEach((r, j) => {
      if (roleNames.has(r.name)) throw new ConfigError(file, `targets[${i}].roles[${j}].name`, `a unique role name`);
      roleNames.add(r.name);
    });
    let v: { path: string; expected: string } | null | undefined;
    try {
      v = mod.validateTarget?.(t);
    } catch (e) {
      // A module's validator tripped over a value of an unexpected type: still a config error, never a stack trace.
      throw new ConfigError(file, `targets[${i}]`, `a valid ${t.protocol} target (${(e as Error)?.message ?? 'invalid value'})`);
    }
    if (v) throw new ConfigError(file, `targets[${i}].${v.path}`, v.expected);
    t.roles.forEach((r, j) => {
      const bad = checkOwnAccountGroups(r, !!cfg.directory);
      if (bad) throw new ConfigError(file, `targets[${i}].roles[${j}].ownAccountGroups`, bad);
    });
    if ((t.credentials as { mode?: unknown }).mode === 'directory-account' && !cfg.directory) {
      throw new ConfigError(file, `targets[${i}].credentials.mode`, 'a `directory` section for directory-account credentials (the directory to mint accounts in)');
    }
    const rotate = (t.credentials as { rotate?: unknown }).rotate;
    if (rotate !== undefined) {
      if (rotate !== false && !durationSchema.safeParse(rotate).success) throw new ConfigError(file, `targets[${i}].credentials.rotate`, 'a duration such as 24h, or false (no scheduled rotation)');
      if (rotate !== false && !vaultFields(t).some((f) => mod.adminRotation?.fields.includes(f))) {
        throw new ConfigError(file, `targets[${i}].credentials.rotate`, mod.adminRotation
          ? `a credential kept in the vault to rotate: set ${mod.adminRotation.fields.join(' or ')} to {vault: true}`
          : `no rotate: ${t.protocol} targets cannot rotate their admin credential`);
      }
      if (rotate !== false && parseDuration(rotate as string | number) < 60_000) throw new ConfigError(file, `targets[${i}].credentials.rotate`, 'a duration of at least 1m');
    }
    if (t.options['mfaAtConnect'] !== undefined && typeof t.options['mfaAtConnect'] !== 'boolean') {
      throw new ConfigError(file, `targets[${i}].options.mfaAtConnect`, 'true or false');
    }
  });
  if (cfg.credentials.rotate !== undefined && parseDuration(cfg.credentials.rotate) < 60_000) throw new ConfigError(file, 'credentials.rotate', 'a duration of at least 1m');
  const bindRotate = cfg.directory?.bind.rotate;
  if (bindRotate !== undefined && bindRotate !== false) {
    if (!isVaultRef(cfg.directory!.bind.password)) throw new ConfigError(file, 'directory.bind.rotate', 'directory.bind.password: {vault: true} (only a bind password kept in the vault rotates)');
    if (parseDuration(bindRotate) < 60_000) throw new ConfigError(file, 'directory.bind.rotate', 'a duration of at least 1m');
  }
  const reviewed = new Set<string>();
  cfg.reviews.forEach((r, i) => {
    if (!cfg.policies.some((p) => p.name === r.policy)) {
      throw new ConfigError(file, `reviews[${i}].policy`, `the name of a policy (one of ${cfg.policies.map((p) => JSON.stringify(p.name)).join(', ') || 'none configured'})`);
    }
    if (reviewed.has(r.policy)) throw new ConfigError(file, `reviews[${i}].policy`, `one schedule per policy ("${r.policy}" has two)`);
    reviewed.add(r.policy);
    if (parseDuration(r.every) < 3_600_000) throw new ConfigError(file, `reviews[${i}].every`, 'a duration of at least 1h (such as 90d)');
    if (parseDuration(r.dueIn) <= 0) throw new ConfigError(file, `reviews[${i}].dueIn`, 'a duration of more than zero');
  });
  const baseDir = file === '<inline>' ? process.cwd() : dirname(resolve(file));
  return { ...cfg, file, baseDir };
}

export function loadConfigFile(file: string, modules: ReadonlyMap<string, ProtocolModule>): GatewayConfig {
  const abs = resolve(file);
  if (!existsSync(abs)) throw new ConfigError(abs, '', 'the file to exist');
  return parseConfigText(readFileSync(abs, 'utf8'), abs, modules);
}

/** Parse and validate YAML text as if read from `abs` (relative paths resolve against its directory). */
export function parseConfigText(text: string, abs: string, modules: ReadonlyMap<string, ProtocolModule>): GatewayConfig {
  const doc = parseDocument(text);
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    throw new ConfigError(abs, `line ${e.linePos?.[0]?.line ?? '?'}`, `valid YAML (${e.message.split('\n')[0]})`);
  }
  return validateConfig(documentValue(doc, abs), abs, modules);
}

/** The document as plain data; aliases that resolve to nothing, blow up or contain themselves are config errors. */
function documentValue(doc: Document, file: string): unknown {
  let unresolved: { path: string; source: string } | null = null;
  visit(doc, {
    Alias(_key, node, ancestors) {
      if (node.resolve(doc)) return undefined;
      unresolved = { path: yamlPath(ancestors, node), source: node.source };
      return visit.BREAK;
    },
  });
  const u = unresolved as { path: string; source: string } | null;
  if (u) throw new ConfigError(file, u.path, `an alias to an anchor defined before it (*${u.source} has no &${u.source} earlier in the file)`);
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (e) {
    throw new ConfigError(file, '', `valid YAML (${String((e as Error)?.message ?? e).split('\n')[0]})`);
  }
  const cycle = cyclePath(value);
  if (cycle !== null) throw new ConfigError(file, cycle, 'a value that does not contain itself (an alias inside its own anchor)');
  return value;
}

/** The key path of a node from the ancestors yaml's visit() reports. */
function yamlPath(ancestors: readonly unknown[], node: unknown): string {
  const path: PropertyKey[] = [];
  for (let i = 0; i < ancestors.length; i++) {
    const a = ancestors[i];
    const next = ancestors[i + 1] ?? node;
    if (isSeq(a)) path.push(a.items.indexOf(next as never));
    else if (isPair(a) && a.value === next) path.push(isScalar(a.key) ? String(a.key.value) : '?');
    else if (isMap(a) || isPair(a)) continue;
  }
  return formatPath(path);
}

/** The key path of the first value that contains itself, or null. Iterative and linear in the values (shared ones are walked once). */
function cyclePath(root: unknown): string | null {
  interface Frame { v: object; key: PropertyKey; entries: [PropertyKey, unknown][]; next: number }
  const onPath = new Set<object>();
  const done = new Set<object>();
  const stack: Frame[] = [];
  const enter = (v: unknown, key: PropertyKey): string | null => {
    if (!v || typeof v !== 'object' || done.has(v)) return null;
    if (onPath.has(v)) return formatPath([...stack.slice(1).map((f) => f.key), key]);
    onPath.add(v);
    const entries: [PropertyKey, unknown][] = Array.isArray(v) ? v.map((x, i) => [i, x]) : v instanceof Map ? [...v.entries()] : Object.entries(v);
    stack.push({ v, key, entries, next: 0 });
    return null;
  };
  let hit = enter(root, '');
  while (hit === null && stack.length) {
    const top = stack[stack.length - 1]!;
    if (top.next < top.entries.length) {
      const [k, x] = top.entries[top.next++]!;
      hit = enter(x, k);
    } else {
      stack.pop();
      onPath.delete(top.v);
      done.add(top.v);
    }
  }
  return hit;
}

/** Resolve a secret reference. Errors name the key path but never the value. */
export function resolveSecret(ref: SecretRef | undefined, cfg: Pick<GatewayConfig, 'file' | 'baseDir'>, path: string): Secret {
  if (!ref) throw new ConfigError(cfg.file, path, 'a secret reference');
  if ('vault' in (ref as object)) throw new ConfigError(cfg.file, path, 'a secret reference from the config here ({vault: true} is for target admin credentials the gateway reads from its vault)');
  if ('value' in ref) return new Secret(ref.value);
  if ('env' in ref) {
    const v = process.env[ref.env];
    if (v === undefined) throw new ConfigError(cfg.file, path, `environment variable ${ref.env} to be set`);
    return new Secret(v);
  }
  if ('command' in ref) return new Secret(runSecretCommand(ref.command, cfg, path));
  const p = resolve(cfg.baseDir, ref.file);
  if (!existsSync(p)) throw new ConfigError(cfg.file, path, `file ${p} to exist`);
  return new Secret(readFileSync(p, 'utf8').replace(/\r?\n$/, ''));
}

/**
 * A `{command: [...]}` secret: the command's stdout (one trailing newline dropped). It runs in the
 * config file's directory, synchronously (resolved at start-up), at most 30 s. Errors say how it
 * failed (exit code, last stderr line) but never print its output.
 */
function runSecretCommand(argv: string[], cfg: Pick<GatewayConfig, 'file' | 'baseDir'>, path: string): string {
  try {
    return execFileSync(argv[0]!, argv.slice(1), { cwd: cfg.baseDir, encoding: 'utf8', timeout: 30_000, maxBuffer: 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] })
      .replace(/\r?\n$/, '');
  } catch (e) {
    const err = e as { status?: number | null; signal?: string | null; code?: string; stderr?: string };
    const why = err.code === 'ENOENT' ? 'not found' : err.signal ? `killed by ${err.signal}` : `exit code ${err.status}`;
    const last = String(err.stderr ?? '').trim().split('\n').pop()?.slice(0, 200);
    throw new ConfigError(cfg.file, path, `the command ${argv[0]} to print the secret (${why}${last ? `: ${last}` : ''})`);
  }
}

/** The data directory of a config (relative paths are relative to the config file). */
export function dataDirOf(cfg: Pick<GatewayConfig, 'gateway' | 'baseDir'>): string {
  const d = cfg.gateway.dataDir;
  return isAbsolute(d) ? d : resolve(cfg.baseDir, d);
}

/** Where the gateway key comes from: `gateway.key`, or the default key file in the data directory. */
export function gatewayKeySource(cfg: GatewayConfig, dataDir: string): KeySource {
  const ref = cfg.gateway.key;
  if (!ref) return { kind: 'file', path: join(dataDir, 'gateway.key'), configured: false };
  if ('file' in ref) return { kind: 'file', path: resolve(cfg.baseDir, ref.file), configured: true };
  return { kind: 'secret', secret: resolveSecret(ref, cfg, 'gateway.key'), from: `gateway.key (${Object.keys(ref)[0]})` };
}

/** Where recordings are written: gateway.recordingsDir (or its older name recordings.dir), else <dataDir>/recordings. */
export function recordingsDirOf(cfg: GatewayConfig, dataDir: string): string {
  const d = cfg.gateway.recordingsDir ?? cfg.recordings.dir;
  return d ? resolve(cfg.baseDir, d) : join(dataDir, 'recordings');
}

/** The checkpoint file of the audit log (null when turned off). */
export function checkpointFileOf(cfg: GatewayConfig, dataDir: string): string | null {
  const f = cfg.audit.checkpoints.file;
  return f === false ? null : f ? resolve(cfg.baseDir, f) : join(dataDir, 'audit-checkpoints.log');
}
