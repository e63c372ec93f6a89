import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Secret, SecretRef } from '../../auth/secret.js';
import type { Clock, TimerHandle } from '../../policies/clock.js';
import { parseDuration } from '../../policies/config.js';
import type { IdentityRecord, NotificationDeliveryRecord, Store } from '../store/types.js';
import { scrub } from '../audit.js';
import { ConfigError } from '../config.js';
import type { NotificationsConfig } from './config.js';
import { EmailSender, type EmailPayload } from './email.js';
import { subscribed, topicOf } from './events.js';
import { DeliveryQueue, type Sender } from './queue.js';
import { render, toEmail, toJson, toSlack, type Facts } from './templates.js';
import { WebhookClient } from './webhook.js';

/**
 * Notifications: the workflow's events (gateway.notify) become messages on the configured
 * channels — signed JSON or Slack-compatible webhooks, and email to the identities concerned
 * (groups → identities → their email addresses) — through the retry queue in the store. The
 * workflow only hands the event over: rendering, enqueueing and sending happen off its path, and
 * a failed or slow channel never holds a request, decision or session up.
 *
 * The event shape other parts emit (documented in README "Notifications"): `kind` plus facts;
 * `requestId`/`grantId` are looked up; optional `to: {identities, groups}` says who hears about it
 * (else the topic decides), `path` which portal page its link opens, `recipients` (identity subs)
 * who is told as well, and `dedupeKey` makes several gateways noticing the same thing send it once.
 */

export interface NotificationsDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  gatewayId: string;
  config: NotificationsConfig;
  /** The config file (config errors name it). */
  configFile: string;
  /** The gateway's public URL (known once the HTTP front listens). */
  publicUrl(): string;
  /** Members of these get the SOC's alerts (gateway.socGroups). */
  socGroups: readonly string[];
  /** Groups that close break-glass reviews (breakGlass.reviewers). */
  breakGlassReviewers: readonly string[];
  resolveSecret(ref: SecretRef, path: string): Secret;
  audit(action: string, subject: string | null, data: Record<string, unknown>): Promise<void>;
}

interface Channel { key: string; kind: 'email' | 'webhook'; name: string; format?: 'json' | 'slack'; events: readonly string[] }

/** What a delivery looks like on the dashboard and in the API (without its body). */
export interface DeliveryView {
  id: string; channel: string; topic: string; recipient: string; title: string; state: NotificationDeliveryRecord['state'];
  attempts: number; nextAt: number | null; createdAt: number; updatedAt: number; deliveredAt: number | null; lastError: string | null;
}

/** An address nodemailer takes as one recipient (no list, no display name, no header break). */
const MAILBOX = /^[^\s@<>,;:"()[\]\\]+@[^\s@<>,;:"()[\]\\]+$/;

export class Notifications {
  readonly channels: Channel[] = [];
  private readonly senders = new Map<string, Sender>();
  private readonly client = new WebhookClient();
  private readonly email: EmailSender | null = null;
  private readonly queue: DeliveryQueue;
  private readonly grantExpiryMs: number | null;
  private scanTimer: TimerHandle | null = null;
  private started = false;
  private stopped = false;
  private readonly pendingPublishes = new Set<Promise<unknown>>();

