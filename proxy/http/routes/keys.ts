import { z } from 'zod';
import { KEY_NAMESPACE } from '../../keys.js';
import type { ApiServices } from '../services.js';
import { ok, parse, str, type AddRoute } from './route.js';

/** My registered SSH public keys (registration proves possession: proxy/keys.ts). */
export function mountKeyRoutes(add: AddRoute, s: Pick<ApiServices, 'keys'>): void {
  add({ method: 'POST', path: '/api/v1/keys/challenge', summary: `A challenge to sign with the key to register (ssh-keygen -Y sign -n ${KEY_NAMESPACE})`, body: { publicKey: 'OpenSSH public key line' }, handler: (req) => {
    const b = parse(z.object({ publicKey: str(16_000) }), req);
    return ok(s.keys.challenge(req.principal.sub, b.publicKey));
  } });
  add({ method: 'POST', path: '/api/v1/keys', summary: 'Register an SSH public key for native sign-in, with proof of possession', body: { publicKey: 'OpenSSH public key line', name: 'string', challenge: 'from POST /api/v1/keys/challenge', signature: `ssh-keygen -Y sign -n ${KEY_NAMESPACE} of the challenge (armored)` }, handler: async (req) => {
    const b = parse(z.object({ publicKey: str(16_000), name: z.string().max(100).default('key'), challenge: z.string().max(4000).optional(), signature: z.string().max(64_000).optional() }), req);
    return ok(await s.keys.register(req.principal.sub, b), 201);
  } });
  add({ method: 'GET', path: '/api/v1/keys', summary: 'My registered public keys', handler: async (req) => ok(await s.keys.list(req.principal.sub)) });
  add({ method: 'DELETE', path: '/api/v1/keys/{id}', summary: 'Remove a registered public key', handler: async (req) => {
    await s.keys.remove(req.principal.sub, req.params['id']!);
    return ok({ ok: true });
  } });
}
