import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Secret, SecretRef } from '../../auth/secret.js';
import type { Clock } from '../../policies/clock.js';
import { parseDuration } from '../../policies/config.js';
import type { AuditEventRecord, Store } from '../store/types.js';
import { DeliveryError, urlOrigin, WebhookClient } from '../notifications/webhook.js';
import { FACILITIES, syslogSinkName, type SiemConfig } from './config.js';
import { frame, headerField, sendBatch, syslogMessage } from './syslog.js';

/**
 * SIEM push: the audit log streamed to each configured sink (syslog over TLS, webhooks) in
 * sequence order, at least once. Each sink has a cursor in the store (siem_cursors): the last seq
 * it acknowledged. A sink gets the events after its cursor in batches; only when a batch is
 * acknowledged (syslog: the server read it all and closed; webhook: a 2xx answer) does the cursor
 * move. A failed batch is sent again, whole, after a backoff, so a receiver may see an event
 * twice (after a failure or a restart) but never misses one and never sees them out of order:
 * drop repeats by seq. With several gateways on one store, the one holding the sink's lease
 * streams to it; another takes over when the lease runs out.
 *
 * Network pacing (backoff, polling) uses real timers; lease times are the gateway clock's.
 */

export interface SiemDeps {
  store: Store;
  clock: Clock;
  log: Logger;
  gatewayId: string;
  config: SiemConfig;
  resolveSecret(ref: SecretRef, path: string): Secret;
  audit(action: string, subject: string | null, data: Record<string, unknown>): Promise<void>;
}

interface Sink {
  /** The cursor's name: syslog:<name> or webhook:<name>. */
  name: string;
  kind: 'syslog' | 'webhook';
  /** Where it goes, for the dashboard (host:port, or the webhook's origin). */
  where: string;
  batch: number;
  from: 'start' | 'now';
  timeoutMs: number;
  send(events: AuditEventRecord[], now: number, signal: AbortSignal): Promise<void>;
}

/** How often an idle stream looks for events another gateway appended. */
const POLL_MS = 2_000;

export interface SinkStatus {
  sink: string; kind: string; where: string; seq: number; head: number; behind: number; holder: string | null;
  ackAt: number | null; failures: number; lastError: string | null; lastErrorAt: number | null;
}

export class Siem {
  readonly sinks: Sink[] = [];
  private readonly client = new WebhookClient();
  private readonly streams: SinkStream[] = [];
  private stopped = false;

  constructor(private readonly d: SiemDeps) {
    const host = headerField(hostname(), 255);
    d.config.syslog.forEach((s, i) => {
      const path = `siem.syslog[${i}]`;
      const target = {
        host: s.host, port: s.port, timeoutMs: parseDuration(s.timeout),
        tls: s.tls === false ? null : {
          ca: s.tls.ca ? d.resolveSecret(s.tls.ca, `${path}.tls.ca`).reveal() : undefined,
          cert: s.tls.cert ? d.resolveSecret(s.tls.cert, `${path}.tls.cert`).reveal() : undefined,
          key: s.tls.key ? d.resolveSecret(s.tls.key, `${path}.tls.key`) : undefined,
          servername: s.tls.servername,
        },
      };
      const fmt = { facility: FACILITIES[s.facility], appName: s.appName, hostname: s.hostname ?? host, procId: headerField(d.gatewayId, 128), sdId: s.sdId, maxMessageBytes: s.maxMessageBytes };
      this.sinks.push({
        name: `syslog:${syslogSinkName(s)}`, kind: 'syslog', where: `${s.host}:${s.port}${s.tls === false ? ' (plain TCP)' : ''}`, batch: s.batch, from: s.from, timeoutMs: target.timeoutMs,
        send: (events, _now, signal) => sendBatch(target, events.map((e) => frame(syslogMessage(e, fmt))), signal),
      });
    });
    d.config.webhooks.forEach((w, i) => {
      const path = `siem.webhooks[${i}]`;
      const url = typeof w.url === 'string' ? w.url : d.resolveSecret(w.url, `${path}.url`).reveal();
      const key = d.resolveSecret(w.secret, `${path}.secret`);
      const ca = w.ca ? d.resolveSecret(w.ca, `${path}.ca`).reveal() : undefined;
      const timeoutMs = parseDuration(w.timeout);
      this.sinks.push({
        name: `webhook:${w.name}`, kind: 'webhook', where: urlOrigin(url), batch: w.batch, from: w.from, timeoutMs,
        send: (events, now, signal) => this.client.post({
          url, key, ca, timeoutMs, now, signal,
          body: JSON.stringify({ gateway: d.gatewayId, events }),
          headers: { 'x-tollgate-event': 'audit', 'x-tollgate-delivery': `${events[0]!.seq}-${events[events.length - 1]!.seq}` },
        }),
      });
    });
  }

  get enabled(): boolean { return this.sinks.length > 0; }

  async start(): Promise<void> {
    if (!this.enabled) return;
    const head = (await this.d.store.lastAudit())?.seq ?? 0;
    for (const sink of this.sinks) {
      await this.d.store.ensureSiemCursor({
        sink: sink.name, seq: sink.from === 'now' ? head : 0, holder: null, heldUntil: null, updatedAt: this.d.clock.now(),
        ackAt: null, failures: 0, lastError: null, lastErrorAt: null,
      });
      const s = new SinkStream(this.d, sink, { initialMs: parseDuration(this.d.config.retry.initialDelay), maxMs: parseDuration(this.d.config.retry.maxDelay) });
      this.streams.push(s);
      s.start();
    }
  }

