/** The OpenAPI document, built from the same route table the front serves. */
export interface ApiRoute {
  method: string;
  path: string;
  summary: string;
  /** false: public; 'soc': SOC groups only; default: any signed-in identity. */
  auth?: false | 'soc' | true;
  /** Body fields and a short description of each. */
  body?: Record<string, string>;
}

export function openApiDocument(routes: ApiRoute[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const params = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    const op: Record<string, unknown> = {
      summary: r.summary,
      operationId: `${r.method.toLowerCase()}${r.path.replace(/\{(\w+)\}/g, 'By_$1').replace(/[^A-Za-z0-9]+(.)?/g, (_, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      ...(params.length ? { parameters: params } : {}),
      security: r.auth === false ? [] : [{ bearer: [] }, { cookie: [] }],
      responses: {
        200: { description: 'OK' },
        ...(r.auth === false ? {} : { 401: { description: 'Missing, wrong or expired credentials' }, 403: { description: 'Signed in but not permitted' } }),
        ...(r.body ? { 400: { description: 'Malformed body; the message names the field' } } : {}),
      },
    };
    if (r.body) {
      op['requestBody'] = {
        required: true,
        content: { 'application/json': { schema: { type: 'object', properties: Object.fromEntries(Object.entries(r.body).map(([k, d]) => [k, { description: d }])) } } },
      };
    }
    (paths[r.path] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Tollgate API', version: '1', description: 'Just-in-time privileged access: requests, grants, connection secrets, sessions, locks, audit.' },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'A personal API token (tollgate login, or POST /api/v1/tokens)' },
        cookie: { type: 'apiKey', in: 'cookie', name: 'tg_session' },
      },
    },
    paths,
  };
}
