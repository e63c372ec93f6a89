import type { HttpReply } from './server.js';
import { escapeHtml } from '../../protocols/web.js';

/** The plain page of the sign-in and approval flows (the portal has its own shell); HTML escaping is protocols/web.ts's. */

export { escapeHtml };

export function page(title: string, body: string, status = 200): HttpReply {
  return {
    status,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'",
      'cache-control': 'no-store',
    },
    body: `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)} · Tollgate</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}h1{font-size:1.4rem}button{font-size:1rem;padding:.5rem 1rem;margin-right:.5rem}.err{color:#a40000}</style></head>
<body><main>${body}</main></body></html>`,
  };
}
