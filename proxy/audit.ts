import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Store, AuditEventRecord } from './store/types.js';
import type { Clock } from '../policies/clock.js';
import { runNotify } from './notify.js';
import type { AuditAction } from './audit-events.js';

export const GENESIS = '0'.repeat(64);
/** The HKDF label of the audit key under the gateway key. */
export const AUDIT_KEY_LABEL = 'audit';
/** The `type` of a checkpoint line (file, command/syslog); lines of other types are ignored in external copies. */
export const CHECKPOINT_TYPE = 'tollgate.audit.checkpoint';
const HEAD_KV = 'audit.head';
/** Events per store transaction at most. */
const MAX_BATCH = 500;

/** JSON with object keys sorted at every depth, so the hash does not depend on key order. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v ?? null);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
}

export function eventHash(prevHash: string, e: Omit<AuditEventRecord, 'hash' | 'prevHash' | 'mac'>): string {
  return createHash('sha256').update(prevHash).update('\n').update(canonicalJson({ seq: e.seq, at: e.at, actor: e.actor, action: e.action, subject: e.subject, data: e.data })).digest('hex');
}

/** Strip anything that looks like a secret before it reaches the append-only log. */
export function scrub(data: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(data)) {
    if (/pass(word)?|secret|token|private.?key|cookie/i.test(k) && typeof v === 'string') out[k] = '<redacted>';
    else if (v && typeof v === 'object' && !Array.isArray(v)) out[k] = scrub(v as Record<string, unknown>);
    else out[k] = v;
  }
  return out;
}

/** One signed checkpoint: the chain's head at a time, written outside the store. */
export interface AuditCheckpoint { type: typeof CHECKPOINT_TYPE; gateway: string; seq: number; hash: string; at: number; mac: string }

/** Which check of `verify` failed. */
export type AuditCheck =
  | 'sequence' | 'hash-link' | 'content' | 'hmac'
  | 'missing-head' | 'head-hmac' | 'head-mismatch'
  | 'checkpoint-file' | 'checkpoint-hmac' | 'checkpoint-mismatch' | 'checkpoint-beyond-end';

export type AuditVerifyResult =
  | { ok: true; count: number; head: string; checkpoints: number }
  | { ok: false; check: AuditCheck; count: number; brokenAt: number; detail: string };

export interface AuditLogOptions {
  /** The audit key: the gateway key's deriveKey(AUDIT_KEY_LABEL). Without it no event can be keyed or verified. */
  key: Buffer;
  /** Failures of appends nobody awaits (fire-and-forget events). */
  onError?: (e: unknown) => void;
  /** Where signed checkpoints go: an append-only file and/or a command (the line on stdin, e.g. `logger` to syslog). */
  checkpoints?: { file?: string | null; command?: string[] | null; gatewayId: string; log: Logger };
}

type Failure = Extract<AuditVerifyResult, { ok: false }>;
type Draft = Pick<AuditEventRecord, 'at' | 'actor' | 'action' | 'subject' | 'data'>;
interface Pending { draft: Draft; resolve: (e: AuditEventRecord) => void; reject: (e: unknown) => void }

/** PostgreSQL text cannot hold U+0000: clean it before hashing, so the stored row is what was hashed. */
const clean = (s: string) => (s.includes('\u0000') ? s.replaceAll('\u0000', '\uFFFD') : s);
const fail = (check: AuditCheck, count: number, brokenAt: number, detail: string): Failure => ({ ok: false, check, count, brokenAt, detail });

/**
 * The append-only audit log: each event carries the hash of the previous one and an HMAC under the
 * audit key, the head (seq, hash, HMAC) is kept apart from the rows, and signed checkpoints of the
 * head go outside the store. Someone with write access to the store alone can neither rewrite
 * history (no key for the HMACs) nor cut its end undetected (the head, then the checkpoints).
 *
 * Appending is one store operation (Store.appendAudit): under the store's audit lock the last event
 * is read and the next ones are chained onto it, so gateways sharing a store grow one chain. Events
 * appended while a write is under way queue up and go in the next batch: one transaction, however
 * many events arrive meanwhile.
 */
