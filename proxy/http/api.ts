import { readFileSync, existsSync } from 'node:fs';
import { PolicyError } from '../../policies/engine.js';
import { z } from 'zod';
import type { Gateway } from '../gateway.js';
import type { Principal } from '../../auth/types.js';
import { HttpError, type HttpReply, type HttpRequest, type Handler } from './server.js';
import { openApiDocument, type ApiRoute } from './openapi.js';
import { parseDuration } from '../../policies/config.js';
import { timingSafeEqual } from 'node:crypto';
import { mountAuthRoutes } from './auth-routes.js';
import { isUnsafeMethod } from './web-security.js';
import { resolveSecret } from '../config.js';
import { mountLive } from './live.js';
import { publicKeyFingerprint } from './keys.js';
import { parseSshPublicKey, verifySshSignature } from '../../auth/sshsig.js';
import { refuseIfLocked, identityLock } from './guards.js';
import type { CallerResult } from '../../auth/lifecycle.js';
import { lockMatches } from '../sessions.js';
import type { LockRecord, SessionRecord, GrantRecord } from '../store/types.js';
import { CLIENT_FILES } from '../../protocols/types.js';

export interface Authed extends HttpRequest { principal: Principal }

function isSoc(gw: Gateway, p: Principal): boolean {
  return p.groups.some((g) => gw.config.gateway.socGroups.includes(g));
}

function isApprover(gw: Gateway, p: Principal): boolean {
  return gw.config.policies.some((pol) => pol.approvers.some((g) => p.groups.includes(g)) || (pol.stages ?? []).some((s) => s.groups.some((g) => p.groups.includes(g))) || pol.escalateTo.some((g) => p.groups.includes(g)));
}

/** The answer of principalOf per request (keyed by its headers): the front checks it before reading the body, the handler reuses it. */
const principals = new WeakMap<Record<string, string>, Promise<Principal | null>>();

/** Why a request carried credentials that did not establish a principal (suspended token, IdP down...). */
const authProblems = new WeakMap<Record<string, string>, { status: number; message: string }>();
export function authProblem(req: HttpRequest): { status: number; message: string } | undefined {
  return authProblems.get(req.headers);
}

/**
 * Who is calling: Bearer API token or the web session cookie, re-validated with the IdP when due
 * (auth/lifecycle.ts). null when neither is valid; authProblem(req) then says why.
 */
export function principalOf(gw: Gateway, req: HttpRequest): Promise<Principal | null> {
  let p = principals.get(req.headers);
  if (!p) {
    p = lookupPrincipal(gw, req);
    principals.set(req.headers, p);
  }
  return p;
}

async function lookupPrincipal(gw: Gateway, req: HttpRequest): Promise<Principal | null> {
  const auth = req.headers['authorization'];
  let r: CallerResult | null = null;
  if (auth) {
    const m = /^Bearer\s+(\S+)$/i.exec(auth);
    r = m ? await gw.callers.fromToken(m[1]!) : { ok: false, status: 401, message: 'the Authorization header must be "Bearer <API token>"' };
  } else {
    const cookie = req.cookie(gw.http.security.sessionCookie);
    if (cookie) r = await gw.callers.fromCookie(cookie);
  }
  if (!r) return null;
  if (!r.ok) { authProblems.set(req.headers, r); return null; }
  return r.principal;
}

/** SSHSIG namespace of key registration challenges, and how long a challenge may be used. */
export const KEY_NAMESPACE = 'tollgate-key-registration';
const KEY_CHALLENGE_TTL_MS = 5 * 60_000;

const str = (max = 500) => z.string().trim().min(1).max(max);

