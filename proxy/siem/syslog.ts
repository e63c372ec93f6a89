import net from 'node:net';
import tls from 'node:tls';
import type { Secret } from '../../auth/secret.js';
import type { AuditEventRecord } from '../store/types.js';
import { DeliveryError } from '../notifications/webhook.js';

/**
 * Audit events as syslog messages (RFC 5424), octet-counted over TCP (RFC 6587 §3.4.1), with TLS
 * (RFC 5425). One message per event:
 *
 *   <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID seq="…" actor="…" subject="…" hash="…"] {event JSON}
 *
 * PRI is facility × 8 + severity (warning for refusals, kills, alerts, break-glass, failures;
 * info otherwise), TIMESTAMP the event's time, PROCID the gateway id, MSGID the audit action, and
 * the message the event as the audit log holds it (seq, at, actor, action, subject, data,
 * prevHash, hash, mac), so a SIEM copy can be checked against the chain.
 */

export interface SyslogFormat {
  facility: number;
  appName: string;
  hostname: string;
  procId: string;
  sdId: string;
  maxMessageBytes: number;
}

const WARNING = /refused|denied|\.deny|kill|alert|breakglass|crash|lock\.|failed|failing|throttled|forbidden/;

export function severityOf(action: string): number {
  return WARNING.test(action) ? 4 : 6;
}

/** A header field: printable ASCII without spaces, at most n characters ('-' when nothing is left). */
export function headerField(s: string, n: number): string {
  const v = s.replace(/[^!-~]/g, '_').slice(0, n);
  return v || '-';
}

/** An SD-PARAM value: ", \ and ] escaped (RFC 5424 §6.3.3), control characters dropped. */
function paramValue(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f]/g, '').slice(0, 200).replace(/["\\\]]/g, (c) => `\\${c}`);
}

/** The event as one syslog message (without the octet count). Oversized data is replaced by a note of its size. */
export function syslogMessage(e: AuditEventRecord, f: SyslogFormat): string {
  const pri = f.facility * 8 + severityOf(e.action);
  const sd = `[${f.sdId} seq="${e.seq}" actor="${paramValue(e.actor)}"${e.subject !== null ? ` subject="${paramValue(e.subject)}"` : ''} hash="${e.hash}"]`;
  const head = `<${pri}>1 ${new Date(e.at).toISOString()} ${f.hostname} ${f.appName} ${f.procId} ${headerField(e.action, 32)} ${sd} `;
  const body = (data: unknown, cut = false) => JSON.stringify({
    seq: e.seq, at: e.at, actor: cut ? e.actor.slice(0, 1000) : e.actor, action: e.action, subject: cut && e.subject ? e.subject.slice(0, 1000) : e.subject,
    data, prevHash: e.prevHash, hash: e.hash, mac: e.mac,
  });
  let msg = head + body(e.data);
  const size = Buffer.byteLength(msg);
  if (size > f.maxMessageBytes) msg = head + body({ truncated: true, bytes: size }, true);
  return msg;
}

/** The octet-counted frame of a message: "<length> <message>". */
export function frame(msg: string): Buffer {
  const b = Buffer.from(msg, 'utf8');
  return Buffer.concat([Buffer.from(`${b.length} `, 'ascii'), b]);
}

export interface SyslogTarget {
  host: string;
  port: number;
  /** null: plain TCP. */
  tls: { ca?: string; cert?: string; key?: Secret; servername?: string } | null;
  timeoutMs: number;
}

/**
 * Send one batch over its own connection and wait until the server has read all of it: after our
 * last frame we close our side, and a syslog server closes its side only once it has read up to
 * that close. A reset, an error, a close before that, or no close within the timeout fails the
 * batch (it is sent again, whole).
 */
export function sendBatch(t: SyslogTarget, frames: Buffer[], signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const where = `${t.host}:${t.port}`;
    const sock: net.Socket = t.tls
      ? tls.connect({
        host: t.host, port: t.port, ca: t.tls.ca, cert: t.tls.cert, key: t.tls.key?.reveal(), minVersion: 'TLSv1.2',
        servername: t.tls.servername ?? (net.isIP(t.host) ? undefined : t.host),
      })
      : net.connect({ host: t.host, port: t.port });
    let settled = false;
    let flushed = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      if (err) reject(err); else resolve();
    };
    const onAbort = () => finish(new DeliveryError(`${where}: stopped`));
    const timer = setTimeout(() => finish(new DeliveryError(`${where}: the batch was not received within ${Math.round(t.timeoutMs / 1000)} s`)), t.timeoutMs);
    if (signal?.aborted) { onAbort(); return; }
    signal?.addEventListener('abort', onAbort);
    sock.on('error', (e: NodeJS.ErrnoException) => finish(new DeliveryError(`${where}: ${e.code ?? e.message}`)));
    sock.on(t.tls ? 'secureConnect' : 'connect', () => {
      for (const f of frames) sock.write(f);
      sock.end(() => { flushed = true; });
    });
    sock.on('end', () => finish(flushed ? undefined : new DeliveryError(`${where}: the server closed the connection before the batch was sent`)));
    sock.on('close', () => finish(new DeliveryError(`${where}: the connection closed before the server confirmed the batch`)));
    sock.resume(); // a syslog server sends nothing; reading is how its close is seen
  });
}
