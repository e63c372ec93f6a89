import { z } from 'zod';
import { parseDuration } from '../../../policies/config.js';
import { HttpError } from '../server.js';
import type { ApiServices } from '../services.js';
import { credentialLabel, durationField, ok, parse, str, type AddRoute } from './route.js';

/** Who am I, and my personal API tokens. */
export function mountTokenRoutes(add: AddRoute, s: Pick<ApiServices, 'config' | 'tokens' | 'links' | 'audit' | 'locks' | 'roles' | 'kill'>): void {
  add({ method: 'GET', path: '/api/v1/me', summary: 'The signed-in identity', handler: async (req) => {
    const lock = await s.locks.identityLock(req.principal.sub);
    const { credential, ...me } = req.principal;
    return ok({
      ...me, soc: s.roles.isSoc(req.principal), approver: s.roles.isApprover(req.principal),
      credential: credential ? { kind: credential.kind, id: credential.id, idpLinked: credential.linkId !== null } : null,
      locked: lock ? { id: lock.id, reason: lock.reason } : null,
    });
  } });
  const maxTokenTtlMs = s.tokens.maxTtlMs;
  add({ method: 'POST', path: '/api/v1/tokens', summary: `Create a personal API token (lifetime at most gateway.maxTokenTtl)`, body: { name: 'string', ttl: 'duration (e.g. 7d; default and maximum gateway.maxTokenTtl)' }, handler: async (req) => {
    const b = parse(z.object({ name: str(100), ttl: durationField() }), req);
    let ttlMs = maxTokenTtlMs;
    if (b.ttl !== undefined) {
      try { ttlMs = parseDuration(b.ttl); } catch { throw new HttpError(400, 'ttl: a duration such as 12h or 7d', { field: 'ttl' }); }
    }
    if (ttlMs <= 0 || ttlMs > maxTokenTtlMs) {
      throw new HttpError(400, `ttl: between 1s and ${s.config.gateway.maxTokenTtl} (gateway.maxTokenTtl)`, { field: 'ttl' });
    }
    // A token made by a signed-in person is re-validated with that person's IdP sign-in.
    const linkId = req.principal.credential?.linkId ?? null;
    const { token, record } = await s.tokens.create(req.principal.sub, b.name, ttlMs, req.principal.mfaAt, linkId);
    if (linkId) await s.links.extend(linkId, record.expiresAt);
    await s.audit.append(req.principal.sub, 'token.created', record.id, { name: b.name, expiresAt: record.expiresAt, link: linkId, by: credentialLabel(req.principal) });
    return ok({ id: record.id, name: record.name, token: token.reveal(), expiresAt: new Date(record.expiresAt).toISOString() }, 201);
  } });
  add({ method: 'GET', path: '/api/v1/tokens', summary: 'My API tokens with their state (active, expired, revoked, suspended) and last use; never their values', handler: async (req) => {
    const links = new Map<string, Awaited<ReturnType<typeof s.links.get>>>();
    const out = [];
    for (const t of await s.tokens.list(req.principal.sub)) {
      const linkId = t.linkId ?? null;
      if (linkId && !links.has(linkId)) links.set(linkId, await s.links.get(linkId));
      const link = linkId ? links.get(linkId) ?? null : null;
      const failed = linkId !== null && (!link || link.state === 'failed');
      out.push({
        id: t.id, name: t.name, state: s.tokens.state(t, failed), createdAt: t.createdAt, expiresAt: t.expiresAt, lastUsedAt: t.lastUsedAt,
        revokedAt: t.revokedAt, idpLinked: linkId !== null, validatedAt: link?.validatedAt ?? null,
        suspendedAt: failed ? link?.failedAt ?? null : null, suspendedReason: failed ? link?.failReason ?? 'the sign-in behind it is gone' : null,
        current: req.principal.credential?.kind === 'token' && req.principal.credential.id === t.id,
      });
    }
    return ok(out);
  } });
  add({ method: 'DELETE', path: '/api/v1/tokens/{id}', summary: 'Revoke one of my API tokens: the connection secrets it issued stop working and its live sessions end', handler: async (req) => {
    const id = req.params['id']!;
    if (!(await s.tokens.revoke(req.principal.sub, id))) throw new HttpError(404, 'no such token');
    const ended = await s.kill.endTokenSessions(id);
    await s.audit.append(req.principal.sub, 'token.revoked', id, { sessionsEnded: ended });
    return ok({ ok: true, sessionsEnded: ended });
  } });
}