  constructor(private readonly d: NotificationsDeps) {
    const c = d.config;
    c.webhooks.forEach((w, i) => {
      const path = `notifications.webhooks[${i}]`;
      const url = typeof w.url === 'string' ? w.url : d.resolveSecret(w.url, `${path}.url`).reveal();
      if (!/^https?:\/\/\S+$/.test(url)) throw new ConfigError(d.configFile, `${path}.url`, 'an http:// or https:// URL (the secret holds something else)');
      const key = w.secret ? d.resolveSecret(w.secret, `${path}.secret`) : undefined;
      const ca = w.ca ? d.resolveSecret(w.ca, `${path}.ca`).reveal() : undefined;
      const timeoutMs = parseDuration(w.timeout);
      const channel: Channel = { key: `webhook:${w.name}`, kind: 'webhook', name: w.name, format: w.format, events: w.events };
      this.channels.push(channel);
      this.senders.set(channel.key, {
        timeoutMs,
        send: (row, now) => this.client.post({
          url, body: JSON.stringify(row.payload['body']), key, timeoutMs, ca, now,
          headers: { 'x-tollgate-event': row.topic, 'x-tollgate-delivery': row.id },
        }),
      });
    });
    if (c.email) {
      const s = c.email.smtp;
      const timeoutMs = parseDuration(s.timeout);
      const email = new EmailSender(c.email.from, {
        host: s.host, port: s.port, tls: s.tls, user: s.user, timeoutMs, servername: s.servername,
        password: s.password ? d.resolveSecret(s.password, 'notifications.email.smtp.password') : undefined,
        ca: s.ca ? d.resolveSecret(s.ca, 'notifications.email.smtp.ca').reveal() : undefined,
      });
      this.email = email;
      this.channels.push({ key: 'email', kind: 'email', name: 'email', events: c.email.events });
      this.senders.set('email', { timeoutMs: timeoutMs * 4, send: (row) => email.send(row.recipient, row.payload as unknown as EmailPayload) });
    }
    this.grantExpiryMs = c.grantExpiry === false ? null : parseDuration(c.grantExpiry) || null;
    this.queue = new DeliveryQueue({
      store: d.store, clock: d.clock, log: d.log, gatewayId: d.gatewayId, senders: this.senders,
      retry: { attempts: c.retry.attempts, initialDelayMs: parseDuration(c.retry.initialDelay), maxDelayMs: parseDuration(c.retry.maxDelay) },
      keepDeliveredMs: parseDuration(c.keepDelivered),
      onFailed: (row) => void d.audit('notification.failed', row.id, { channel: row.channel, topic: row.topic, recipient: row.recipient, attempts: row.attempts, error: row.lastError })
        .catch((e) => d.log.error({ err: e }, 'audit of a failed notification failed')),
    });
  }

  get enabled(): boolean { return this.channels.length > 0; }

  async start(): Promise<void> {
    if (!this.enabled) return;
    this.started = true;
    await this.queue.start();
    this.armScan();
  }

  /** Hand an event over; returns at once (enqueueing runs on its own, failures are logged). */
  publish(event: Record<string, unknown>): void {
    if (!this.enabled || this.stopped) return;
    const p = this.enqueue(event).catch((e) => this.d.log.error({ err: e, kind: event['kind'] }, 'notification could not be queued'));
    this.pendingPublishes.add(p);
    void p.finally(() => this.pendingPublishes.delete(p));
  }

  /** Render the event for each subscribed channel and queue the deliveries; how many were queued. */
  async enqueue(raw: Record<string, unknown>): Promise<number> {
    if (!this.enabled || this.stopped) return 0;
    const e = scrub(raw);
    const kind = typeof e['kind'] === 'string' ? e['kind'] : 'event';
    const topic = topicOf(kind);
    const channels = this.channels.filter((c) => subscribed(c.events, topic));
    if (!channels.length) return 0;
    const { store, clock } = this.d;
    const facts = await this.facts(e);
    const message = render(topic, { ...e, kind }, facts, this.d.publicUrl());
    const people = await this.recipients(topic, e, facts);
    const now = clock.now();
    // A grant's end is noticed by every gateway's scan (and by the engine's own warning): told once per end.
    const key = typeof e['dedupeKey'] === 'string' ? e['dedupeKey']
      : topic === 'grant.expiring' && typeof e['grantId'] === 'string' ? `grant.expiring:${e['grantId']}:${String(e['expiresAt'])}` : null;
    const row = (channel: string, recipient: string, id: string, payload: Record<string, unknown>): NotificationDeliveryRecord => ({
      id, channel, topic, recipient, payload, state: 'pending', attempts: 0, nextAt: now, createdAt: now, updatedAt: now, deliveredAt: null,
      lastError: null, dedupe: key ? `${key}|${channel}|${recipient}` : null, claimedBy: null, claimedUntil: null,
    });
    let queued = 0;
    for (const c of channels) {
      if (c.kind === 'webhook') {
        const id = randomUUID();
        const body = c.format === 'slack' ? toSlack(message)
          : toJson(message, { id, at: now, gateway: this.d.gatewayId, kind, recipients: people.map((p) => p.sub), event: e, facts });
        if (await store.enqueueDelivery(row(c.key, c.name, id, { body, title: message.title }))) queued++;
      } else {
        const mail = toEmail(message);
        for (const p of people) {
          if (!p.email || !MAILBOX.test(p.email)) { this.d.log.debug({ identity: p.sub, topic }, 'no usable email address: not emailed'); continue; }
          if (await store.enqueueDelivery(row(c.key, p.email, randomUUID(), { ...mail, identity: p.sub, title: message.title }))) queued++;
        }
      }
    }
    if (queued) this.queue.kick();
    return queued;
  }