export function mountApi(gw: Gateway): void {
  const routes: ApiRoute[] = [];
  const http = gw.http;
  // Authenticate from the headers before a body is read (no credential at all: decided at once).
  http.signedIn = (req) => (req.headers['authorization'] || req.cookie(gw.http.security.sessionCookie) ? principalOf(gw, req).then((p) => p !== null) : false);

  const add = (r: ApiRoute & { handler: (req: Authed) => Promise<HttpReply> | HttpReply }) => {
    routes.push(r);
    const h: Handler = async (req) => {
      if (r.auth === false) return r.handler(req as Authed);
      const p = await principalOf(gw, req);
      if (!p) throw new HttpError(authProblem(req)?.status ?? 401, authProblem(req)?.message ?? 'sign in first: send "Authorization: Bearer <API token>" or use the portal');
      await refuseIfLocked(gw, r, p);
      // A browser sends the session cookie wherever the request comes from: a change made with it
      // must come from the gateway's own pages, as JSON (CSRF). API tokens are not sent by browsers.
      if (p.via === 'web' && isUnsafeMethod(req.method)) {
        gw.http.security.requireSameOrigin(req);
        gw.http.security.requireJson(req);
      }
      if (r.auth === 'soc' && !isSoc(gw, p)) throw new HttpError(403, `${p.sub} is not in a SOC group (${gw.config.gateway.socGroups.join(', ')})`);
      return r.handler(Object.assign(req, { principal: p }));
    };
    http.route(r.method, r.path.replace(/\{(\w+)\}/g, ':$1'), h);
  };

  const ok = (body: unknown, status = 200): HttpReply => ({ status, body: body as object });
  const parse = <T>(schema: z.ZodType<T>, req: HttpRequest): T => {
    const r = schema.safeParse(req.json());
    if (!r.success) {
      const i = r.error.issues[0]!;
      const field = i.path.join('.') || 'body';
      throw new HttpError(400, `${field}: ${i.message}`, { field });
    }
    return r.data;
  };

  // ---- health and metrics
  // /healthz is unauthenticated: it says the gateway answers and its store works, nothing else
  // (no gateway id, targets or session counts; those are in /metrics and the API).
  add({ method: 'GET', path: '/healthz', summary: 'Liveness: the gateway answers and its store works (nothing else)', auth: false, handler: async () => {
    await gw.store.getKv('health');
    return ok({ ok: true });
  } });
  const metricsToken = gw.config.gateway.metricsToken ? Buffer.from(resolveSecret(gw.config.gateway.metricsToken, gw.config, 'gateway.metricsToken').reveal()) : null;
  add({ method: 'GET', path: '/metrics', summary: 'Prometheus metrics (with gateway.metricsToken: "Authorization: Bearer <token>")', auth: false, handler: async (req): Promise<HttpReply> => {
    if (metricsToken) {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers['authorization'] ?? '');
      const got = Buffer.from(m?.[1] ?? '');
      if (got.length !== metricsToken.length || !timingSafeEqual(got, metricsToken)) {
        return { status: 401, headers: { 'www-authenticate': 'Bearer realm="tollgate-metrics"' }, body: { error: 'unauthenticated', message: 'send "Authorization: Bearer <gateway.metricsToken>"' } };
      }
    }
    return { status: 200, headers: { 'content-type': gw.metrics.contentType }, body: await gw.metrics.metrics() };
  } });
  add({ method: 'GET', path: '/api/v1/openapi.json', summary: 'This document', auth: false, handler: () => ok(openApiDocument(routes)) });
  add({ method: 'GET', path: '/api/v1/ca.pem', summary: "The gateway's CA certificate (PEM), for clients that pin it", auth: false, handler: () => ({
    status: 200, headers: { 'content-type': 'application/x-pem-file' }, body: gw.tls.ca || gw.tls.cert,
  }) });

  // ---- me, tokens, keys
  add({ method: 'GET', path: '/api/v1/me', summary: 'The signed-in identity', handler: async (req) => {
    const lock = await identityLock(gw, req.principal.sub);
    const { credential, ...me } = req.principal;
    return ok({
      ...me, soc: isSoc(gw, req.principal), approver: isApprover(gw, req.principal),
      credential: credential ? { kind: credential.kind, id: credential.id, idpLinked: credential.linkId !== null } : null,
      locked: lock ? { id: lock.id, reason: lock.reason } : null,
    });
  } });
  const maxTokenTtlMs = gw.tokens.maxTtlMs;
  add({ method: 'POST', path: '/api/v1/tokens', summary: `Create a personal API token (lifetime at most gateway.maxTokenTtl)`, body: { name: 'string', ttl: 'duration (e.g. 7d; default and maximum gateway.maxTokenTtl)' }, handler: async (req) => {
    const b = parse(z.object({ name: str(100), ttl: z.union([z.string(), z.number()]).optional() }), req);
    let ttlMs = maxTokenTtlMs;
    if (b.ttl !== undefined) {
      try { ttlMs = parseDuration(b.ttl); } catch { throw new HttpError(400, 'ttl: a duration such as 12h or 7d', { field: 'ttl' }); }
    }
    if (ttlMs <= 0 || ttlMs > maxTokenTtlMs) {
      throw new HttpError(400, `ttl: between 1s and ${gw.config.gateway.maxTokenTtl} (gateway.maxTokenTtl)`, { field: 'ttl' });
    }
    // A token made by a signed-in person is re-validated with that person's IdP sign-in.
    const linkId = req.principal.credential?.linkId ?? null;
    const { token, record } = await gw.tokens.create(req.principal.sub, b.name, ttlMs, req.principal.mfaAt, linkId);
    if (linkId) await gw.links.extend(linkId, record.expiresAt);
    await gw.audit.append(req.principal.sub, 'token.created', record.id, { name: b.name, expiresAt: record.expiresAt, link: linkId, by: credentialLabel(req.principal) });
    return ok({ id: record.id, name: record.name, token: token.reveal(), expiresAt: new Date(record.expiresAt).toISOString() }, 201);
  } });
  add({ method: 'GET', path: '/api/v1/tokens', summary: 'My API tokens with their state (active, expired, revoked, suspended) and last use; never their values', handler: async (req) => {
    const links = new Map<string, Awaited<ReturnType<typeof gw.links.get>>>();
    const out = [];
    for (const t of await gw.tokens.list(req.principal.sub)) {
      const linkId = t.linkId ?? null;
      if (linkId && !links.has(linkId)) links.set(linkId, await gw.links.get(linkId));
      const link = linkId ? links.get(linkId) ?? null : null;
      const failed = linkId !== null && (!link || link.state === 'failed');
      out.push({
        id: t.id, name: t.name, state: gw.tokens.state(t, failed), createdAt: t.createdAt, expiresAt: t.expiresAt, lastUsedAt: t.lastUsedAt,
        revokedAt: t.revokedAt, idpLinked: linkId !== null, validatedAt: link?.validatedAt ?? null,
        suspendedAt: failed ? link?.failedAt ?? null : null, suspendedReason: failed ? link?.failReason ?? 'the sign-in behind it is gone' : null,
        current: req.principal.credential?.kind === 'token' && req.principal.credential.id === t.id,
      });
    }
    return ok(out);
  } });
  add({ method: 'DELETE', path: '/api/v1/tokens/{id}', summary: 'Revoke one of my API tokens: the connection secrets it issued stop working and its live sessions end', handler: async (req) => {
    const id = req.params['id']!;
    if (!(await gw.tokens.revoke(req.principal.sub, id))) throw new HttpError(404, 'no such token');
    const ended = await gw.sessions.terminateWhere(
      (s) => s.principal.credential?.kind === 'token' && s.principal.credential.id === id,
      { code: 'revoked', message: 'Tollgate: the API token that opened this session was revoked; the session is closed.' },
    );
    await gw.audit.append(req.principal.sub, 'token.revoked', id, { sessionsEnded: ended });
    return ok({ ok: true, sessionsEnded: ended });
  } });
  // SSH keys: registering one proves possession of its private key by signing a gateway challenge
  // with `ssh-keygen -Y sign -n tollgate-key-registration` (tollgate keys add does it).
  const keyOf = (line: string) => {
    const fp = publicKeyFingerprint(line);
    if (!fp) throw new HttpError(400, 'publicKey: an OpenSSH public key line such as "ssh-ed25519 AAAA... comment"', { field: 'publicKey' });
    if (fp.line.startsWith('sk-')) throw new HttpError(400, 'publicKey: security-key (sk-…) keys cannot prove possession here yet; register an ed25519, ECDSA or RSA key', { field: 'publicKey' });
    const blob = Buffer.from(fp.line.split(' ')[1]!, 'base64');
    let parsed: ReturnType<typeof parseSshPublicKey>;
    try { parsed = parseSshPublicKey(blob); } catch (e) {
      throw new HttpError(400, `publicKey: not a usable key (${(e as Error).message})`, { field: 'publicKey' });
    }
    if (parsed.bits !== undefined && parsed.bits < 2048) throw new HttpError(400, `publicKey: RSA keys must have at least 2048 bits (this one has ${parsed.bits})`, { field: 'publicKey' });
    return { ...fp, blob };
  };
  add({ method: 'POST', path: '/api/v1/keys/challenge', summary: `A challenge to sign with the key to register (ssh-keygen -Y sign -n ${KEY_NAMESPACE})`, body: { publicKey: 'OpenSSH public key line' }, handler: async (req) => {
    const b = parse(z.object({ publicKey: str(16_000) }), req);
    const k = keyOf(b.publicKey);
    const expiresAt = gw.clock.now() + KEY_CHALLENGE_TTL_MS;
    const challenge = gw.key.seal({ p: 'key-registration', s: req.principal.sub, f: k.fingerprint, n: crypto.randomUUID() }, KEY_CHALLENGE_TTL_MS);
    return ok({ challenge, namespace: KEY_NAMESPACE, fingerprint: k.fingerprint, expiresAt: new Date(expiresAt).toISOString(),
      command: `printf %s '<challenge>' > challenge && ssh-keygen -Y sign -n ${KEY_NAMESPACE} -f <private key> challenge` });
  } });
  add({ method: 'POST', path: '/api/v1/keys', summary: 'Register an SSH public key for native sign-in, with proof of possession', body: { publicKey: 'OpenSSH public key line', name: 'string', challenge: 'from POST /api/v1/keys/challenge', signature: `ssh-keygen -Y sign -n ${KEY_NAMESPACE} of the challenge (armored)` }, handler: async (req) => {
    const b = parse(z.object({ publicKey: str(16_000), name: z.string().max(100).default('key'), challenge: z.string().max(4000).optional(), signature: z.string().max(64_000).optional() }), req);
    const k = keyOf(b.publicKey);
    const refuse = async (field: string, message: string): Promise<never> => {
      await gw.audit.append(req.principal.sub, 'key.refused', null, { fingerprint: k.fingerprint, reason: message });
      throw new HttpError(400, `${field}: ${message}`, { field });
    };
    if (!b.challenge || !b.signature) {
      return refuse('signature', `proof of possession is required: get a challenge (POST /api/v1/keys/challenge), sign it with ssh-keygen -Y sign -n ${KEY_NAMESPACE}, and send challenge and signature (tollgate keys add does this)`);
    }
    const c = gw.key.unseal<{ p?: string; s?: string; f?: string }>(b.challenge);
    if (!c || c.p !== 'key-registration') return refuse('challenge', 'expired or not issued by this gateway; ask for a new one');
    if (c.s !== req.principal.sub) return refuse('challenge', 'issued to another identity');
    if (c.f !== k.fingerprint) return refuse('challenge', 'issued for another key');
    const message = Buffer.from(b.challenge, 'utf8');
    let v = verifySshSignature(b.signature, message, KEY_NAMESPACE, k.blob);
    // `echo challenge | ssh-keygen -Y sign` signs it with a trailing newline: the same proof.
    if (!v.ok && v.reason === 'the signature does not verify') {
      const nl = verifySshSignature(b.signature, Buffer.concat([message, Buffer.from('\n')]), KEY_NAMESPACE, k.blob);
      if (nl.ok) v = nl;
    }
    if (!v.ok) return refuse('signature', v.reason);
    if ((await gw.store.listPublicKeys({ fingerprint: k.fingerprint })).length) throw new HttpError(409, 'this key is already registered');
    const rec = { id: crypto.randomUUID(), identity: req.principal.sub, publicKey: k.line, fingerprint: k.fingerprint, name: b.name, createdAt: gw.clock.now() };
    await gw.store.insertPublicKey(rec);
    await gw.audit.append(req.principal.sub, 'key.registered', rec.id, { fingerprint: k.fingerprint, name: b.name, proof: 'sshsig' });
    return ok(rec, 201);
  } });
  add({ method: 'GET', path: '/api/v1/keys', summary: 'My registered public keys', handler: async (req) => ok(await gw.store.listPublicKeys({ identity: req.principal.sub })) });
  add({ method: 'DELETE', path: '/api/v1/keys/{id}', summary: 'Remove a registered public key', handler: async (req) => {
    const mine = (await gw.store.listPublicKeys({ identity: req.principal.sub })).find((k) => k.id === req.params['id']);
    if (!mine) throw new HttpError(404, 'no such key');
    await gw.store.deletePublicKey(mine.id);
    await gw.audit.append(req.principal.sub, 'key.removed', mine.id, { fingerprint: mine.fingerprint });
    return ok({ ok: true });
  } });

  // ---- targets
  add({ method: 'GET', path: '/api/v1/targets', summary: 'Targets I may request (all targets for the SOC)', handler: (req) => {
    const el = gw.engine.eligible(req.principal);
    const list = el.map((e) => ({ name: e.target.name, protocol: e.target.protocol, risk: e.risk, description: e.target.description ?? null, roles: e.roles, maxDurationMs: e.maxDurationMs, policy: e.policy }));
    if (isSoc(gw, req.principal) && req.query.get('all') === '1') {
      return ok(gw.config.targets.map((t) => ({ name: t.name, protocol: t.protocol, risk: t.risk, description: t.description ?? null, roles: t.roles.map((r) => r.name), eligible: list.some((x) => x.name === t.name) })));
    }
    return ok(list);
  } });
  add({ method: 'POST', path: '/api/v1/targets/{name}/check', summary: 'Dial a target with its admin credential (SOC)', auth: 'soc', handler: async (req) => {
    const t = gw.config.targets.find((x) => x.name === req.params['name']);
    if (!t) throw new HttpError(404, 'no such target');
    const mod = gw.modules.get(t.protocol);
    if (!mod?.checkTarget) return ok({ ok: false, detail: `the ${t.protocol} module cannot check targets` });
    try { return ok(await mod.checkTarget(gw.ctx(mod.name), t)); } catch (e) { return ok({ ok: false, detail: (e as Error).message }); }
  } });
  add({ method: 'POST', path: '/api/v1/targets/{name}/repin', summary: "Trust a target's new SSH host key after a legitimate rotation (SOC)", auth: 'soc', body: { fingerprint: 'SHA256:... the key must be (optional)' }, handler: async (req) => {
    const b = parse(z.object({ fingerprint: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'a host key fingerprint as "SHA256:..." (ssh-keygen -lf)').optional() }), req);
    const t = gw.config.targets.find((x) => x.name === req.params['name']);
    if (!t) throw new HttpError(404, 'no such target');
    const mod = gw.modules.get(t.protocol);
    if (!mod?.repinTarget) throw new HttpError(409, `${t.protocol} targets have no pinned identity to renew`);
    const r = await mod.repinTarget(gw.ctx(mod.name), t, { fingerprint: b.fingerprint });
    await gw.audit.append(req.principal.sub, r.ok ? 'target.repinned' : 'target.repin_failed', t.name, { target: t.name, previous: r.previous, pinned: r.pinned, detail: r.detail });
    if (!r.ok) throw new HttpError(409, r.detail, { previous: r.previous });
    return ok(r);
  } });

  // ---- requests
  add({ method: 'POST', path: '/api/v1/requests', summary: 'Request access to a target', body: { target: 'string', role: 'string', duration: 'duration (e.g. 2h) or seconds', reason: 'string' }, handler: async (req) => {
    const r = await gw.engine.createRequest(req.principal, req.json());
    return ok(await requestView(gw, r.id), 201);
  } });
  add({ method: 'GET', path: '/api/v1/requests', summary: 'Requests: mine (default), ?scope=approvable (I can act on), ?scope=all (SOC)', handler: async (req) => {
    const scope = req.query.get('scope') ?? 'mine';
    const state = req.query.get('state') as never ?? undefined;
    let list;
    if (scope === 'approvable') list = await gw.engine.pendingFor(req.principal);
    else if (scope === 'all') {
      if (!isSoc(gw, req.principal) && !isApprover(gw, req.principal)) throw new HttpError(403, 'only approvers and the SOC see all requests');
      list = await gw.store.listRequests({ state, limit: 500 });
    } else list = await gw.store.listRequests({ requester: req.principal.sub, state, limit: 500 });
    return ok(await Promise.all(list.map((r) => requestView(gw, r.id))));
  } });
  add({ method: 'GET', path: '/api/v1/requests/{id}', summary: 'One request with its approvals', handler: async (req) => {
    const v = await requestView(gw, req.params['id']!);
    if (!v) throw new HttpError(404, 'no such request');
    if (v.requester !== req.principal.sub && !isSoc(gw, req.principal) && !isApprover(gw, req.principal)) throw new HttpError(403, 'not your request');
    return ok(v);
  } });
  for (const action of ['approve', 'deny', 'cancel'] as const) {
    add({ method: 'POST', path: `/api/v1/requests/{id}/${action}`, summary: `${action[0]!.toUpperCase()}${action.slice(1)} a request`, body: action === 'cancel' ? undefined : { comment: 'string (optional)' }, handler: async (req) => {
      const b = parse(z.object({ comment: z.string().max(2000).optional() }), req);
      const id = req.params['id']!;
      if (action === 'approve') await gw.engine.approve(req.principal, id, b.comment);
      else if (action === 'deny') await gw.engine.deny(req.principal, id, b.comment);
      else await gw.engine.cancel(req.principal, id);
      return ok(await requestView(gw, id));
    } });
  }

  // ---- break-glass
  add({ method: 'POST', path: '/api/v1/breakglass', summary: 'Emergency access: immediate grant, alert, mandatory review', body: { target: 'string', role: 'string', duration: 'duration', reason: 'string' }, handler: async (req) => ok(grantView(gw, await gw.engine.breakGlass(req.principal, req.json())), 201) });
  add({ method: 'GET', path: '/api/v1/reviews', summary: 'Break-glass reviews (?state=open|closed)', handler: async (req) => {
    const st = req.query.get('state');
    const all = await gw.store.listReviews(st === 'open' || st === 'closed' ? { state: st } : {});
    const p = req.principal;
    const list = isSoc(gw, p) || isApprover(gw, p) || gw.engine.isReviewer(p) ? all : all.filter((r) => r.identity === p.sub);
    // Who may close it is the engine's rule; the portal shows why not.
    return ok(list.map((r) => ({ ...r, closeRefusal: r.state === 'open' ? gw.engine.reviewRefusal(p, r)?.message ?? null : null })));
  } });
  add({ method: 'POST', path: '/api/v1/reviews/{id}/close', summary: 'Close a break-glass review (not by the person who used it)', body: { comment: 'string' }, handler: async (req) => {
    const b = parse(z.object({ comment: str(2000) }), req);
    return ok(await gw.engine.closeReview(req.principal, req.params['id']!, b.comment));
  } });

  // ---- grants
  add({ method: 'GET', path: '/api/v1/grants', summary: 'Grants: mine, or ?scope=all (SOC); ?state=active|expired|revoked', handler: async (req) => {
    const st = req.query.get('state') as GrantRecord['state'] | null;
    const all = req.query.get('scope') === 'all';
    if (all && !isSoc(gw, req.principal)) throw new HttpError(403, 'only the SOC sees all grants');
    const list = await gw.store.listGrants({ identity: all ? undefined : req.principal.sub, state: st ?? undefined, limit: 500 });
    return ok(list.map((g) => grantView(gw, g)));
  } });
  add({ method: 'GET', path: '/api/v1/grants/{id}', summary: 'One grant', handler: async (req) => {
    const g = await gw.store.getGrant(req.params['id']!);
    if (!g || (g.identity !== req.principal.sub && !isSoc(gw, req.principal))) throw new HttpError(404, 'no such grant');
    return ok(grantView(gw, g));
  } });
  add({ method: 'POST', path: '/api/v1/grants/{id}/revoke', summary: 'Revoke a grant: its live sessions end', body: { reason: 'string' }, handler: async (req) => {
    const b = parse(z.object({ reason: z.string().max(2000).default('revoked') }), req);
    return ok(grantView(gw, await gw.engine.revokeGrant(req.principal, req.params['id']!, b.reason)));
  } });
  add({ method: 'POST', path: '/api/v1/grants/{id}/secret', summary: 'A connection secret for native clients (single-use unless reusable)', body: { reusable: 'boolean', ttl: 'duration (optional)' }, handler: async (req) => {
    const b = parse(z.object({ reusable: z.boolean().default(false), ttl: z.union([z.string(), z.number()]).optional() }), req);
    const g = await gw.store.getGrant(req.params['id']!);
    if (!g || g.identity !== req.principal.sub) throw new HttpError(404, 'no such grant of yours');
    const now = gw.clock.now();
    if (g.state !== 'active' || g.expiresAt <= now) throw new HttpError(409, `the grant is ${g.state === 'active' ? 'expired' : g.state}`);
    const target = gw.config.targets.find((t) => t.name === g.target);
    if (!target) throw new HttpError(409, `target ${g.target} is no longer configured`);
    const lock = (await gw.store.listLocks({ active: true, at: now })).find((l) => lockMatches(l, { identity: g.identity, target: g.target, grantId: g.id }));
    if (lock) {
      await gw.audit.append(req.principal.sub, 'api.refused', lock.id, { code: 'locked', method: req.method, path: req.path, grant: g.id });
      throw new HttpError(403, `access is locked (${lock.scope} ${lock.value}): ${lock.reason}`, { code: 'locked' });
    }
    // The secret belongs to the credential asking for it: it ends with it, and never outlives a token.
    const issuedBy = req.principal.credential?.kind === 'key' ? undefined : req.principal.credential;
    const notAfter = issuedBy?.kind === 'token' ? (await gw.store.getApiToken(issuedBy.id))?.expiresAt : undefined;
    let ttlMs = parseDuration(gw.config.gateway.secretTtl);
    if (b.ttl !== undefined) {
      try { ttlMs = parseDuration(b.ttl); } catch { throw new HttpError(400, 'ttl: a duration such as 10m', { field: 'ttl' }); }
    }
    const mod = gw.modules.get(target.protocol);
    const { secret, record } = await gw.secrets.issue({
      grant: g, protocol: target.protocol, reusable: b.reusable, ttlMs,
      verifiers: (s) => (mod?.secretVerifiers ? mod.secretVerifiers(gw.ctx(mod.name), target, s) : {}),
      length: mod?.secretLength?.(target),
      issuedBy, notAfter,
    });
    await gw.audit.append(req.principal.sub, 'secret.issued', record.id, { grant: g.id, target: g.target, reusable: b.reusable, expiresAt: record.expiresAt, by: credentialLabel(req.principal) });
    const addr = gw.listenerAddress(target.protocol);
    const host = gw.publicHost;
    const port = addr?.port ?? 0;
    const info = {
      protocol: target.protocol, host, port, username: target.name, secret: secret.reveal(), target,
      caUrl: `${gw.publicUrl}/api/v1/ca.pem`, gatewayUrl: gw.publicUrl, certSha256: gw.tlsCertSha256(),
    };
    // Printed commands fetch the CA / known_hosts into these files themselves; `tollgate connect` fills in the placeholders.
    const commands = mod?.clientCommands && addr ? mod.clientCommands({ ...info, files: { ca: 'tollgate-ca.pem', knownHosts: 'tollgate_known_hosts' } }) : {};
    const native = mod?.nativeClient && addr ? mod.nativeClient({ ...info, files: { ...CLIENT_FILES } }) : null;
    return ok({
      id: record.id, username: target.name, secret: secret.reveal(), host, port, protocol: target.protocol,
      reusable: record.reusable, expiresAt: new Date(record.expiresAt).toISOString(), commands, native,
    }, 201);
  } });

  // ---- sessions
  const sessionView = (s: SessionRecord) => {
    const live = gw.sessions.get(s.id);
    const grantEnd = live?.grant.expiresAt ?? null;
    const bytes = live ? live.bytes() : { up: s.bytesUp, down: s.bytesDown };
    return { ...s, live: !!live, bytesUp: bytes.up, bytesDown: bytes.down, grantExpiresAt: grantEnd, msLeft: grantEnd ? Math.max(0, grantEnd - gw.clock.now()) : null };
  };
  const canSeeSession = (p: Principal, s: SessionRecord) => s.identity === p.sub || isSoc(gw, p);
  add({ method: 'GET', path: '/api/v1/sessions', summary: 'Sessions (SOC: all; others: their own). ?state=active|ended&identity=&target=&since=&until=', handler: async (req) => {
    const soc = isSoc(gw, req.principal);
    const q = req.query;
    const num = (k: string) => (q.get(k) ? Number(q.get(k)) || Date.parse(q.get(k)!) : undefined);
    const list = await gw.store.listSessions({
      state: (q.get('state') as SessionRecord['state'] | null) ?? undefined,
      identity: soc ? q.get('identity') ?? undefined : req.principal.sub,
      target: q.get('target') ?? undefined, since: num('since'), until: num('until'), limit: Math.min(Number(q.get('limit') ?? 200) || 200, 1000),
    });
    return ok(list.map(sessionView));
  } });
  add({ method: 'GET', path: '/api/v1/sessions/{id}', summary: 'One session with its recordings', handler: async (req) => {
    const s = await gw.store.getSession(req.params['id']!);
    if (!s || !canSeeSession(req.principal, s)) throw new HttpError(404, 'no such session');
    return ok({ ...sessionView(s), recordings: await gw.store.listRecordings({ sessionId: s.id }) });
  } });
  add({ method: 'GET', path: '/api/v1/sessions/{id}/queries', summary: 'Statements recorded in a database session', handler: async (req) => {
    const s = await gw.store.getSession(req.params['id']!);
    if (!s || !canSeeSession(req.principal, s)) throw new HttpError(404, 'no such session');
    return ok(await gw.store.listQueries(s.id, { limit: Math.min(Number(req.query.get('limit') ?? 1000) || 1000, 10_000), offset: Number(req.query.get('offset') ?? 0) || 0 }));
  } });
  add({ method: 'POST', path: '/api/v1/sessions/{id}/kill', summary: 'Terminate a live session (SOC, or its owner)', body: { reason: 'string' }, handler: async (req) => {
    const b = parse(z.object({ reason: z.string().max(2000).default('') }), req);
    const live = gw.sessions.get(req.params['id']!);
    if (!live) {
      const s = await gw.store.getSession(req.params['id']!);
      if (!s || !canSeeSession(req.principal, s)) throw new HttpError(404, 'no such session');
      throw new HttpError(409, 'the session is not live');
    }
    if (live.identity !== req.principal.sub && !isSoc(gw, req.principal)) throw new HttpError(403, 'only the SOC or the session owner may kill it');
    await gw.audit.append(req.principal.sub, 'session.kill', live.id, { reason: b.reason, target: live.target.name });
    gw.sessions.kill(live.id, req.principal.sub, b.reason);
    await gw.sessions.terminateWhere((s) => s.id === live.id, { code: 'killed', message: `Tollgate: session terminated by ${req.principal.sub}${b.reason ? `: ${b.reason}` : ''}.` });
    return ok({ ok: true, id: live.id });
  } });

  // ---- recordings
  add({ method: 'GET', path: '/api/v1/recordings', summary: 'Recordings (SOC): ?identity=&target=&since=&until=', auth: 'soc', handler: async (req) => {
    const q = req.query;
    const sessions = await gw.store.listSessions({ identity: q.get('identity') ?? undefined, target: q.get('target') ?? undefined, since: q.get('since') ? Number(q.get('since')) : undefined, until: q.get('until') ? Number(q.get('until')) : undefined, limit: 500 });
    const out = [];
    for (const s of sessions) out.push({ session: sessionView(s), recordings: await gw.store.listRecordings({ sessionId: s.id }) });
    return ok(out);
  } });
  const recordingFor = async (req: Authed) => {
    const r = await gw.store.getRecording(req.params['id']!);
    if (!r) throw new HttpError(404, 'no such recording');
    const s = await gw.store.getSession(r.sessionId);
    if (!s || !canSeeSession(req.principal, s)) throw new HttpError(404, 'no such recording');
    return r;
  };
  add({ method: 'GET', path: '/api/v1/recordings/{id}', summary: 'Download a recording file (cast, NDJSON)', handler: async (req) => {
    const r = await recordingFor(req);
    if (!existsSync(r.path)) throw new HttpError(410, 'the recording file is gone');
    const type = r.kind === 'cast' ? 'application/x-asciicast' : 'application/x-ndjson';
    return { status: 200, headers: { 'content-type': type, 'x-tollgate-sha256': r.sha256 ?? '' }, body: readFileSync(r.path) };
  } });
  add({ method: 'GET', path: '/api/v1/recordings/{id}/verify', summary: 'Re-hash a recording and compare with its seal', handler: async (req) => {
    const r = await recordingFor(req);
    return ok(await gw.recorder.verify(r.id));
  } });

  // ---- locks
  add({ method: 'POST', path: '/api/v1/locks', summary: 'Lock an identity, target or grant: ends live sessions, refuses new ones (SOC)', auth: 'soc', body: { scope: 'identity|target|grant', value: 'string', reason: 'string', ttl: 'duration (optional)' }, handler: async (req) => {
    const b = parse(z.object({ scope: z.enum(['identity', 'target', 'grant']), value: str(300), reason: str(2000), ttl: z.union([z.string(), z.number()]).optional() }), req);
    const now = gw.clock.now();
    let expiresAt: number | null = null;
    if (b.ttl !== undefined) {
      try { expiresAt = now + parseDuration(b.ttl); } catch { throw new HttpError(400, 'ttl: a duration', { field: 'ttl' }); }
    }
    const lock: LockRecord = { id: crypto.randomUUID(), scope: b.scope, value: b.value, reason: b.reason, createdBy: req.principal.sub, createdAt: now, expiresAt, removedAt: null, removedBy: null };
    await gw.store.insertLock(lock);
    await gw.audit.append(req.principal.sub, 'lock.created', lock.id, { scope: lock.scope, value: lock.value, reason: lock.reason, expiresAt });
    const ended = await gw.sessions.applyLock(lock);
    return ok({ ...lock, sessionsEnded: ended }, 201);
  } });
  add({ method: 'GET', path: '/api/v1/locks', summary: 'Locks (?active=1)', auth: 'soc', handler: async (req) => ok(await gw.store.listLocks({ active: req.query.get('active') === '1', at: gw.clock.now() })) });
  add({ method: 'DELETE', path: '/api/v1/locks/{id}', summary: 'Remove a lock (SOC)', auth: 'soc', handler: async (req) => {
    const l = (await gw.store.listLocks({})).find((x) => x.id === req.params['id']);
    if (!l || l.removedAt) throw new HttpError(404, 'no such active lock');
    l.removedAt = gw.clock.now();
    l.removedBy = req.principal.sub;
    await gw.store.updateLock(l);
    await gw.audit.append(req.principal.sub, 'lock.removed', l.id, { scope: l.scope, value: l.value });
    return ok(l);
  } });

  // ---- audit
  add({ method: 'GET', path: '/api/v1/audit', summary: 'Audit events (SOC): ?actor=&action=(prefix*)&subject=&since=&until=&afterSeq=&limit=', auth: 'soc', handler: async (req) => {
    const q = req.query;
    const n = (k: string) => (q.get(k) ? Number(q.get(k)) : undefined);
    return ok(await gw.store.listAudit({ actor: q.get('actor') ?? undefined, action: q.get('action') ?? undefined, subject: q.get('subject') ?? undefined, since: n('since'), until: n('until'), afterSeq: n('afterSeq'), limit: Math.min(n('limit') ?? 500, 5000) }));
  } });
  add({ method: 'GET', path: '/api/v1/audit/verify', summary: 'Verify the audit log: hash chain, HMACs, signed head and checkpoints; names the failed check (SOC)', auth: 'soc', handler: async () => ok(await gw.audit.verify()) });
  add({ method: 'GET', path: '/api/v1/audit/export', summary: 'All audit events as JSON lines for a SIEM (SOC)', auth: 'soc', handler: async (req) => {
    const lines: string[] = [];
    for (let after = Number(req.query.get('afterSeq') ?? 0) || 0; ;) {
      const rows = await gw.store.listAudit({ afterSeq: after, limit: 1000 });
      if (!rows.length) break;
      for (const r of rows) { lines.push(JSON.stringify(r)); after = r.seq; }
    }
    return { status: 200, headers: { 'content-type': 'application/x-ndjson' }, body: lines.length ? `${lines.join('\n')}\n` : '' };
  } });

  mountAuthRoutes(gw, add);
  mountLive(gw, principalOf);

  // Errors: policy errors keep their status; everything reaches the caller as JSON with a reason.
  http.onError = (e: unknown, req: HttpRequest): HttpReply => {
    if (e instanceof HttpError) return { status: e.status, body: { error: codeFor(e.status), message: e.message, ...e.extra } };
    if (e instanceof PolicyError) return { status: e.status, body: { error: e.code, message: e.message, ...(e.field ? { field: e.field } : {}) } };
    gw.log.error({ err: e, path: req.path, method: req.method }, 'API handler failed');
    return { status: 500, body: { error: 'internal', message: 'internal error; see the gateway log' } };
  };
}

/** 'token:<id>' / 'web:<id>' for the audit log. */
function credentialLabel(p: Principal): string | null {
  return p.credential ? `${p.credential.kind}:${p.credential.id}` : null;
}

function codeFor(status: number): string {
  return ({ 400: 'invalid', 401: 'unauthenticated', 403: 'forbidden', 404: 'not_found', 405: 'method_not_allowed', 409: 'conflict', 410: 'gone', 413: 'too_large', 415: 'unsupported_media_type', 503: 'unavailable' } as Record<number, string>)[status] ?? 'error';
}

export function grantView(gw: Gateway, g: GrantRecord) {
  const now = gw.clock.now();
  const target = gw.config.targets.find((t) => t.name === g.target);
  return { ...g, protocol: target?.protocol ?? null, active: g.state === 'active' && g.expiresAt > now, msLeft: g.state === 'active' ? Math.max(0, g.expiresAt - now) : 0 };
}

export async function requestView(gw: Gateway, id: string) {
  const r = await gw.store.getRequest(id);
  if (!r) return null;
  const approvals = await gw.store.listApprovals(id);
  return { ...r, approvals };
}
