import { z } from 'zod';
import { secretRefSchema } from '../../auth/secret.js';
import { durationSchema } from '../../policies/config.js';
import { TOPICS } from './events.js';

/**
 * The `notifications:` section: webhooks (signed JSON or Slack-compatible messages) and email over
 * SMTP, for the topics of events.ts, with retries. proxy/config.ts composes it; checks the schema
 * cannot express are in checkNotifications.
 */

/** A name shown on the dashboard and stored with each delivery (never the URL: it may be a secret). */
export const channelName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'a name of letters, digits, ".", "_" or "-" (at most 64)');

/** An http(s) URL, or a secret reference holding one (a Slack incoming-webhook URL is a secret). */
export const webhookUrl = z.union([
  z.string().regex(/^https?:\/\/[^\s]+$/, 'an http:// or https:// URL'),
  secretRefSchema,
], { error: 'an http:// or https:// URL, or a secret reference holding one' });

const topics = z.array(z.enum(['*', ...TOPICS])).min(1).default(['*']);

export const notificationWebhookSchema = z.object({
  name: channelName,
  url: webhookUrl,
  /** json: the event as signed JSON; slack: a Slack-compatible message ({text, blocks}) for an incoming webhook. */
  format: z.enum(['json', 'slack']).default('json'),
  /** The HMAC-SHA-256 key of the X-Tollgate-Signature header (required for json). */
  secret: secretRefSchema.optional(),
  events: topics,
  /** PEM of the CA that signs the receiver's certificate (default: the system's CAs). */
  ca: secretRefSchema.optional(),
  timeout: durationSchema.default('10s'),
}).strict();
export type NotificationWebhookConfig = z.infer<typeof notificationWebhookSchema>;

export const smtpSchema = z.object({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(587),
  /** starttls: upgrade and require TLS (default); implicit: TLS from the start (port 465); none: clear text, only without a password. */
  tls: z.enum(['starttls', 'implicit', 'none']).default('starttls'),
  user: z.string().min(1).optional(),
  password: secretRefSchema.optional(),
  /** PEM of the CA that signs the server's certificate (default: the system's CAs). */
  ca: secretRefSchema.optional(),
  /** The name its certificate must carry (default: host). */
  servername: z.string().min(1).optional(),
  timeout: durationSchema.default('30s'),
}).strict();

export const notificationsSchema = z.object({
  webhooks: z.array(notificationWebhookSchema).default([]),
  email: z.object({
    /** The From header, e.g. "Tollgate <tollgate@example.com>". */
    from: z.string().regex(/^[^\r\n]*@[^\r\n]*$/, 'an address such as "Tollgate <tollgate@example.com>"'),
    smtp: smtpSchema,
    events: topics,
  }).strict().optional(),
  retry: z.object({
    /** Attempts per delivery before it is marked failed (the dashboard shows it; the SOC may retry it). */
    attempts: z.number().int().min(1).max(100).default(10),
    /** Delay after the first failure, doubled after each further one, at most maxDelay. */
    initialDelay: durationSchema.default('30s'),
    maxDelay: durationSchema.default('1h'),
  }).strict().prefault({}),
  /** Tell a grant's holder this long before it ends (false: never). Grants no longer than this are not announced. */
  grantExpiry: z.union([durationSchema, z.literal(false)]).default('10m'),
  /** Delivered notifications are kept this long (the dashboard's history), then deleted. */
  keepDelivered: durationSchema.default('7d'),
}).strict().prefault({});
export type NotificationsConfig = z.infer<typeof notificationsSchema>;

/** What the schema cannot say: unique names, a key for signed JSON, no SMTP password in clear text. */
export function checkNotifications(n: NotificationsConfig): { path: string; expected: string } | null {
  const seen = new Set<string>();
  for (const [i, w] of n.webhooks.entries()) {
    if (seen.has(w.name)) return { path: `notifications.webhooks[${i}].name`, expected: `a unique name ("${w.name}" is used twice)` };
    seen.add(w.name);
    if (w.format === 'json' && !w.secret) return { path: `notifications.webhooks[${i}].secret`, expected: 'a secret reference: the HMAC key that signs each JSON delivery (X-Tollgate-Signature)' };
  }
  const smtp = n.email?.smtp;
  if (smtp?.password && !smtp.user) return { path: 'notifications.email.smtp.user', expected: 'the user name the password belongs to' };
  if (smtp?.password && smtp.tls === 'none') return { path: 'notifications.email.smtp.tls', expected: 'starttls or implicit when a password is set (never sent in clear text)' };
  return null;
}