  private async facts(e: Record<string, unknown>): Promise<Facts> {
    const request = typeof e['requestId'] === 'string' ? await this.d.store.getRequest(e['requestId']) : null;
    const grantId = typeof e['grantId'] === 'string' ? e['grantId'] : request?.grantId ?? null;
    const grant = grantId ? await this.d.store.getGrant(grantId) : null;
    return { request, grant };
  }

  /**
   * The identities an event is for: its `to` (identities, and members of groups) when it names
   * them, else by topic — approvers by group, the requester, the SOC, a grant's holder, reviewers.
   * Never the requester of a request that waits for approval, nor whoever used break-glass.
   */
  private async recipients(topic: string, e: Record<string, unknown>, f: Facts): Promise<IdentityRecord[]> {
    const all = await this.d.store.listIdentities();
    const list = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
    const inGroups = (groups: readonly string[]) => all.filter((i) => i.groups.some((g) => groups.includes(g)));
    const bySub = (subs: readonly string[]) => all.filter((i) => subs.includes(i.sub));
    const requester = typeof e['requester'] === 'string' ? e['requester'] : f.request?.requester ?? null;
    const to = e['to'] && typeof e['to'] === 'object' ? e['to'] as Record<string, unknown> : null;
    let out: IdentityRecord[];
    if (to) out = [...bySub(list(to['identities'])), ...inGroups(list(to['groups']))];
    else {
      switch (topic) {
        case 'request.pending': case 'request.escalated': out = inGroups(list(e['groups'])); break;
        case 'request.decided': case 'checkout.ready': out = requester ? bySub([requester]) : []; break;
        case 'breakglass.used': out = inGroups([...this.d.breakGlassReviewers, ...this.d.socGroups]); break;
        case 'rule.triggered': case 'alert': out = inGroups(this.d.socGroups); break;
        case 'grant.expiring': case 'grant.extended': out = bySub(list([e['identity'] ?? f.grant?.identity])); break;
        case 'review.due': out = inGroups([...list(e['reviewers']), ...list(e['groups'])]); break;
        case 'delegation.created': out = bySub(list([e['delegate']])); break;
        default: out = [];
      }
    }
    out.push(...bySub(list(e['recipients'])));
    if (topic === 'request.pending' || topic === 'request.escalated') out = out.filter((i) => i.sub !== requester);
    if (topic === 'breakglass.used') out = out.filter((i) => i.sub !== e['identity']);
    return [...new Map(out.map((i) => [i.sub, i])).values()];
  }

  /* ----------------------------------------------------------------- a grant about to end */

  private scanning = false;
  private rescan = false;

