import type { ApiServices } from '../services.js';
import { ok, type AddRoute } from './route.js';
import { storedNames } from '../../audit-events.js';

/** The audit log (SOC): search, verify, export for a SIEM. */
export function mountAuditRoutes(add: AddRoute, s: Pick<ApiServices, 'store' | 'audit'>): void {
  add({ method: 'GET', path: '/api/v1/audit', summary: 'Audit events (SOC): ?actor=&action=(a name from proxy/audit-events.ts, also matching its older aliases, or prefix*)&subject=&since=&until=&afterSeq=&limit=', auth: 'soc', handler: async (req) => {
    const q = req.query;
    const n = (k: string) => (q.get(k) ? Number(q.get(k)) : undefined);
    // An action name finds the events written under its older names too (proxy/audit-events.ts).
    const action = q.get('action') ?? undefined;
    return ok(await s.store.listAudit({ actor: q.get('actor') ?? undefined, action: action && !action.endsWith('*') ? storedNames(action) : action, subject: q.get('subject') ?? undefined, since: n('since'), until: n('until'), afterSeq: n('afterSeq'), limit: Math.min(n('limit') ?? 500, 5000) }));
  } });
  add({ method: 'GET', path: '/api/v1/audit/verify', summary: 'Verify the audit log: hash chain, HMACs, signed head and checkpoints; names the failed check (SOC)', auth: 'soc', handler: async () => ok(await s.audit.verify()) });
  add({ method: 'GET', path: '/api/v1/audit/export', summary: 'All audit events as JSON lines for a SIEM (SOC)', auth: 'soc', handler: async (req) => {
    const lines: string[] = [];
    for (let after = Number(req.query.get('afterSeq') ?? 0) || 0; ;) {
      const rows = await s.store.listAudit({ afterSeq: after, limit: 1000 });
      if (!rows.length) break;
      for (const r of rows) { lines.push(JSON.stringify(r)); after = r.seq; }
    }
    return { status: 200, headers: { 'content-type': 'application/x-ndjson' }, body: lines.length ? `${lines.join('\n')}\n` : '' };
  } });
}
