import { z } from 'zod';
import { parseDuration } from '../../../policies/config.js';
import { PolicyError } from '../../../policies/errors.js';
import { codeRefusal } from '../../../auth/mfa.js';
import { CLIENT_FILES } from '../../../protocols/types.js';
import type { GrantRecord } from '../../store/types.js';
import { HttpError } from '../server.js';
import type { ApiServices } from '../services.js';
import { credentialLabel, durationField, ok, parse, type AddRoute } from './route.js';

/** A grant as the API shows it: its protocol, whether it is active, how long it has left. */
export function grantView(s: Pick<ApiServices, 'clock' | 'config'>, g: GrantRecord) {
  const now = s.clock.now();
  const target = s.config.targets.find((t) => t.name === g.target);
  return { ...g, protocol: target?.protocol ?? null, active: g.state === 'active' && g.expiresAt > now, msLeft: g.state === 'active' ? Math.max(0, g.expiresAt - now) : 0 };
}

type GrantDeps = Pick<ApiServices, 'store' | 'clock' | 'config' | 'engine' | 'roles' | 'locks' | 'audit' | 'secrets' | 'modules' | 'ctx'
  | 'listenerAddress' | 'publicHost' | 'publicUrl' | 'tlsCertSha256' | 'mfa'>;

/** Grants: list, revoke, and the connection secret native clients sign in with. */
export function mountGrantRoutes(add: AddRoute, s: GrantDeps): void {
  add({ method: 'GET', path: '/api/v1/grants', summary: 'Grants: mine, or ?scope=all (SOC); ?state=active|expired|revoked', handler: async (req) => {
    const st = req.query.get('state') as GrantRecord['state'] | null;
    const all = req.query.get('scope') === 'all';
    if (all && !s.roles.isSoc(req.principal)) throw new HttpError(403, 'only the SOC sees all grants');
    const list = await s.store.listGrants({ identity: all ? undefined : req.principal.sub, state: st ?? undefined, limit: 500 });
    return ok(list.map((g) => grantView(s, g)));
  } });
  add({ method: 'GET', path: '/api/v1/grants/{id}', summary: 'One grant', handler: async (req) => {
    const g = await s.store.getGrant(req.params['id']!);
    if (!g || (g.identity !== req.principal.sub && !s.roles.isSoc(req.principal))) throw new HttpError(404, 'no such grant');
    return ok(grantView(s, g));
  } });
  add({ method: 'POST', path: '/api/v1/grants/{id}/revoke', summary: 'Revoke a grant: its live sessions end', body: { reason: 'string' }, handler: async (req) => {
    const b = parse(z.object({ reason: z.string().max(2000).default('revoked') }), req);
    return ok(grantView(s, await s.engine.revokeGrant(req.principal, req.params['id']!, b.reason)));
  } });
  add({
    method: 'POST', path: '/api/v1/grants/{id}/extend', summary: 'Ask for more time on my grant: the same policy as a new request; once approved the grant keeps its id and live sessions continue',
    body: { duration: 'duration to add (e.g. 1h)', reason: 'string' },
    handler: async (req) => {
      const r = await s.engine.extendGrant(req.principal, req.params['id']!, req.json());
      return ok({ ...r, approvals: await s.store.listApprovals(r.id), grant: grantView(s, (await s.store.getGrant(req.params['id']!))!) }, 201);
    },
  });
  add({ method: 'POST', path: '/api/v1/grants/{id}/checkin', summary: 'Check a checked-out account in before the grant ends: its password rotates, the next in the queue gets it', handler: async (req) => (
    ok(grantView(s, await s.engine.checkIn(req.principal, req.params['id']!)))
  ) });
  add({ method: 'GET', path: '/api/v1/checkouts', summary: 'Checked-out accounts: who holds each (and until when), who waits for it', handler: async (req) => {
    const soc = s.roles.isSoc(req.principal) || s.roles.isApprover(req.principal);
    const me = req.principal.sub;
    // Everyone sees who holds an account (whom to ask); grant and request ids only the SOC, approvers and the people concerned.
    return ok((await s.engine.checkouts()).map((c) => ({
      ...c,
      holder: c.holder && { ...c.holder, grantId: soc || c.holder.identity === me ? c.holder.grantId : null },
      // Whether I, the holder, may reveal its password (POST /api/v1/grants/{id}/reveal).
      reveal: !!c.holder && c.holder.identity === me && s.engine.revealAllowed(c.holder.target, c.holder.role),
      queue: c.queue.map((q) => ({ ...q, requestId: soc || q.requester === me ? q.requestId : null })),
    })));
  } });
  add({ method: 'POST', path: '/api/v1/grants/{id}/secret', summary: 'A connection secret for native clients (single-use unless reusable); targets with MFA at connect need a fresh MFA or an authenticator code', body: { reusable: 'boolean', ttl: 'duration (optional)', mfaCode: 'authenticator code (targets with MFA at connect, when the sign-in has no fresh MFA)' }, handler: async (req) => {
    const b = parse(z.object({ reusable: z.boolean().default(false), ttl: durationField(), mfaCode: z.string().trim().max(16).optional() }), req);
    const g = await s.store.getGrant(req.params['id']!);
    if (!g || g.identity !== req.principal.sub) throw new HttpError(404, 'no such grant of yours');
    const now = s.clock.now();
    if (g.state !== 'active' || g.expiresAt <= now) throw new HttpError(409, `the grant is ${g.state === 'active' ? 'expired' : g.state}`);
    const target = s.config.targets.find((t) => t.name === g.target);
    if (!target) throw new HttpError(409, `target ${g.target} is no longer configured`);
    const lock = await s.locks.covering({ identity: g.identity, target: g.target, grantId: g.id });
    if (lock) {
      await s.audit.append(req.principal.sub, 'api.refused', lock.id, { code: 'locked', method: req.method, path: req.path, grant: g.id });
      throw new HttpError(403, `access is locked (${lock.scope} ${lock.value}): ${lock.reason}`, { code: 'locked' });
    }
    // MFA at connect time: the sign-in's MFA must be fresh, or an authenticator code comes with the ask;
    // the secret then lives no longer than that MFA counts as fresh.
    let mfaUntil: number | undefined;
    let mfaVia: 'sign-in' | 'code' | null = null;
    if (await s.engine.connectMfaNeeded(g)) {
      if (s.engine.hasFreshMfa(req.principal)) {
        mfaVia = 'sign-in';
        mfaUntil = req.principal.mfaAt! + s.engine.mfaMaxAge;
      } else if (b.mfaCode) {
        const r = await s.mfa.verify(req.principal.sub, b.mfaCode);
        if (r !== 'ok') {
          await s.audit.append(req.principal.sub, 'secret.refused', g.id, { code: 'mfa_required', reason: r, grant: g.id, target: g.target });
          throw new PolicyError('mfa_required', `${g.target} needs MFA to connect, and ${codeRefusal(r)}`, 'mfaCode');
        }
        mfaVia = 'code';
        mfaUntil = now + s.engine.mfaMaxAge;
      } else {
        throw new PolicyError('mfa_required', `${g.target} needs MFA to connect: ${s.mfa.has(req.principal.sub) ? 'give your authenticator code (mfaCode), or ' : ''}sign in again with your second factor (within the last ${Math.round(s.engine.mfaMaxAge / 60_000)} minutes)`);
      }
    }
    // The secret belongs to the credential asking for it: it ends with it, and never outlives a token.
    const issuedBy = req.principal.credential?.kind === 'key' ? undefined : req.principal.credential;
    const tokenEnd = issuedBy?.kind === 'token' ? (await s.store.getApiToken(issuedBy.id))?.expiresAt : undefined;
    const notAfter = mfaUntil === undefined ? tokenEnd : Math.min(tokenEnd ?? Infinity, mfaUntil);
    let ttlMs = parseDuration(s.config.gateway.secretTtl);
    if (b.ttl !== undefined) {
      try { ttlMs = parseDuration(b.ttl); } catch { throw new HttpError(400, 'ttl: a duration such as 10m', { field: 'ttl' }); }
    }
    const mod = s.modules.get(target.protocol);
    const { secret, record } = await s.secrets.issue({
      grant: g, protocol: target.protocol, reusable: b.reusable, ttlMs,
      verifiers: (v) => (mod?.secretVerifiers ? mod.secretVerifiers(s.ctx(mod.name), target, v) : {}),
      length: mod?.secretLength?.(target),
      issuedBy, notAfter,
    });
    await s.audit.append(req.principal.sub, 'secret.issued', record.id, { grant: g.id, target: g.target, reusable: b.reusable, expiresAt: record.expiresAt, by: credentialLabel(req.principal), ...(mfaVia ? { mfa: mfaVia } : {}) });
    const addr = s.listenerAddress(target.protocol);
    const host = s.publicHost;
    const port = addr?.port ?? 0;
    const info = {
      protocol: target.protocol, host, port, username: target.name, secret: secret.reveal(), target,
      caUrl: `${s.publicUrl}/api/v1/ca.pem`, gatewayUrl: s.publicUrl, certSha256: s.tlsCertSha256(),
    };
    // Printed commands fetch the CA / known_hosts into these files themselves; `tollgate connect` fills in the placeholders.
    const commands = mod?.clientCommands && addr ? mod.clientCommands({ ...info, files: { ca: 'tollgate-ca.pem', knownHosts: 'tollgate_known_hosts' } }) : {};
    const native = mod?.nativeClient && addr ? mod.nativeClient({ ...info, files: { ...CLIENT_FILES } }) : null;
    return ok({
      id: record.id, username: target.name, secret: secret.reveal(), host, port, protocol: target.protocol,
      reusable: record.reusable, expiresAt: new Date(record.expiresAt).toISOString(), commands, native,
    }, 201);
  } });
}
