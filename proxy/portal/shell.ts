import type { Principal } from '../../auth/types.js';
import type { HttpReply } from '../http/server.js';
import { escapeHtml } from '../http/html.js';
import type { Roles } from '../roles.js';

export type { Roles };

/**
 * The server-rendered HTML shell of every portal page: landmarks, navigation for the signed-in
 * person's roles, a live region for messages, and one small script module per page. No inline
 * script or style anywhere, so the CSP can forbid both.
 */

export interface PageDef {
  key: string;
  title: string;
  href: string;
  /** Who may open it. */
  allowed: (r: Roles) => boolean;
  /** Shown to people who may not open it. */
  forbidden: string;
}

export const PAGES: PageDef[] = [
  { key: 'access', title: 'My access', href: '/portal/access', allowed: () => true, forbidden: '' },
  { key: 'approvals', title: 'Approvals', href: '/portal/approvals', allowed: (r) => r.approver || r.soc, forbidden: 'Only approvers and the SOC act on requests. Ask your administrator to add you to an approver group if you should.' },
  { key: 'sessions', title: 'Sessions', href: '/portal/sessions', allowed: (r) => r.soc, forbidden: 'The live session console is for the SOC. Your own sessions are listed on My access.' },
  { key: 'recordings', title: 'Recordings', href: '/portal/recordings', allowed: (r) => r.soc, forbidden: 'Recordings are only visible to the SOC.' },
  { key: 'audit', title: 'Audit', href: '/portal/audit', allowed: (r) => r.soc, forbidden: 'The audit log is only visible to the SOC.' },
  { key: 'dashboard', title: 'Dashboard', href: '/portal/dashboard', allowed: (r) => r.soc || r.approver, forbidden: 'The JIT health dashboard is for the SOC and approvers.' },
  { key: 'access-reviews', title: 'Access reviews', href: '/portal/access-reviews', allowed: (r) => r.soc || r.approver || r.reviewer, forbidden: 'Access reviews are decided by their reviewer groups and started by the SOC.' },
  { key: 'delegations', title: 'Delegations', href: '/portal/delegations', allowed: (r) => r.approver || r.soc, forbidden: 'Only approvers delegate their approvals.' },
];

export function csp(wsOrigin: string): string {
  return [
    "default-src 'self'",
    // asciinema-player's terminal is WebAssembly compiled from bytes in its bundle.
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self'",
    "img-src 'self' data:",
    `connect-src 'self' ${wsOrigin}`,
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export function html(status: number, body: string, wsOrigin: string): HttpReply {
  return {
    status,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': csp(wsOrigin),
      'cache-control': 'no-store',
      'referrer-policy': 'same-origin',
      'x-frame-options': 'DENY',
    },
    body,
  };
}

export function shell(opts: {
  title: string;
  active: string;
  principal: Principal | null;
  roles: Roles;
  /** Page script module name under /portal/assets/ (no script when absent). */
  script?: string;
  /** Extra stylesheet / script assets (e.g. the player). */
  css?: string[];
  scripts?: string[];
  /** data-* attributes on <main> for the page script. */
  data?: Record<string, string>;
  body: string;
  /** The web session's CSRF token for the sign-out form. */
  csrf?: string;
}): string {
  const nav = opts.principal
    ? PAGES.filter((p) => p.allowed(opts.roles)).map((p) => `<li><a href="${p.href}"${p.key === opts.active ? ' aria-current="page"' : ''}>${escapeHtml(p.title)}</a></li>`).join('')
    : '';
  const who = opts.principal
    ? `<div class="who"><span>Signed in as <strong>${escapeHtml(opts.principal.sub)}</strong>${opts.roles.soc ? ' <span class="tag">SOC</span>' : ''}${opts.roles.approver ? ' <span class="tag">approver</span>' : ''}</span>
<form method="post" action="/auth/logout"><input type="hidden" name="csrf" value="${escapeHtml(opts.csrf ?? '')}"><button type="submit" class="link">Sign out</button></form></div>`
    : '';
  const data = Object.entries(opts.data ?? {}).map(([k, v]) => ` data-${k}="${escapeHtml(v)}"`).join('');
  const css = ['/portal/assets/portal.css', ...(opts.css ?? [])].map((h) => `<link rel="stylesheet" href="${h}">`).join('');
  const scripts = [...(opts.scripts ?? []).map((s) => `<script src="${s}"></script>`), ...(opts.script ? [`<script type="module" src="/portal/assets/${opts.script}"></script>`] : [])].join('');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(opts.title)} · Tollgate</title>${css}${scripts}</head>
<body><a class="skip" href="#main">Skip to content</a>
<header class="top"><a class="brand" href="/portal/access">Tollgate</a>${nav ? `<nav aria-label="Portal"><ul>${nav}</ul></nav>` : ''}${who}</header>
<main id="main" tabindex="-1"${data}><h1>${escapeHtml(opts.title)}</h1>
<div id="flash" role="status" aria-live="polite"></div>
${opts.body}</main></body></html>`;
}

export function messagePage(title: string, message: string, principal: Principal | null, roles: Roles, links = '<p><a href="/portal/access">Back to My access</a></p>', csrf?: string): string {
  return shell({ title, active: '', principal, roles, csrf, body: `<p class="notice" role="alert">${escapeHtml(message)}</p>${links}` });
}
