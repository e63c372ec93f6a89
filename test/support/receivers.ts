/**
 * Real receivers for notification tests: an SMTP server in-process (smtp-server, STARTTLS with a
 * test CA, AUTH checked) that keeps every message and decodes it, and an HTTP receiver that keeps
 * every request and answers as the test says (a status, or never).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

export interface Mail {
  envelopeFrom: string;
  envelopeTo: string[];
  headers: Record<string, string>;
  subject: string;
  text: string;
  html: string;
  raw: string;
  /** Whether the session ran over TLS and who authenticated. */
  secure: boolean;
  user: string | null;
}

async function until<T>(what: string, fn: () => T | null | undefined | false, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Quoted-printable (RFC 2045) to text. */
function qp(s: string): string {
  const bytes: number[] = [];
  const t = s.replace(/=\r?\n/g, '');
  for (let i = 0; i < t.length; i++) {
    if (t[i] === '=' && /^[0-9A-F]{2}$/i.test(t.slice(i + 1, i + 3))) { bytes.push(parseInt(t.slice(i + 1, i + 3), 16)); i += 2; } else bytes.push(...Buffer.from(t[i]!, 'utf8'));
  }
  return Buffer.from(bytes).toString('utf8');
}

/** RFC 2047 encoded words in a header. */
function words(s: string): string {
  return s.replace(/=\?utf-8\?([QB])\?([^?]*)\?=\s*/gi, (_, enc: string, v: string) => (enc.toUpperCase() === 'B' ? Buffer.from(v, 'base64').toString('utf8') : qp(v.replace(/_/g, ' '))));
}

function parseHeaders(block: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of block.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i).toLowerCase()] = words(line.slice(i + 1).trim());
  }
  return out;
}

function decodeBody(headers: Record<string, string>, body: string): string {
  const enc = (headers['content-transfer-encoding'] ?? '7bit').toLowerCase();
  if (enc === 'quoted-printable') return qp(body);
  if (enc === 'base64') return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  return body;
}

/** The text and HTML of a message (single part or multipart/alternative). */
export function parseMail(raw: string): { headers: Record<string, string>; text: string; html: string } {
  const split = raw.search(/\r?\n\r?\n/);
  const headers = parseHeaders(raw.slice(0, split));
  const body = raw.slice(split).replace(/^\r?\n\r?\n/, '');
  const type = headers['content-type'] ?? 'text/plain';
  const boundary = /boundary="?([^";]+)"?/.exec(type)?.[1];
  let text = '';
  let html = '';
  const parts = boundary ? body.split(`--${boundary}`).slice(1, -1) : [raw.slice(0, split) + '\r\n\r\n' + body];
  for (const part of parts) {
    const p = part.replace(/^\r?\n/, '');
    const s = p.search(/\r?\n\r?\n/);
    const h = parseHeaders(p.slice(0, s));
    const b = decodeBody(h, p.slice(s).replace(/^\r?\n\r?\n/, '').replace(/\r?\n$/, ''));
    if ((h['content-type'] ?? '').startsWith('text/html')) html = b; else text = b;
  }
  return { headers, text: text.replace(/\r\n/g, '\n'), html };
}

export interface TestSmtp {
  port: number;
  mails: Mail[];
  /** Addresses refused at RCPT TO with a permanent 550. */
  refuse: Set<string>;
  /** Wait until n messages arrived in all (or until pred holds for the list). */
  waitFor(n: number, ms?: number): Promise<Mail[]>;
  close(): Promise<void>;
}

export async function startSmtp(opts: { key: string; cert: string; user: string; pass: string; port?: number }): Promise<TestSmtp> {
  const mails: Mail[] = [];
  const refuse = new Set<string>();
  const server = new SMTPServer({
    secure: false,
    key: opts.key,
    cert: opts.cert,
    logger: false,
    authMethods: ['PLAIN', 'LOGIN'],
    // No AUTH before STARTTLS (smtp-server refuses it by default unless allowInsecureAuth).
    onAuth(auth, _session, cb) {
      if (auth.username === opts.user && auth.password === opts.pass) cb(null, { user: auth.username });
      else cb(new Error('Invalid username or password'));
    },
    onRcptTo(addr, _session, cb) {
      if (refuse.has(addr.address)) { const e = new Error('mailbox unavailable') as Error & { responseCode: number }; e.responseCode = 550; cb(e); return; }
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const m = parseMail(raw);
        mails.push({
          envelopeFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          envelopeTo: session.envelope.rcptTo.map((r) => r.address), headers: m.headers, subject: m.headers['subject'] ?? '',
          text: m.text, html: m.html, raw, secure: session.secure, user: (session.user as string | undefined) ?? null,
        });
        cb();
      });
    },
  });
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(opts.port ?? 0, '127.0.0.1', () => resolve()); });
  const port = (server.server.address() as AddressInfo).port;
  return {
    port, mails, refuse,
    waitFor: (n, ms = 15_000) => until(`${n} mails (have ${mails.length})`, () => (mails.length >= n ? mails : null), ms),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

export interface Received { method: string; path: string; headers: Record<string, string>; body: string; at: number }

export interface TestReceiver {
  url: string;
  port: number;
  requests: Received[];
  /** How to answer: a status, or 'hang' (never answer). Default 200. */
  answer: (r: Received) => number | 'hang';
  waitFor(pred: (all: Received[]) => boolean, ms?: number, what?: string): Promise<Received[]>;
  /** Open requests that were never answered ('hang'). */
  hanging: ServerResponse[];
  close(): Promise<void>;
}

export async function startReceiver(port = 0): Promise<TestReceiver> {
  const r: TestReceiver = {
    url: '', port: 0, requests: [], hanging: [], answer: () => 200,
    waitFor: (pred, ms = 15_000, what = 'webhook requests') => until(what, () => (pred(r.requests) ? r.requests : null), ms),
    close: async () => undefined,
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec: Received = {
        method: req.method ?? '', path: req.url ?? '', at: Date.now(), body: Buffer.concat(chunks).toString('utf8'),
        headers: Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : v ?? ''])),
      };
      r.requests.push(rec);
      const a = r.answer(rec);
      if (a === 'hang') { r.hanging.push(res); return; }
      res.writeHead(a, { 'content-type': 'text/plain' }).end(a >= 300 ? `receiver says no (${a})` : 'ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  r.port = (server.address() as AddressInfo).port;
  r.url = `http://127.0.0.1:${r.port}/hook/s3cr3t-path`;
  r.close = async () => {
    for (const h of r.hanging) h.destroy();
    server.closeAllConnections();
    await new Promise<void>((res) => server.close(() => res()));
  };
  return r;
}