export class AuditLog {
  private tail: Promise<unknown> = Promise.resolve();
  private pending: Pending[] = [];
  private flushScheduled = false;
  private listeners = new Set<(e: AuditEventRecord) => void>();
  private closed = false;
  private readonly key: Buffer;
  private readonly onError: (e: unknown) => void;
  private lastCheckpointSeq = 0;
  /** The checkpoint file does not exist yet: the first event writes one at once. */
  private firstCheckpointDue: boolean;

  constructor(private store: Store, private clock: Clock, private opts: AuditLogOptions) {
    if (opts.key.length !== 32) throw new Error('the audit key must be 32 bytes');
    this.key = opts.key;
    this.onError = opts.onError ?? (() => undefined);
    this.firstCheckpointDue = !!opts.checkpoints?.file && !existsSync(opts.checkpoints.file);
  }

  private mac(kind: 'event' | 'head' | 'checkpoint', ...parts: (string | number)[]): string {
    return createHmac('sha256', this.key).update([kind, ...parts].join('\n')).digest('hex');
  }

  private macOk(expected: string, got: unknown): boolean {
    return typeof got === 'string' && got.length === expected.length && timingSafeEqual(Buffer.from(got), Buffer.from(expected));
  }

  private headValue(seq: number, hash: string): string {
    return `${seq}:${hash}:${this.mac('head', seq, hash)}`;
  }

  /** Run fn after every pending append (and before later ones). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }

  /** Wait for every pending append, then refuse new ones (the store is about to close). */
  async close(): Promise<void> {
    while (this.flushScheduled || this.pending.length) await this.tail;
    await this.tail;
    this.closed = true;
  }