  /** A scan every minute (a quarter of grantExpiry when shorter); one at a time, the next armed when one fires. */
  private armScan(): void {
    if (!this.grantExpiryMs || this.stopped) return;
    const every = Math.min(60_000, Math.max(1_000, Math.floor(this.grantExpiryMs / 4)));
    this.scanTimer = this.d.clock.setTimer(every, () => {
      this.armScan();
      void this.runScan();
    });
  }

  private async runScan(): Promise<void> {
    if (this.scanning) { this.rescan = true; return; }
    this.scanning = true;
    try {
      do {
        this.rescan = false;
        await this.scanGrants().catch((e) => this.d.log.error({ err: e }, 'grant expiry scan failed'));
      } while (this.rescan && !this.stopped);
    } finally {
      this.scanning = false;
    }
  }

  /**
   * Tell each holder whose grant ends within grantExpiry (once per grant and end time, across every
   * gateway: the dedupe key). Grants no longer than grantExpiry are not announced: their holder
   * knew when asking.
   */
  async scanGrants(): Promise<number> {
    if (!this.grantExpiryMs) return 0;
    const grants = await this.d.store.listGrants({ state: 'active' });
    const now = this.d.clock.now();
    let queued = 0;
    for (const g of grants) {
      const left = g.expiresAt - now;
      if (left <= 0 || left > this.grantExpiryMs || g.expiresAt - g.startsAt <= this.grantExpiryMs) continue;
      queued += await this.enqueue({
        kind: 'grant.expiring', grantId: g.id, identity: g.identity, target: g.target, role: g.role, expiresAt: g.expiresAt,
        msLeft: left, breakGlass: g.breakGlass,
      });
    }
    return queued;
  }

  /* ----------------------------------------------------------------- visibility */

  /** Counts by state and the deliveries that failed or are being retried, newest first. */
  async status(limit = 50): Promise<{ channels: { channel: string; kind: string; format: string | null; events: readonly string[] }[]; counts: Record<string, number>; problems: DeliveryView[] }> {
    const problems = await this.d.store.listDeliveries({ state: ['pending', 'sending', 'failed'], failing: true, recent: true, limit });
    return {
      channels: this.channels.map((c) => ({ channel: c.key, kind: c.kind, format: c.format ?? null, events: c.events })),
      counts: await this.d.store.countDeliveries(),
      problems: problems.map(view),
    };
  }

  /** Try a failed (or waiting) delivery again now, with a fresh set of attempts. Null: no such delivery, or it was delivered. */
  async retry(id: string, actor: string): Promise<DeliveryView | null> {
    const now = this.d.clock.now();
    const set = { state: 'pending' as const, attempts: 0, nextAt: now, updatedAt: now };
    const out = await this.d.store.claim('deliveries', id, { state: 'failed' }, set) ?? await this.d.store.claim('deliveries', id, { state: 'pending' }, set);
    if (!out) return null;
    await this.d.audit('notification.retried', id, { by: actor, channel: out.channel, topic: out.topic, recipient: out.recipient });
    this.queue.kick();
    return view(out);
  }

  /** Resolves when what was handed over is queued and the queue has nothing due left (tests). */
  async idle(): Promise<void> {
    while (this.pendingPublishes.size) await Promise.allSettled([...this.pendingPublishes]);
    if (this.started) await this.queue.idle();
  }

  /** Look at the queue now (tests; the retry API). */
  kick(): void { if (this.started) this.queue.kick(); }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.scanTimer?.cancel();
    await Promise.allSettled([...this.pendingPublishes]);
    await this.queue.stop();
    await this.client.close();
    this.email?.close();
  }
}

function view(r: NotificationDeliveryRecord): DeliveryView {
  return {
    id: r.id, channel: r.channel, topic: r.topic, recipient: r.recipient, title: typeof r.payload['title'] === 'string' ? r.payload['title'] : '',
    state: r.state, attempts: r.attempts, nextAt: r.state === 'pending' ? r.nextAt : null, createdAt: r.createdAt, updatedAt: r.updatedAt,
    deliveredAt: r.deliveredAt, lastError: r.lastError,
  };
}
