import { createHmac, timingSafeEqual } from 'node:crypto';
import { Agent, request } from 'undici';
import type { Secret } from '../../auth/secret.js';

/**
 * Signed HTTP deliveries, for notification webhooks and the SIEM webhook sinks.
 *
 * The signature scheme: `X-Tollgate-Signature: t=<unix seconds>,v1=<hex>` where hex is
 * HMAC-SHA-256 under the webhook's key of `<t>.<raw body>`. A receiver recomputes it over the
 * bytes it received, compares in constant time, and refuses a `t` far from its own clock (five
 * minutes, say) so a recorded delivery cannot be replayed later. `X-Tollgate-Delivery` names the
 * delivery (the same on every retry: receivers drop repeats by it).
 */

export const SIGNATURE_HEADER = 'x-tollgate-signature';

export function signature(key: Secret, body: string, unixSeconds: number): string {
  const mac = createHmac('sha256', key.reveal()).update(`${unixSeconds}.${body}`).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/**
 * Check a signature header as a receiver does: well formed, made with `key` over `body`, and its
 * time within `toleranceS` of `nowS`. Returns null when it holds, else why not.
 */
export function checkSignature(key: Secret, body: string, header: string | undefined, nowS: number, toleranceS = 300): string | null {
  const m = /^t=(\d{1,12}),v1=([0-9a-f]{64})$/.exec(header ?? '');
  if (!m) return 'no well-formed X-Tollgate-Signature header';
  const t = Number(m[1]);
  if (Math.abs(nowS - t) > toleranceS) return `the signature is ${Math.abs(nowS - t)} s old`;
  const want = Buffer.from(signature(key, body, t).slice(`t=${t},v1=`.length), 'hex');
  return timingSafeEqual(want, Buffer.from(m[2]!, 'hex')) ? null : 'the signature does not match';
}

/** A delivery that did not go through; `permanent`: trying again cannot help. Messages never hold a URL's path or a secret. */
export class DeliveryError extends Error {
  constructor(message: string, readonly permanent = false) { super(message); this.name = 'DeliveryError'; }
}

/** What to say about a URL in errors and on the dashboard: its origin only (a path may hold a token, as Slack's does). */
export function urlOrigin(url: string): string {
  try { return new URL(url).origin; } catch { return '<url>'; }
}

export interface PostOptions {
  url: string;
  body: string;
  /** Signs the body (X-Tollgate-Signature); none: unsigned (Slack incoming webhooks). */
  key?: Secret;
  headers?: Record<string, string>;
  timeoutMs: number;
  ca?: string;
  /** Send time (for the signature), epoch ms. */
  now: number;
  /** Abandons the request (shutdown). */
  signal?: AbortSignal;
}

/** Posts JSON deliveries, keeping a connection pool per CA between them; close() at shutdown. */
export class WebhookClient {
  private readonly agents = new Map<string, Agent>();

  private agentFor(ca: string | undefined): Agent {
    const k = ca ?? '';
    let a = this.agents.get(k);
    if (!a) {
      a = new Agent({ connect: ca ? { ca, minVersion: 'TLSv1.2' } : { minVersion: 'TLSv1.2' }, keepAliveTimeout: 10_000 });
      this.agents.set(k, a);
    }
    return a;
  }

  /** POST a JSON body; resolves on a 2xx answer, throws a DeliveryError otherwise. Redirects are not followed. */
  async post(o: PostOptions): Promise<void> {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'Tollgate', ...o.headers };
    if (o.key) headers[SIGNATURE_HEADER] = signature(o.key, o.body, Math.floor(o.now / 1000));
    const where = urlOrigin(o.url);
    let status: number;
    let text = '';
    try {
      const res = await request(o.url, {
        method: 'POST', headers, body: o.body, dispatcher: this.agentFor(o.ca),
        headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs, signal: o.signal ? AbortSignal.any([o.signal, AbortSignal.timeout(o.timeoutMs)]) : AbortSignal.timeout(o.timeoutMs),
      });
      status = res.statusCode;
      res.body.on('error', () => undefined); // destroyed below on purpose
      // A little of an error answer says why; the rest is not read.
      if (status < 200 || status >= 300) {
        for await (const chunk of res.body) { text += String(chunk); if (text.length >= 200) break; }
      } else {
        await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
      }
      res.body.destroy();
    } catch (e) {
      const err = e as { name?: string; code?: string; message?: string; cause?: { code?: string; message?: string } };
      const why = err.name === 'TimeoutError' || err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT'
        ? `no answer within ${Math.round(o.timeoutMs / 1000)} s`
        : err.cause?.code ?? err.code ?? err.cause?.message ?? err.message ?? 'failed';
      throw new DeliveryError(`${where}: ${scrubUrl(String(why), o.url)}`);
    }
    if (status < 200 || status >= 300) {
      const said = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, 200);
      throw new DeliveryError(`${where} answered ${status}${said ? `: ${scrubUrl(said, o.url)}` : ''}`);
    }
  }

  async close(): Promise<void> {
    const all = [...this.agents.values()];
    this.agents.clear();
    // destroy, not close: a receiver that never answers must not hold up a shutdown.
    await Promise.all(all.map((a) => a.destroy().catch(() => undefined)));
  }
}

/** A message with the URL (and its path) taken out. */
function scrubUrl(msg: string, url: string): string {
  let path = '';
  try { path = new URL(url).pathname; } catch { /* not a URL */ }
  let out = msg.split(url).join('<url>');
  if (path.length > 1) out = out.split(path).join('<path>');
  return out;
}