  /** Queue one event; it is written with whatever else is queued by then, in one store operation. */
  append(actor: string, action: AuditAction, subject: string | null, data: Record<string, unknown> = {}): Promise<AuditEventRecord> {
    const p = new Promise<AuditEventRecord>((resolve, reject) => {
      if (this.closed) { reject(new Error(`audit log closed; event ${action} not written`)); return; }
      const draft: Draft = {
        at: this.clock.now(), actor: clean(actor), action: clean(action), subject: subject === null ? null : clean(subject),
        data: scrub(JSON.parse(JSON.stringify(data)) as Record<string, unknown>),
      };
      this.pending.push({ draft, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        void this.serial(() => this.flush());
      }
    });
    // Callers that do not await (fire-and-forget events) still get failures logged, never an unhandled rejection.
    p.catch((e) => this.onError(e));
    return p;
  }

  /** Write the queue in batches until it is empty; each batch commits (or fails) as one. */
  private async flush(): Promise<void> {
    for (;;) {
      const batch = this.pending.splice(0, MAX_BATCH);
      if (!batch.length) { this.flushScheduled = false; return; }
      let written: AuditEventRecord[];
      try {
        written = await this.store.appendAudit((last) => {
          let prev = last;
          const events = batch.map(({ draft }) => {
            const base = { seq: (prev?.seq ?? 0) + 1, ...draft };
            const prevHash = prev?.hash ?? GENESIS;
            const hash = eventHash(prevHash, base);
            prev = { ...base, prevHash, hash, mac: this.mac('event', base.seq, hash) };
            return prev;
          });
          // The head is kept apart from the rows, so deleting the newest rows is caught too.
          return { events, head: { key: HEAD_KV, value: this.headValue(prev!.seq, prev!.hash) } };
        });
      } catch (e) {
        for (const b of batch) b.reject(e);
        continue;
      }
      if (this.firstCheckpointDue) {
        this.firstCheckpointDue = false;
        try { this.writeCheckpoint(written[written.length - 1]!); } catch (e) { this.onError(e); }
      }
      written.forEach((rec, i) => {
        for (const l of this.listeners) { try { l(rec); } catch { /* listeners must not break auditing */ } }
        batch[i]!.resolve(rec);
      });
    }
  }

  onEvent(fn: (e: AuditEventRecord) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private writeCheckpoint(head: AuditEventRecord): AuditCheckpoint {
    const cp = this.opts.checkpoints!;
    const at = this.clock.now();
    const c: AuditCheckpoint = { type: CHECKPOINT_TYPE, gateway: cp.gatewayId, seq: head.seq, hash: head.hash, at, mac: this.mac('checkpoint', cp.gatewayId, head.seq, head.hash, at) };
    if (cp.file) appendFileSync(cp.file, `${JSON.stringify(c)}\n`, { mode: 0o600 });
    if (cp.command?.length) runNotify(cp.command, c as unknown as Record<string, unknown>, cp.log, 'audit checkpoint command');
    this.lastCheckpointSeq = head.seq;
    return c;
  }

  /** Write a signed checkpoint of the current head (file and/or command) unless the head has not moved since the last one. */
  checkpoint(): Promise<AuditCheckpoint | null> {
    return this.serial(async () => {
      if (!this.opts.checkpoints || this.closed) return null;
      const last = await this.store.lastAudit();
      if (!last || last.seq === this.lastCheckpointSeq) return null;
      this.firstCheckpointDue = false;
      return this.writeCheckpoint(last);
    });
  }

  /**
   * Key the events an older version wrote without an HMAC, once, when the gateway key moves out of
   * the store (the caller makes sure of that: never on a store that was keyed already, or a rewrite
   * that cleared the HMACs would be laundered). Only an intact chain is keyed.
   */
  adoptUnkeyed(): Promise<{ keyed: number } | { keyed: 0; broken: string }> {
    return this.serial(async () => {
      const v = await this.walk({ requireMac: false, checkpoints: new Map() });
      if (v.failure) return { keyed: 0, broken: v.failure.detail };
      const [s, h] = (await this.store.getKv(HEAD_KV) ?? '').split(':');
      if (v.last && (Number(s) !== v.last.seq || h !== v.last.hash)) return { keyed: 0, broken: `the stored head (${s ? `event ${s}` : 'missing'}) does not match the last event ${v.last.seq}` };
      let keyed = 0;
      for (let after = 0; ;) {
        const rows = await this.store.listAudit({ afterSeq: after, limit: 1000 });
        if (!rows.length) break;
        for (const r of rows) {
          if (!r.mac) { await this.store.setAuditMac(r.seq, this.mac('event', r.seq, r.hash)); keyed++; }
          after = r.seq;
        }
      }
      const last = await this.store.lastAudit();
      if (last) await this.store.setKv(HEAD_KV, this.headValue(last.seq, last.hash));
      return { keyed };
    });
  }

  /** Parse checkpoint lines. Own file: every line must be a checkpoint. External copies (syslog): other lines are skipped. */
  private parseCheckpoints(text: string, source: string, strict: boolean, into: Map<number, { hash: string; where: string }[]>): Failure | null {
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (!line) continue;
      const where = `${source} line ${i + 1}`;
      if (!strict && !line.includes(CHECKPOINT_TYPE)) continue;
      let c: Partial<AuditCheckpoint>;
      try { c = JSON.parse(strict ? line : line.slice(line.indexOf('{'))) as Partial<AuditCheckpoint>; } catch { c = {}; }
      if (c.type !== CHECKPOINT_TYPE || typeof c.gateway !== 'string' || !Number.isSafeInteger(c.seq) || (c.seq ?? 0) < 1 || typeof c.hash !== 'string' || typeof c.at !== 'number') {
        return fail('checkpoint-file', 0, 0, `${where} is not a checkpoint`);
      }
      if (!this.macOk(this.mac('checkpoint', c.gateway, c.seq!, c.hash, c.at), c.mac)) {
        return fail('checkpoint-hmac', 0, c.seq!, `${where}: the checkpoint of event ${c.seq} has no valid HMAC (not written by this gateway key)`);
      }
      const list = into.get(c.seq!) ?? [];
      list.push({ hash: c.hash, where });
      into.set(c.seq!, list);
    }
    return null;
  }

  /** Walk the whole chain: sequence, hash links, content hashes, HMACs, and the checkpoints along the way. */
  private async walk(o: { requireMac: boolean; checkpoints: Map<number, { hash: string; where: string }[]>; headSeq?: number; headHash?: string }):
    Promise<{ count: number; last: AuditEventRecord | null; failure: Failure | null }> {
    let prev = GENESIS;
    let expectSeq = 1;
    let count = 0;
    let last: AuditEventRecord | null = null;
    for (let after = 0; ;) {
      const rows = await this.store.listAudit({ afterSeq: after, limit: 1000 });
      if (!rows.length) break;
      for (const r of rows) {
        const f = (check: AuditCheck, detail: string) => ({ count, last, failure: fail(check, count, r.seq, detail) });
        if (r.seq !== expectSeq) return { count, last, failure: fail('sequence', count, expectSeq, `event ${expectSeq} is missing (next present is ${r.seq})`) };
        if (r.prevHash !== prev) return f('hash-link', `event ${r.seq} does not link to the hash of event ${r.seq - 1}`);
        if (eventHash(prev, r) !== r.hash) return f('content', `event ${r.seq} was altered (its content no longer matches its hash)`);
        if ((o.requireMac || r.mac) && !this.macOk(this.mac('event', r.seq, r.hash), r.mac)) {
          return f('hmac', `event ${r.seq} has ${r.mac ? 'a wrong' : 'no'} HMAC: it was written or rewritten without the gateway key`);
        }
        for (const c of o.checkpoints.get(r.seq) ?? []) {
          if (c.hash !== r.hash) return f('checkpoint-mismatch', `event ${r.seq} differs from its signed checkpoint (${c.where}): the log was rewritten`);
        }
        if (o.headSeq === r.seq && o.headHash !== r.hash) return f('head-mismatch', `event ${r.seq} differs from the signed head`);
        prev = r.hash;
        expectSeq++;
        count++;
        last = r;
        after = r.seq;
      }
    }
    return { count, last, failure: null };
  }

  /**
   * Verify the log and say which check failed: the chain (sequence, hash link, content, HMAC), the
   * signed head (missing, forged, or beyond the end) and the signed checkpoints (own file and any
   * external copies, e.g. lines from a syslog server: mismatch, or pointing beyond the end).
   */
  async verify(opts: { checkpointFiles?: string[] } = {}): Promise<AuditVerifyResult> {
    // Checkpoints and head are read before the rows: events appended meanwhile only extend the chain.
    const checkpoints = new Map<number, { hash: string; where: string }[]>();
    const own = this.opts.checkpoints?.file;
    let ownMissing = false;
    if (own) {
      if (existsSync(own)) {
        const f = this.parseCheckpoints(readFileSync(own, 'utf8'), own, true, checkpoints);
        if (f) return f;
      } else ownMissing = true;
    }
    for (const file of opts.checkpointFiles ?? []) {
      if (!existsSync(file)) return fail('checkpoint-file', 0, 0, `the checkpoint copy ${file} does not exist`);
      const f = this.parseCheckpoints(readFileSync(file, 'utf8'), file, false, checkpoints);
      if (f) return f;
    }
    const headRaw = await this.store.getKv(HEAD_KV);
    let headSeq: number | undefined;
    let headHash: string | undefined;
    let headForged = false;
    if (headRaw) {
      const [s, h, m] = headRaw.split(':');
      headSeq = Number(s);
      headHash = h;
      headForged = !Number.isSafeInteger(headSeq) || !h || !this.macOk(this.mac('head', headSeq, h), m);
    }
    const w = await this.walk({ requireMac: true, checkpoints, ...(headForged ? {} : { headSeq, headHash }) });
    if (w.failure) return w.failure;
    const end = w.last?.seq ?? 0;
    if (headRaw && headForged) return fail('head-hmac', w.count, end, 'the stored head has no valid HMAC: it was written without the gateway key');
    if (!headRaw && w.count > 0) return fail('missing-head', w.count, end, `the stored head is missing (the log has ${w.count} events): events may have been deleted at the end`);
    if (headSeq !== undefined && headSeq > end) {
      return fail('head-mismatch', w.count, end + 1, `the log ends at event ${end} but event ${headSeq} was written: events were deleted at the end`);
    }
    const beyond = [...checkpoints.keys()].filter((s) => s > end).sort((a, b) => b - a)[0];
    if (beyond !== undefined) {
      return fail('checkpoint-beyond-end', w.count, end + 1, `the log ends at event ${end} but a signed checkpoint (${checkpoints.get(beyond)![0]!.where}) records event ${beyond}: events were deleted at the end`);
    }
    if (ownMissing && w.count > 0) return fail('checkpoint-file', w.count, end, `the checkpoint file ${own} is missing`);
    return { ok: true, count: w.count, head: w.last?.hash ?? GENESIS, checkpoints: [...checkpoints.values()].reduce((n, l) => n + l.length, 0) };
  }
}
