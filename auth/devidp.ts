/**
 * The built-in dev IdP: a real OpenID Provider (oidc-provider v9) on its own node:http server on
 * loopback, for `tollgate demo` and the tests. Authorization code + PKCE and the device
 * authorization grant; its own small HTML pages for sign-in (user name, password, optional
 * authenticator code) and device code entry; consent is granted automatically for the configured
 * clients (they are the gateway's own).
 *
 * MFA: a user with a TOTP secret who types a valid code signs in with amr ["pwd","otp","mfa"] and
 * acr "mfa"; otherwise amr ["pwd"] and acr "pwd". When acr_values asks for "mfa", the sign-in page
 * requires the code. prompt=login and max_age force a fresh sign-in (step-up).
 *
 * Refresh tokens are issued to clients allowed the refresh_token grant (the gateway re-validates
 * sign-ins with them). setDisabled() and setGroups() change a user at runtime, as an admin would at a
 * real IdP: a disabled user cannot sign in, and refresh and userinfo are refused for them.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import Provider, {
  interactionPolicy, type Adapter, type AdapterPayload, type ClientMetadata, type Configuration, type KoaContextWithOIDC,
} from 'oidc-provider';
import { exportJWK, generateKeyPair } from 'jose';
import type { Logger } from 'pino';
import { Secret } from './secret.js';
import { verifyTotp } from './totp.js';
import type { Clock } from '../policies/clock.js';
import { SystemClock } from '../policies/clock.js';

export interface DevIdpUser {
  name: string;
  email?: string;
  password: Secret;
  groups: string[];
  /** Base32 TOTP secret. */
  totp?: Secret;
}

export interface DevIdpClient {
  client_id: string;
  client_secret?: string;
  redirect_uris: string[];
  grant_types: string[];
  /** Defaults to client_secret_basic with a secret, 'none' without. */
  token_endpoint_auth_method?: string;
}

export interface DevIdpOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  users: DevIdpUser[];
  clients: DevIdpClient[];
  log: Logger;
  /** Time for TOTP checks (defaults to the system clock). */
  clock?: Clock;
  /** The acr value that means "signed in with MFA" (default "mfa"). */
  mfaAcr?: string;
}

export interface DevIdp {
  issuer: string;
  /** Disable (or enable again) a user: sign-in, refresh and userinfo are refused while disabled. */
  setDisabled(name: string, disabled: boolean): void;
  /** Replace a user's groups; seen by the next sign-in, refresh or userinfo. */
  setGroups(name: string, groups: string[]): void;
  close(): Promise<void>;
}

export const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

