import nodemailer from 'nodemailer';
import type { Transporter } from 'nodemailer';
import type { Secret } from '../../auth/secret.js';
import { DeliveryError } from './webhook.js';

/** Email over SMTP (nodemailer): one connection per message, TLS required unless configured otherwise. */

export interface SmtpSettings {
  host: string;
  port: number;
  tls: 'starttls' | 'implicit' | 'none';
  user?: string;
  password?: Secret;
  ca?: string;
  servername?: string;
  timeoutMs: number;
}

/** What one email says (stored with the delivery; no secret in it). */
export interface EmailPayload { subject: string; text: string; html: string }

export class EmailSender {
  private readonly transport: Transporter;

  constructor(private readonly from: string, s: SmtpSettings) {
    this.transport = nodemailer.createTransport({
      host: s.host,
      port: s.port,
      secure: s.tls === 'implicit',
      requireTLS: s.tls === 'starttls',
      ignoreTLS: s.tls === 'none',
      auth: s.user ? { user: s.user, pass: s.password?.reveal() ?? '' } : undefined,
      tls: { ca: s.ca, servername: s.servername, minVersion: 'TLSv1.2', rejectUnauthorized: true },
      connectionTimeout: s.timeoutMs,
      greetingTimeout: s.timeoutMs,
      socketTimeout: s.timeoutMs,
      disableFileAccess: true,
      disableUrlAccess: true,
    });
  }

  /** Send one message; an SMTP 5xx answer (unknown mailbox, refused) is permanent, anything else may be tried again. */
  async send(to: string, m: EmailPayload): Promise<void> {
    try {
      await this.transport.sendMail({ from: this.from, to, subject: m.subject, text: m.text, html: m.html, disableFileAccess: true, disableUrlAccess: true });
    } catch (e) {
      const err = e as { responseCode?: number; code?: string; message?: string };
      const permanent = typeof err.responseCode === 'number' && err.responseCode >= 500;
      const why = (err.message ?? String(e)).replace(/[\r\n]+/g, ' ').slice(0, 300);
      throw new DeliveryError(`SMTP ${err.responseCode ?? err.code ?? 'error'}: ${why}`, permanent);
    }
  }

  close(): void { this.transport.close(); }
}