  /** New audit events were appended here: streams that wait go on at once. */
  wake(): void { for (const s of this.streams) s.wake(); }

  /** Each sink's cursor against the head of the log. */
  async status(): Promise<SinkStatus[]> {
    const head = (await this.d.store.lastAudit())?.seq ?? 0;
    const cursors = new Map((await this.d.store.listSiemCursors()).map((c) => [c.sink, c]));
    return this.sinks.map((s) => {
      const c = cursors.get(s.name);
      return {
        sink: s.name, kind: s.kind, where: s.where, seq: c?.seq ?? 0, head, behind: Math.max(0, head - (c?.seq ?? 0)), holder: c?.holder ?? null,
        ackAt: c?.ackAt ?? null, failures: c?.failures ?? 0, lastError: c?.lastError ?? null, lastErrorAt: c?.lastErrorAt ?? null,
      };
    });
  }

  /** Resolves once every sink has acknowledged up to `seq` (default: the head now), or after timeoutMs (false). */
  async caughtUp(seq?: number, timeoutMs = 10_000): Promise<boolean> {
    const want = seq ?? (await this.d.store.lastAudit())?.seq ?? 0;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const cursors = await this.d.store.listSiemCursors();
      if (this.sinks.every((s) => (cursors.find((c) => c.sink === s.name)?.seq ?? 0) >= want)) return true;
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stop streaming: first send what is left up to the head now, for at most drainMs. */
  async stop(drainMs = 3_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (!this.streams.length) return;
    const head = (await this.d.store.lastAudit().catch(() => null))?.seq ?? 0;
    await Promise.all(this.streams.map((s) => s.stop(head, drainMs)));
    await this.client.close();
  }
}

class SinkStream {
  private wakeUp: (() => void) | null = null;
  private loopDone: Promise<void> = Promise.resolve();
  private stopping: { seq: number; deadline: number } | null = null;
  private readonly abort = new AbortController();
  private failures = 0;

  constructor(private readonly d: SiemDeps, private readonly sink: Sink, private readonly backoff: { initialMs: number; maxMs: number }) {}

  start(): void {
    this.loopDone = this.loop().catch((e) => this.d.log.error({ err: e, sink: this.sink.name }, 'SIEM stream stopped on an error'));
  }

  wake(): void { const w = this.wakeUp; this.wakeUp = null; w?.(); }

  /** Sleep ms (real time), or until woken. */
  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(() => { this.wakeUp = null; r(); }, ms);
      t.unref();
      this.wakeUp = () => { clearTimeout(t); r(); };
    });
  }

  private get leaseMs(): number { return this.sink.timeoutMs * 2 + 10_000; }

  private async loop(): Promise<void> {
    const { store, clock, gatewayId } = this.d;
    const name = this.sink.name;
    for (;;) {
      const stop = this.stopping;
      if (stop && (Date.now() >= stop.deadline || this.abort.signal.aborted)) return;
      const cur = await store.getSiemCursor(name);
      if (!cur) return;
      if (stop && cur.seq >= stop.seq) return;
      const now = clock.now();
      if (cur.holder && cur.holder !== gatewayId && (cur.heldUntil ?? 0) > now) { await this.sleep(POLL_MS); continue; } // another gateway streams
      const events = await store.listAudit({ afterSeq: cur.seq, limit: this.sink.batch });
      if (!events.length) { if (stop) return; await this.sleep(POLL_MS); continue; }
      const mine = await store.claim('siemCursors', name, { seq: cur.seq, holder: cur.holder, heldUntil: cur.heldUntil }, { holder: gatewayId, heldUntil: now + this.leaseMs });
      if (!mine) continue; // someone else moved it meanwhile: look again
      let error: string | null = null;
      try {
        await this.sink.send(events, clock.now(), this.abort.signal);
      } catch (e) {
        error = e instanceof DeliveryError ? e.message : (e as Error)?.message ?? String(e);
      }
      const at = clock.now();
      if (!error) {
        const last = events[events.length - 1]!.seq;
        await store.claim('siemCursors', name, { seq: cur.seq, holder: gatewayId }, { seq: last, ackAt: at, failures: 0, lastError: null, updatedAt: at, heldUntil: at + this.leaseMs });
        if (this.failures) {
          this.d.log.info({ sink: name, after: this.failures }, 'SIEM sink receives again');
          void this.d.audit('siem.recovered', name, { failures: this.failures, seq: last }).catch(() => undefined);
        }
        this.failures = 0;
        continue;
      }
      this.failures++;
      await store.claim('siemCursors', name, { seq: cur.seq, holder: gatewayId }, { failures: this.failures, lastError: error, lastErrorAt: at, updatedAt: at }).catch(() => null);
      this.d.log.warn({ sink: name, failures: this.failures, error }, 'SIEM batch not acknowledged; it is sent again');
      if (this.failures === 1) void this.d.audit('siem.failing', name, { error, seq: cur.seq }).catch(() => undefined);
      if (stop) return;
      await this.sleep(Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** (this.failures - 1)));
    }
  }

  /** Drain up to `seq` for at most drainMs (an unfinished batch is then cut off), then end. */
  async stop(seq: number, drainMs: number): Promise<void> {
    this.stopping = { seq, deadline: Date.now() + drainMs };
    this.wake();
    const t = setTimeout(() => this.abort.abort(), drainMs);
    t.unref();
    await this.loopDone;
    clearTimeout(t);
  }
}
