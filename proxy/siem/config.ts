import { z } from 'zod';
import { secretRefSchema } from '../../auth/secret.js';
import { durationSchema } from '../../policies/config.js';
import { channelName, webhookUrl } from '../notifications/config.js';

/**
 * The `siem:` section: where the audit stream is pushed (syslog over TLS, webhooks), at least
 * once and in order, from each sink's last acknowledged sequence. proxy/config.ts composes it.
 */

/** RFC 5424 facility codes by name. */
export const FACILITIES = {
  kern: 0, user: 1, mail: 2, daemon: 3, auth: 4, syslog: 5, lpr: 6, news: 7, uucp: 8, cron: 9, authpriv: 10, ftp: 11, ntp: 12,
  audit: 13, alert: 14, clock: 15, local0: 16, local1: 17, local2: 18, local3: 19, local4: 20, local5: 21, local6: 22, local7: 23,
} as const;

/** Printable US-ASCII without space, at most n characters (RFC 5424 header fields). */
const printable = (n: number) => z.string().regex(new RegExp(`^[!-~]{1,${n}}$`), `at most ${n} printable ASCII characters without spaces`);

/** Where a new sink starts: the first audit event, or the end of the log when it is first configured. */
const from = z.enum(['start', 'now']).default('start');
const batch = z.number().int().min(1).max(10_000).default(500);

export const syslogSinkSchema = z.object({
  /** The cursor is stored under this name (default host:port): renaming a sink starts it afresh. */
  name: channelName.optional(),
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(6514),
  /** TLS (RFC 5425) with these CA, client certificate and server name; false: plain TCP, in clear text. */
  tls: z.union([z.literal(false), z.object({
    ca: secretRefSchema.optional(),
    cert: secretRefSchema.optional(),
    key: secretRefSchema.optional(),
    servername: z.string().min(1).optional(),
  }).strict()]).default({}),
  facility: z.enum(Object.keys(FACILITIES) as [keyof typeof FACILITIES, ...(keyof typeof FACILITIES)[]]).default('authpriv'),
  appName: printable(48).default('tollgate'),
  /** HOSTNAME of each message (default: this machine's host name). */
  hostname: printable(255).optional(),
  /** The SD-ID of the structured data (name@<private enterprise number>); 32473 is the number RFC 5612 reserves for documentation. */
  sdId: z.string().regex(/^[!#-<>-\\^-~]{1,32}$/, 'an SD-ID such as tollgate@32473 (printable ASCII without space, =, ], ")').default('tollgate@32473'),
  /** Events per connection; a batch counts as received when the server closes its side after reading it all. */
  batch,
  /** A larger event is sent with its data replaced by {"truncated": true, "bytes": n}. The receiver must accept messages this long. */
  maxMessageBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(64 * 1024),
  timeout: durationSchema.default('30s'),
  from,
}).strict();
export type SyslogSinkConfig = z.infer<typeof syslogSinkSchema>;

export const siemWebhookSchema = z.object({
  name: channelName,
  url: webhookUrl,
  /** The HMAC-SHA-256 key of the X-Tollgate-Signature header. */
  secret: secretRefSchema,
  ca: secretRefSchema.optional(),
  batch,
  timeout: durationSchema.default('30s'),
  from,
}).strict();
export type SiemWebhookConfig = z.infer<typeof siemWebhookSchema>;

export const siemSchema = z.object({
  syslog: z.array(syslogSinkSchema).default([]),
  webhooks: z.array(siemWebhookSchema).default([]),
  retry: z.object({
    /** Delay after a failed batch, doubled after each further failure, at most maxDelay. */
    initialDelay: durationSchema.default('1s'),
    maxDelay: durationSchema.default('5m'),
  }).strict().prefault({}),
}).strict().prefault({});
export type SiemConfig = z.infer<typeof siemSchema>;

/** The name a syslog sink's cursor is stored under. */
export function syslogSinkName(s: Pick<SyslogSinkConfig, 'name' | 'host' | 'port'>): string {
  return s.name ?? `${s.host}:${s.port}`;
}

/** Unique sink names; a client certificate comes with its key. */
export function checkSiem(s: SiemConfig): { path: string; expected: string } | null {
  const seen = new Set<string>();
  const sinks = [...s.syslog.map((x, i) => [`siem.syslog[${i}]`, `syslog:${syslogSinkName(x)}`] as const), ...s.webhooks.map((x, i) => [`siem.webhooks[${i}]`, `webhook:${x.name}`] as const)];
  for (const [path, name] of sinks) {
    if (seen.has(name)) return { path: `${path}.name`, expected: `a unique name (${name} is used twice)` };
    seen.add(name);
  }
  for (const [i, x] of s.syslog.entries()) {
    if (x.tls && !!x.tls.cert !== !!x.tls.key) return { path: `siem.syslog[${i}].tls.${x.tls.cert ? 'key' : 'cert'}`, expected: 'a client certificate and its key together' };
  }
  return null;
}
