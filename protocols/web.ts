/**
 * The small pieces of the web every HTML-serving part of the gateway needs (the HTTP front, the
 * HTTP app proxy, the browser VNC viewer): HTML escaping and Cookie header parsing, one rule each.
 */

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text for HTML element content and quoted attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

/**
 * Cookies by name from a Cookie header (values percent-decoded when they decode). A name sent
 * twice (a cookie tossed in from a parent domain or another path next to the real one) is
 * ambiguous and reads as null, so it can never choose a session.
 */
export function parseCookies(header: string | undefined): Map<string, string | null> {
  const out = new Map<string, string | null>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const k = part.slice(0, i).trim();
    if (!k) continue;
    if (out.has(k)) { out.set(k, null); continue; }
    const v = part.slice(i + 1).trim();
    try { out.set(k, decodeURIComponent(v)); } catch { out.set(k, v); }
  }
  return out;
}

/** One cookie's value from a Cookie header; undefined when absent or ambiguous (see parseCookies). */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  return parseCookies(header).get(name) ?? undefined;
}
