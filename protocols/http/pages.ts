/** The small HTML pages the app proxy answers with itself (errors, no grant, request form). */

import { escapeHtml as esc } from '../web.js';

export { esc };

export interface Page { status: number; headers: Record<string, string>; body: string }

export function htmlPage(status: number, title: string, body: string, extraHeaders: Record<string, string> = {}): Page {
  return {
    status,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action *; frame-ancestors 'none'",
      'x-content-type-options': 'nosniff',
      'x-tollgate': 'gateway',
      ...extraHeaders,
    },
    body: `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)} · Tollgate</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}h1{font-size:1.4rem}dt{font-weight:600}button,.button{font-size:1rem;padding:.5rem 1rem;margin:.25rem .5rem .25rem 0}textarea,input,select{font:inherit;display:block;margin:.25rem 0 .75rem;width:100%;max-width:30rem}.err{color:#a40000}</style></head>
<body><main>${body}</main></body></html>`,
  };
}

export function errorPage(status: number, title: string, message: string): Page {
  return htmlPage(status, title, `<h1>${esc(title)}</h1><p class="err">${esc(message)}</p>`);
}

export function noGrantPage(opts: { identity: string; app: string; reason: string; publicUrl: string }): Page {
  const portal = `${opts.publicUrl}/?request=${encodeURIComponent(opts.app)}`;
  const form = `${opts.publicUrl}/apps/_request?app=${encodeURIComponent(opts.app)}`;
  return htmlPage(403, `No access to ${opts.app}`, `<h1>No access to ${esc(opts.app)}</h1>
<dl><dt>Signed in as</dt><dd id="identity">${esc(opts.identity)}</dd><dt>App</dt><dd id="app">${esc(opts.app)}</dd><dt>Why</dt><dd id="reason">${esc(opts.reason)}</dd></dl>
<p>Access to this app is just in time: ask for it, and once approved this page opens the app.</p>
<p><a class="button" id="request" href="${esc(form)}">Request access</a> <a class="button" href="${esc(portal)}">Open the portal</a></p>`);
}

/** Re-open a gateway page from the gateway's own origin at once (Refresh header, no script). */
export function continuePage(path: string): Page {
  return htmlPage(200, 'Continuing', `<p><a href="${esc(path)}">Continue to Tollgate</a></p>`, { refresh: `0; url=${path}` });
}

export function requestFormPage(opts: { identity: string; app: string; roles: string[]; csrf: string }): Page {
  const roles = opts.roles.map((r) => `<option value="${esc(r)}">${esc(r)}</option>`).join('');
  return htmlPage(200, `Request access to ${opts.app}`, `<h1>Request access to ${esc(opts.app)}</h1>
<p>Signed in as <b>${esc(opts.identity)}</b>.</p>
<form method="post" action="/apps/_request">
<input type="hidden" name="app" value="${esc(opts.app)}">
<input type="hidden" name="csrf" value="${esc(opts.csrf)}">
<label>Role<select name="role">${roles}</select></label>
<label>For how long<input name="duration" value="1h" pattern="\\d+(\\.\\d+)?\\s*(m|h|d)" required></label>
<label>Reason<textarea name="reason" required maxlength="2000" rows="3"></textarea></label>
<button type="submit" id="submit">Send request</button>
</form>`);
}
