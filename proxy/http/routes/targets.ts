import { z } from 'zod';
import { HttpError } from '../server.js';
import type { ApiServices } from '../services.js';
import { ok, parse, type AddRoute } from './route.js';
import type { CheckResult } from '../../../protocols/types.js';
import { checkStageOf } from '../../../protocols/net.js';

/** Targets I may request; for the SOC, checking a target and trusting its new host key. */
export function mountTargetRoutes(add: AddRoute, s: Pick<ApiServices, 'config' | 'engine' | 'roles' | 'modules' | 'ctx' | 'audit'>): void {
  const targetNamed = (name: string | undefined) => {
    const t = s.config.targets.find((x) => x.name === name);
    if (!t) throw new HttpError(404, 'no such target');
    return t;
  };
  add({ method: 'GET', path: '/api/v1/targets', summary: 'Targets I may request (all targets for the SOC)', handler: (req) => {
    const el = s.engine.eligible(req.principal);
    const list = el.map((e) => ({ name: e.target.name, protocol: e.target.protocol, risk: e.risk, description: e.target.description ?? null, roles: e.roles, maxDurationMs: e.maxDurationMs, policy: e.policy }));
    if (s.roles.isSoc(req.principal) && req.query.get('all') === '1') {
      return ok(s.config.targets.map((t) => ({ name: t.name, protocol: t.protocol, risk: t.risk, description: t.description ?? null, roles: t.roles.map((r) => r.name), eligible: list.some((x) => x.name === t.name) })));
    }
    return ok(list);
  } });
  add({ method: 'POST', path: '/api/v1/targets/{name}/check', summary: 'Dial a target with its admin credential (SOC): {ok, detail}, and when not ok the stage that failed (config, dial, tls, identity, auth, provision, protocol)', auth: 'soc', handler: async (req) => {
    const t = targetNamed(req.params['name']);
    const mod = s.modules.get(t.protocol);
    const result: CheckResult = !mod?.checkTarget
      ? { ok: false, stage: 'config', detail: `the ${t.protocol} module cannot check targets` }
      : await mod.checkTarget(s.ctx(mod.name), t).catch((e: Error): CheckResult => ({ ok: false, stage: checkStageOf(e, 'protocol'), detail: e.message }));
    return ok(result);
  } });
  add({ method: 'POST', path: '/api/v1/targets/{name}/repin', summary: "Trust a target's new SSH host key after a legitimate rotation (SOC)", auth: 'soc', body: { fingerprint: 'SHA256:... the key must be (optional)' }, handler: async (req) => {
    const b = parse(z.object({ fingerprint: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'a host key fingerprint as "SHA256:..." (ssh-keygen -lf)').optional() }), req);
    const t = targetNamed(req.params['name']);
    const mod = s.modules.get(t.protocol);
    if (!mod?.repinTarget) throw new HttpError(409, `${t.protocol} targets have no pinned identity to renew`);
    const r = await mod.repinTarget(s.ctx(mod.name), t, { fingerprint: b.fingerprint });
    await s.audit.append(req.principal.sub, r.ok ? 'target.repinned' : 'target.repin_failed', t.name, { target: t.name, previous: r.previous, pinned: r.pinned, detail: r.detail });
    if (!r.ok) throw new HttpError(409, r.detail, { previous: r.previous });
    return ok(r);
  } });
}
