import { z } from 'zod';
import type { Principal } from '../../../auth/types.js';
import type { ApiRoute } from '../openapi.js';
import { HttpError, type HttpReply, type HttpRequest } from '../server.js';

/** What every route file of the REST API shares: the signed-in request, the route table, body parsing. */

export interface Authed extends HttpRequest { principal: Principal }

/** A route of the API; `auth` (openapi.ts) says who may call it, the table adds the checks. */
export type AddRoute = (r: ApiRoute & { handler: (req: Authed) => Promise<HttpReply> | HttpReply }) => void;

export const ok = (body: unknown, status = 200): HttpReply => ({ status, body: body as object });

/** The JSON body checked against `schema`; a 400 naming the first field at fault. */
export function parse<T>(schema: z.ZodType<T>, req: HttpRequest): T {
  const r = schema.safeParse(req.json());
  if (!r.success) {
    const i = r.error.issues[0]!;
    const field = i.path.join('.') || 'body';
    throw new HttpError(400, `${field}: ${i.message}`, { field });
  }
  return r.data;
}

/** A trimmed, non-empty string of at most `max` characters. */
export const str = (max = 500) => z.string().trim().min(1).max(max);

/** A duration as a body field: "12h", "7d" or seconds. */
export const durationField = () => z.union([z.string(), z.number()]).optional();

/** 'token:<id>' / 'web:<id>' for the audit log. */
export function credentialLabel(p: Principal): string | null {
  return p.credential ? `${p.credential.kind}:${p.credential.id}` : null;
}
