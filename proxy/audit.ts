import { createHash } from 'node:crypto';
import type { Store, AuditEventRecord } from './store/types.js';
import type { Clock } from '../policies/clock.js';

export const GENESIS = '0'.repeat(64);

/** JSON with object keys sorted at every depth, so the hash does not depend on key order. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v ?? null);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
}

export function eventHash(prevHash: string, e: Omit<AuditEventRecord, 'hash' | 'prevHash'>): string {
  return createHash('sha256').update(prevHash).update('\n').update(canonicalJson({ seq: e.seq, at: e.at, actor: e.actor, action: e.action, subject: e.subject, data: e.data })).digest('hex');
}

/** Strip anything that looks like a secret before it reaches the append-only log. */
function scrub(data: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(data)) {
    if (/pass(word)?|secret|token|private.?key|cookie/i.test(k) && typeof v === 'string') out[k] = '<redacted>';
    else if (v && typeof v === 'object' && !Array.isArray(v)) out[k] = scrub(v as Record<string, unknown>);
    else out[k] = v;
  }
  return out;
}

/** The append-only, hash-chained audit log. Appends are serialized in-process. */
export class AuditLog {
  private tail: Promise<unknown> = Promise.resolve();
  private listeners = new Set<(e: AuditEventRecord) => void>();
  private closed = false;
  constructor(private store: Store, private clock: Clock, private onError: (e: unknown) => void = () => undefined) {}

  /** Wait for every pending append, then refuse new ones (the store is about to close). */
  async close(): Promise<void> {
    await this.tail;
    this.closed = true;
  }

  append(actor: string, action: string, subject: string | null, data: Record<string, unknown> = {}): Promise<AuditEventRecord> {
    const run = async () => {
      if (this.closed) throw new Error(`audit log closed; event ${action} not written`);
      const last = await this.store.lastAudit();
      const base = { seq: (last?.seq ?? 0) + 1, at: this.clock.now(), actor, action, subject, data: scrub(JSON.parse(JSON.stringify(data)) as Record<string, unknown>) };
      const prevHash = last?.hash ?? GENESIS;
      const rec: AuditEventRecord = { ...base, prevHash, hash: eventHash(prevHash, base) };
      await this.store.appendAudit(rec);
      // The head (seq:hash) is kept apart from the rows, so deleting the newest rows is caught too.
      await this.store.setKv('audit.head', `${rec.seq}:${rec.hash}`);
      for (const l of this.listeners) { try { l(rec); } catch { /* listeners must not break auditing */ } }
      return rec;
    };
    const p = this.tail.then(run, run);
    this.tail = p.catch(() => undefined);
    // Callers that do not await (fire-and-forget events) still get failures logged, never an unhandled rejection.
    p.catch((e) => this.onError(e));
    return p;
  }

  onEvent(fn: (e: AuditEventRecord) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Walk the whole chain; report the first broken link (altered, deleted or inserted row). */
  async verify(): Promise<{ ok: true; count: number; head: string } | { ok: false; count: number; brokenAt: number; detail: string }> {
    let prev = GENESIS;
    let expectSeq = 1;
    let count = 0;
    const PAGE = 1000;
    for (let after = 0; ;) {
      const rows = await this.store.listAudit({ afterSeq: after, limit: PAGE });
      if (!rows.length) break;
      for (const r of rows) {
        if (r.seq !== expectSeq) return { ok: false, count, brokenAt: expectSeq, detail: `event ${expectSeq} is missing (next present is ${r.seq})` };
        if (r.prevHash !== prev) return { ok: false, count, brokenAt: r.seq, detail: `event ${r.seq} does not link to the hash of event ${r.seq - 1}` };
        const h = eventHash(prev, r);
        if (h !== r.hash) return { ok: false, count, brokenAt: r.seq, detail: `event ${r.seq} was altered (its content no longer matches its hash)` };
        prev = r.hash;
        expectSeq++;
        count++;
        after = r.seq;
      }
    }
    const head = await this.store.getKv('audit.head');
    if (head && head !== `${expectSeq - 1}:${prev}`) {
      const [seq] = head.split(':');
      return { ok: false, count, brokenAt: expectSeq, detail: `the log ends at event ${expectSeq - 1} but event ${seq} was written: events were deleted or altered at the end` };
    }
    return { ok: true, count, head: prev };
  }
}
