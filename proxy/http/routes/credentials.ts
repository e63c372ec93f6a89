import { z } from 'zod';
import { Secret } from '../../../auth/secret.js';
import { HttpError } from '../server.js';
import type { ApiServices } from '../services.js';
import { credentialLabel, ok, parse, type AddRoute } from './route.js';
import { MAX_CREDENTIAL_BYTES } from '../../vault.js';

/**
 * Target admin credentials in the vault (SOC): set one, see when it was set and rotated (never the
 * credential itself), rotate it now. Every change is audited by the vault.
 */
export function mountCredentialRoutes(add: AddRoute, s: Pick<ApiServices, 'vault' | 'rotation' | 'modules' | 'ctx' | 'audit'>): void {
  add({ method: 'GET', path: '/api/v1/credentials', summary: 'Every vault credential: set at, by, rotated at, next rotation, last failure — never the secret (SOC)', auth: 'soc', handler: async () => ok(await s.vault.list()) });
  add({ method: 'GET', path: '/api/v1/targets/{name}/credentials', summary: "A target's vault credentials: metadata only, never the secret (SOC)", auth: 'soc', handler: async (req) => ok(await s.vault.show(req.params['name']!)) });
  add({
    method: 'PUT', path: '/api/v1/targets/{name}/credentials', auth: 'soc',
    summary: "Store a target's admin credential in the vault, sealed (SOC; audited, never readable back). verify (default true): log in with it first",
    body: { secret: 'string', field: 'admin.password (optional)', verify: 'boolean (optional, default true)' },
    handler: async (req) => {
      const b = parse(z.object({ secret: z.string().min(1).max(MAX_CREDENTIAL_BYTES), field: z.string().max(100).optional(), verify: z.boolean().default(true) }).strict(), req);
      const secret = new Secret(b.secret);
      const name = req.params['name']!;
      const { target, fields } = s.vault.target(name, b.field);
      const field = b.field ?? fields[0]!;
      const rot = s.rotation.rotationOf(target, field);
      if (b.verify && rot) {
        try {
          await rot.verify(s.ctx(target.protocol), target, field, secret);
        } catch (e) {
          const reason = String((e as Error)?.message ?? e).split(b.secret).join('<secret>').slice(0, 300);
          await s.audit.append(req.principal.sub, 'credential.set_refused', target.name, { target: target.name, field, reason, via: credentialLabel(req.principal) });
          throw new HttpError(409, `the target refused a login with this credential (${reason}); nothing was stored (verify: false stores it unchecked)`, { code: 'verify_failed' });
        }
      }
      const meta = await s.vault.set(req.principal.sub, target.name, field, secret, { via: credentialLabel(req.principal) });
      s.rotation.kick();
      return ok(meta);
    },
  });
  add({
    method: 'POST', path: '/api/v1/targets/{name}/credentials/rotate', auth: 'soc',
    summary: "Rotate a target's vault credential now: set a new one on the target, verify it, only then discard the old (SOC; audited)",
    body: { field: 'admin.password (optional)' },
    handler: async (req) => {
      const b = parse(z.object({ field: z.string().max(100).optional() }).strict(), req);
      const r = await s.rotation.rotateNow(req.principal.sub, req.params['name']!, b.field);
      if (!r.ok) throw new HttpError(409, `rotation failed, the old credential is kept${r.stillOld ? ' (the target still takes it)' : ''}: ${r.reason}`, { code: 'rotation_failed', metadata: r.metadata });
      return ok(r.metadata);
    },
  });
}
