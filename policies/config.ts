import { z } from 'zod';

/**
 * The configuration policies/ owns: durations, risk levels, working hours, command rules, policies
 * and break-glass. proxy/config.ts composes these schemas into the gateway's one YAML file; the
 * engine only sees the parsed values and the small views of targets and callers below.
 */

/** A duration as configuration writes it: a number of seconds, or "90s", "30m", "8h", "1d", "250ms". */
export const durationSchema = z.union([z.number().nonnegative(), z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/, 'a duration such as 90s, 30m, 8h or 1d')]);

/** Milliseconds of a duration (numbers are seconds). Throws on anything durationSchema refuses. */
export function parseDuration(v: number | string): number {
  if (typeof v === 'number') return v * 1000;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(v.trim());
  if (!m) throw new Error(`not a duration: ${v}`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(n * unit);
}

export const riskLevels = ['low', 'medium', 'high', 'critical'] as const;
export type Risk = (typeof riskLevels)[number];

export const hoursSchema = z.object({
  days: z.array(z.enum(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])).default(['mon', 'tue', 'wed', 'thu', 'fri']),
  from: z.string().regex(/^\d\d:\d\d$/, 'HH:MM'),
  to: z.string().regex(/^\d\d:\d\d$/, 'HH:MM'),
  /** IANA time zone name. */
  tz: z.string().default('UTC'),
}).strict();
export type HoursConfig = z.infer<typeof hoursSchema>;

const stageSchema = z.object({ groups: z.array(z.string()).min(1), count: z.number().int().min(1).default(1) }).strict();

export const commandRuleSchema = z.object({
  /** Regular expression matched against a command line or statement text (raw and normalized, see policies/rules.ts). */
  pattern: z.string().optional(),
  /** SSH: command names (basenames) matched exactly against the commands the shell runs, e.g. [shutdown, reboot]. */
  commands: z.array(z.string()).optional(),
  /** Statement kinds (first keywords), e.g. DROP, TRUNCATE, "ALTER SYSTEM", "COPY PROGRAM". */
  kinds: z.array(z.string()).optional(),
  /** HTTP only: methods and a path glob. */
  methods: z.array(z.string()).optional(),
  path: z.string().optional(),
  /** HTTP only: match the path case-sensitively (default: case-insensitive). */
  caseSensitive: z.boolean().optional(),
  action: z.enum(['deny', 'kill', 'alert']),
  message: z.string().optional(),
  roles: z.array(z.string()).optional(),
}).strict();
export type CommandRuleConfig = z.infer<typeof commandRuleSchema>;

export const policySchema = z.object({
  name: z.string(),
  /** Glob patterns over target names and roles. */
  targets: z.array(z.string()).default(['*']),
  roles: z.array(z.string()).default(['*']),
  /** Groups that may request access (eligibility). */
  requesters: z.array(z.string()).default([]),
  /** Approver groups for medium/high risk (and the default stages for critical). */
  approvers: z.array(z.string()).default([]),
  /** Explicit stages; overrides the plan derived from risk. */
  stages: z.array(stageSchema).optional(),
  /** Force an approval mode instead of the one derived from risk. */
  approval: z.enum(['auto', 'one', 'two', 'stages']).optional(),
  mfa: z.boolean().optional(),
  maxDuration: durationSchema.optional(),
  hours: hoursSchema.optional(),
  approvalTimeout: durationSchema.optional(),
  onTimeout: z.enum(['escalate', 'deny']).default('deny'),
  escalateTo: z.array(z.string()).default([]),
  rules: z.array(commandRuleSchema).default([]),
  /** Strict rules: a line or statement the gateway cannot read is treated like a match of the strictest rule that could apply. */
  strictRules: z.boolean().optional(),
}).strict();
export type PolicyConfig = z.infer<typeof policySchema>;

export const breakGlassSchema = z.object({
  groups: z.array(z.string()).default([]),
  maxDuration: durationSchema.default('1h'),
  /** Groups (besides gateway.socGroups) whose members close break-glass reviews; never a member of `groups`. */
  reviewers: z.array(z.string()).default(['security']),
  /** Command run (argv) with the alert JSON on stdin; alerts are always audit events too. */
  alertCommand: z.array(z.string()).optional(),
}).strict();
export type BreakGlassConfig = z.infer<typeof breakGlassSchema>;

/** What policies need to know about a target (protocols/config.ts TargetConfig is one). */
export interface PolicyTarget {
  name: string;
  risk: Risk;
  roles: { name: string }[];
}

/** Who asks, approves or reviews, as policies see them (auth/types.ts Principal is one). */
export interface Actor {
  sub: string;
  groups: string[];
  /** When this sign-in last proved MFA (epoch ms), null when it did not. */
  mfaAt: number | null;
  /** 'system' for the gateway itself. */
  via: string;
}