function esc(s: unknown): string {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const STYLE = `body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;padding:40px}
main{max-width:360px;margin:0 auto;background:#fff;padding:24px 28px;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.2)}
h1{font-size:1.4em;margin-top:0}label{display:block;margin:12px 0 4px;font-weight:600}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:8px;font-size:1em}
button{margin-top:16px;padding:8px 16px;font-size:1em;cursor:pointer}
.error{color:#b00020;background:#fdecee;padding:8px;border-radius:4px}.note{color:#555}
code.user-code{font-size:1.6em;letter-spacing:.1em}`;

function page(title: string, body: string): string {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>${STYLE}</style></head>
<body><main><h1>${esc(title)}</h1>${body}</main></body></html>`;
}

interface LoginView {
  uid: string;
  clientId: string;
  mfaRequired: boolean;
  login?: string;
  error?: string;
}

function loginPage(v: LoginView): string {
  return page('Sign in', `
<p class="note">Tollgate dev IdP — signing in to <strong>${esc(v.clientId)}</strong>.</p>
${v.error ? `<p class="error" role="alert">${esc(v.error)}</p>` : ''}
${v.mfaRequired ? '<p class="note">This sign-in needs an authenticator code.</p>' : ''}
<form method="post" action="/interaction/${esc(v.uid)}/login" autocomplete="off">
  <label for="login">User name</label>
  <input type="text" id="login" name="login" value="${esc(v.login ?? '')}" autofocus required autocapitalize="off">
  <label for="password">Password</label>
  <input type="password" id="password" name="password" required>
  <label for="otp">Authenticator code${v.mfaRequired ? '' : ' (optional)'}</label>
  <input type="text" id="otp" name="otp" inputmode="numeric" pattern="[0-9 ]*" maxlength="8"${v.mfaRequired ? ' required' : ''}>
  <button type="submit">Sign in</button>
</form>`);
}

async function readForm(req: IncomingMessage, limit = 16 * 1024): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new Error('form too large');
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'x-frame-options': 'DENY',
    'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  });
  res.end(html);
}

/**
 * In-memory storage for one dev IdP instance (sessions, codes, grants), dropped on close. Entries
 * expire with the artifact; grant members are indexed so revoking a grant removes its tokens.
 */
function memoryAdapterFactory(): (name: string) => Adapter {
  const items = new Map<string, { payload: AdapterPayload; expiresAt: number }>();
  const index = new Map<string, string>();
  const grants = new Map<string, Set<string>>();
  const live = (key: string): AdapterPayload | undefined => {
    const it = items.get(key);
    if (!it) return undefined;
    if (Date.now() >= it.expiresAt) { items.delete(key); return undefined; }
    return it.payload;
  };
  let writes = 0;
  const sweep = () => {
    const now = Date.now();
    for (const [key, it] of items) if (now >= it.expiresAt) items.delete(key);
    for (const [grantId, set] of grants) {
      for (const key of set) if (!items.has(key)) set.delete(key);
      if (!set.size) grants.delete(grantId);
    }
  };
  return (name: string): Adapter => {
    const k = (id: string) => `${name}:${id}`;
    const lookup = (ref: string) => {
      const id = index.get(ref);
      const p = id ? live(k(id)) : undefined;
      if (!p) index.delete(ref);
      return p;
    };
    return {
      async upsert(id, payload, expiresIn) {
        if (++writes % 500 === 0) sweep();
        items.set(k(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
        if (payload.uid) index.set(k(`uid:${payload.uid}`), id);
        if (payload.userCode) index.set(k(`userCode:${payload.userCode}`), id);
        if (payload.grantId) {
          const set = grants.get(payload.grantId) ?? new Set<string>();
          set.add(k(id));
          grants.set(payload.grantId, set);
        }
      },
      async find(id) { return live(k(id)); },
      async findByUid(uid) { return lookup(k(`uid:${uid}`)); },
      async findByUserCode(code) { return lookup(k(`userCode:${code}`)); },
      async consume(id) { const p = live(k(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); },
      async destroy(id) { items.delete(k(id)); },
      async revokeByGrantId(grantId) {
        for (const key of grants.get(grantId) ?? []) items.delete(key);
        grants.delete(grantId);
      },
    };
  };
}

export async function startDevIdp(opts: DevIdpOptions): Promise<DevIdp> {
  const log = opts.log.child({ component: 'devidp' });
  const clock = opts.clock ?? new SystemClock();
  const mfaAcr = opts.mfaAcr ?? 'mfa';
  const users = new Map(opts.users.map((u) => [u.name, { ...u, groups: [...u.groups] }]));
  const disabled = new Set<string>();
  const userOf = (name: string) => {
    const u = users.get(name);
    if (!u) throw new Error(`dev IdP: no user named ${JSON.stringify(name)}`);
    return u;
  };
  // Last TOTP step used per user: a code is good once.
  const lastStep = new Map<string, number>();

  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => { server.off('error', reject); resolve(); });
  });
  const { port } = server.address() as AddressInfo;
  const hostPart = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const issuer = `http://${hostPart}:${port}`;

  const keys = await Promise.all(['ES256', 'RS256'].map(async (alg) => {
    const { privateKey } = await generateKeyPair(alg, { extractable: true });
    return { ...(await exportJWK(privateKey)), alg, use: 'sig', kid: `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}` };
  }));

  // Sign-in must be redone when the client asks for MFA and the session has none.
  const policy = interactionPolicy.base();
  policy.get('login')!.checks.add(new interactionPolicy.Check(
    'acr_values_mfa',
    'multi-factor authentication is required',
    (ctx: KoaContextWithOIDC) => {
      const wanted = String(ctx.oidc.params?.acr_values ?? '').split(' ').filter(Boolean);
      if (!wanted.includes(mfaAcr)) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      return ctx.oidc.acr === mfaAcr ? interactionPolicy.Check.NO_NEED_TO_PROMPT : interactionPolicy.Check.REQUEST_PROMPT;
    },
  ));

  const config: Configuration = {
    adapter: memoryAdapterFactory(),
    clients: opts.clients.map((c) => {
      const method = (c.token_endpoint_auth_method ?? (c.client_secret ? 'client_secret_basic' : 'none')) as ClientMetadata['token_endpoint_auth_method'];
      return {
        client_id: c.client_id,
        ...(c.client_secret ? { client_secret: c.client_secret } : {}),
        redirect_uris: c.redirect_uris,
        grant_types: c.grant_types,
        response_types: c.grant_types.includes('authorization_code') ? ['code'] : [],
        token_endpoint_auth_method: method,
        require_auth_time: true,
      };
    }),
    jwks: { keys: keys as never },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      names: { session: '_devidp_session', interaction: '_devidp_interaction', resume: '_devidp_resume' },
    },
    claims: {
      // acr and amr always go into the ID token, so the gateway sees how the person signed in.
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
      acr: null,
      amr: null,
      auth_time: null,
      sid: null,
    },
    acrValues: ['pwd', mfaAcr],
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    ttl: {
      AccessToken: 600, AuthorizationCode: 60, DeviceCode: 600, IdToken: 600, Interaction: 900, Session: 12 * 3600,
      // Long enough for the gateway's longest API token (re-validated with the refresh token).
      Grant: 31 * 86_400, RefreshToken: 31 * 86_400,
    },
    // The gateway is the only client: it gets a refresh token whenever its grant types allow one,
    // and the refresh token does not die with the browser's IdP session (a step-up sign-in in the
    // same browser must not end the gateway's earlier sign-ins).
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      deviceFlow: {
        enabled: true,
        userCodeInputSource: async (ctx, form, _out, err) => {
          let msg = '<p>Enter the code shown on your device.</p>';
          if (err && ((err as { userCode?: string }).userCode || err.name === 'NoCodeError')) msg = '<p class="error" role="alert">That code is not valid. Check it and try again.</p>';
          else if (err && err.name === 'AbortedError') msg = '<p class="error" role="alert">The sign-in request was cancelled.</p>';
          else if (err) msg = `<p class="error" role="alert">The code could not be used: ${esc(err.message)}</p>`;
          const labelled = form.replace('name="user_code"', 'id="user_code" name="user_code" aria-describedby="code-help"');
          ctx.type = 'html';
          ctx.body = page('Device sign-in', `${msg}
<label for="user_code">Device code</label>${labelled}
<p class="note" id="code-help">Letters only, as shown on your device.</p>
<button type="submit" form="op.deviceInputForm">Continue</button>`);
        },
        userCodeConfirmSource: async (ctx, form, client, _deviceInfo, userCode) => {
          ctx.type = 'html';
          ctx.body = page('Confirm device', `
<p>A device is asking to sign in to <strong>${esc(client.clientName ?? client.clientId)}</strong>.
Check that it shows this code:</p><p><code class="user-code">${esc(userCode)}</code></p>
<p class="note">If you did not start this, or the code differs, choose Abort.</p>
${form}
<button type="submit" form="op.deviceConfirmForm">Confirm</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`);
        },
        successSource: async (ctx) => {
          ctx.type = 'html';
          ctx.body = page('Signed in', '<p role="status">Sign-in complete. You can return to your device and close this page.</p>');
        },
      },
    },
    interactions: {
      policy,
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    findAccount: async (_ctx, sub) => {
      const u = users.get(sub);
      if (!u || disabled.has(u.name)) return undefined;
      return {
        accountId: u.name,
        claims: async () => ({
          sub: u.name,
          name: u.name,
          preferred_username: u.name,
          email: u.email ?? null,
          email_verified: Boolean(u.email),
          groups: [...u.groups],
        }),
      };
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Sign-in error', `<p class="error" role="alert"><strong>${esc(out.error)}</strong>${out.error_description ? `: ${esc(out.error_description)}` : ''}</p>`);
    },
  };

  const provider = new Provider(issuer, config);
  provider.proxy = false;
  for (const ev of ['server_error', 'authorization.error', 'grant.error', 'backchannel.error', 'end_session.error', 'userinfo.error']) {
    provider.on(ev as 'server_error', (...args: unknown[]) => {
      const err = args.find((a) => a instanceof Error) as (Error & { error_description?: string; status?: number }) | undefined;
      const level = ev === 'server_error' ? 'error' : 'info';
      log[level]({ event: ev, error: err?.message, description: err?.error_description }, 'dev IdP: OIDC error');
    });
  }
  const oidcHandler = provider.callback();

  async function interaction(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const m = /^\/interaction\/([A-Za-z0-9_-]{1,64})(\/login)?$/.exec(path);
    if (!m) return send(res, 404, page('Not found', '<p class="error" role="alert">No such sign-in page.</p>'));
    let details: Awaited<ReturnType<typeof provider.interactionDetails>>;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      return send(res, 400, page('Sign-in expired', '<p class="error" role="alert">This sign-in has expired or was started in another browser. Start again from the application.</p>'));
    }
    if (details.uid !== m[1]) return send(res, 400, page('Sign-in expired', '<p class="error" role="alert">This sign-in page does not match the current sign-in. Start again from the application.</p>'));
    const params = details.params as Record<string, string | undefined>;
    const clientId = String(params.client_id ?? '');
    const mfaRequired = String(params.acr_values ?? '').split(' ').includes(mfaAcr);

    if (details.prompt.name === 'consent') {
      // The configured clients are the gateway's own: grant what they asked for.
      const d = details.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
      const grant = details.grantId
        ? (await provider.Grant.find(details.grantId))!
        : new provider.Grant({ accountId: details.session!.accountId, clientId });
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    if (details.prompt.name !== 'login') {
      return send(res, 400, page('Sign-in error', `<p class="error" role="alert">Unsupported sign-in step "${esc(details.prompt.name)}".</p>`));
    }

    if (req.method === 'GET' && !m[2]) {
      return send(res, 200, loginPage({ uid: details.uid, clientId, mfaRequired }));
    }
    if (req.method !== 'POST' || !m[2]) return send(res, 405, page('Sign-in error', '<p class="error" role="alert">Method not allowed.</p>'));

    let form: URLSearchParams;
    try {
      form = await readForm(req);
    } catch {
      return send(res, 413, page('Sign-in error', '<p class="error" role="alert">The form was too large.</p>'));
    }
    const login = (form.get('login') ?? '').trim().slice(0, 2048);
    const password = new Secret(form.get('password') ?? '');
    const otp = (form.get('otp') ?? '').replace(/\s/g, '');
    const again = (error: string, status = 401) => send(res, status, loginPage({ uid: details.uid, clientId, mfaRequired, login, error }));

    const user = users.get(login);
    // Compare even for unknown users so timing does not reveal who exists.
    const passwordOk = (user ? user.password : new Secret(randomBytes(16).toString('hex'))).equals(password) && Boolean(user);
    if (!user || !passwordOk) {
      log.info({ user: login || null, client: clientId }, 'dev IdP: wrong user name or password');
      return again('Wrong user name or password.');
    }
    if (disabled.has(user.name)) {
      log.info({ user: user.name, client: clientId }, 'dev IdP: sign-in of a disabled user refused');
      return again('This account is disabled.', 403);
    }
    let mfa = false;
    if (otp) {
      if (!user.totp) return again('No authenticator is set up for this user; leave the authenticator code empty.');
      const step = verifyTotp(user.totp, otp, clock.now());
      if (step === null) {
        log.info({ user: user.name, client: clientId }, 'dev IdP: wrong authenticator code');
        return again('Wrong authenticator code.');
      }
      if (step <= (lastStep.get(user.name) ?? -1)) return again('This authenticator code was already used. Wait for the next one.');
      lastStep.set(user.name, step);
      mfa = true;
    }
    if (mfaRequired && !mfa) {
      if (user.totp) return again('This sign-in needs an authenticator code.');
      log.info({ user: user.name, client: clientId }, 'dev IdP: MFA requested but the user has no authenticator');
      await provider.interactionFinished(req, res, {
        error: 'access_denied',
        error_description: 'multi-factor sign-in was requested but this user has no authenticator set up',
      }, { mergeWithLastSubmission: false });
      return;
    }
    log.info({ user: user.name, client: clientId, mfa }, 'dev IdP: signed in');
    await provider.interactionFinished(req, res, {
      login: {
        accountId: user.name,
        acr: mfa ? mfaAcr : 'pwd',
        amr: mfa ? ['pwd', 'otp', 'mfa'] : ['pwd'],
        remember: true,
      },
    }, { mergeWithLastSubmission: false });
  }

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path.startsWith('/interaction/')) {
      interaction(req, res, path).catch((err: Error) => {
        log.error({ err: err.message }, 'dev IdP: sign-in page failed');
        if (!res.headersSent) send(res, 500, page('Sign-in error', '<p class="error" role="alert">The sign-in page failed; start again from the application.</p>'));
        else res.end();
      });
      return;
    }
    oidcHandler(req, res);
  });

  log.info({ issuer, users: opts.users.length, clients: opts.clients.map((c) => c.client_id) }, 'dev IdP listening');
  return {
    issuer,
    setDisabled(name, off) {
      userOf(name);
      if (off) disabled.add(name); else disabled.delete(name);
      log.info({ user: name, disabled: off }, 'dev IdP: user changed');
    },
    setGroups(name, groups) {
      userOf(name).groups = groups.filter((g) => typeof g === 'string');
      log.info({ user: name, groups }, 'dev IdP: groups changed');
    },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
