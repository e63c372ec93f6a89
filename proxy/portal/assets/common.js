// Shared helpers for the portal pages: same-origin API calls with the session cookie, safe DOM
// building (text only, never innerHTML with data), formatting, and clear error messages.

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `the gateway answered ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

/** Call the REST API. Throws ApiError with the gateway's own message. */
export async function api(method, path, body) {
  let res;
  try {
    res = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: body !== undefined ? { 'content-type': 'application/json' } : {},
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw new ApiError(0, { message: 'the gateway cannot be reached; check your connection and try again' });
  }
  const text = await res.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = { message: text.slice(0, 200) }; }
  if (res.status === 401) {
    // the web session expired: sign in again and come back here
    location.assign(`/auth/login?returnTo=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError(401, { message: 'your sign-in expired; redirecting to sign in' });
  }
  if (!res.ok) throw new ApiError(res.status, parsed);
  return parsed;
}

/** Build an element: el('a', {href: '/x', class: 'y'}, 'text', child). Strings become text nodes. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, children);
  return e;
}

function append(parent, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    parent.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace a container's content and clear its busy state. */
export function fill(container, ...children) {
  container.replaceChildren();
  append(container, children);
  container.removeAttribute('aria-busy');
}

export function empty(message) { return el('p', { class: 'empty' }, message); }
export function errorBox(message) { return el('p', { class: 'err', role: 'alert' }, message); }

/** Show a transient message in the page's status region. */
export function flash(message, kind = 'ok') {
  const f = document.getElementById('flash');
  if (!f) return;
  f.replaceChildren(el('p', { class: `flash ${kind}` }, message));
}

export function describeError(e) {
  if (e instanceof ApiError) {
    if (e.status === 403) return `Not allowed: ${e.message}`;
    if (e.status === 404) return `Not found: ${e.message}`;
    return e.message;
  }
  return `Unexpected error: ${e && e.message ? e.message : e}`;
}

/** Load into a container with a clear error if it fails. */
export async function load(container, fn) {
  container.setAttribute('aria-busy', 'true');
  try {
    await fn();
  } catch (e) {
    fill(container, errorBox(describeError(e)));
  }
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A datetime-local input's value as epoch ms (or undefined). */
export function inputTime(v) {
  if (!v) return undefined;
  const t = new Date(v).getTime();
  return Number.isFinite(t) ? t : undefined;
}

export function badge(text, kind = '') { return el('span', { class: `badge ${kind}` }, text); }

/** Count down "time left" labels: elements with data-until (epoch ms). */
export function startCountdowns(root = document) {
  const tick = () => {
    for (const e of root.querySelectorAll('[data-until]')) {
      const left = Number(e.dataset.until) - Date.now();
      e.textContent = left > 0 ? `${fmtDuration(left)} left` : 'expired';
    }
  };
  tick();
  return setInterval(tick, 1000);
}

export function table(caption, headers, rows) {
  return el('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': caption }, el('table', {},
    el('caption', { class: 'sr' }, caption),
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows)));
}

export function mainData(name) { return document.getElementById('main').dataset[name]; }

/** A table cell with a recording's seal and whether it verifies now. */
export function sealCell(r) {
  const cell = el('td', { class: 'seal' }, r.sha256 ? el('code', { title: r.sha256 }, `sha256:${r.sha256.slice(0, 16)}…`) : el('span', { class: 'muted' }, r.state === 'open' ? 'still recording' : 'no seal'), ' ');
  const status = el('span', { class: 'verify', role: 'status' }, 'checking…');
  cell.append(status);
  api('GET', `/api/v1/recordings/${encodeURIComponent(r.id)}/verify`).then(
    (v) => status.replaceChildren(v.ok ? badge('verified', 'ok') : badge(`does not verify: ${v.detail}`, 'bad')),
    (e) => status.replaceChildren(badge(`cannot verify: ${describeError(e)}`, 'bad')),
  );
  return cell;
}


/** An object's fields as wrapped "key value" pairs (events, transfers). */
export function fields(obj) {
  return el('span', { class: 'fields' }, Object.entries(obj || {}).map(([k, v]) => el('span', { class: 'kv' }, el('b', {}, k), ' ', typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v))));
}

/** For an "MFA required" refusal: a link that signs in again with the authenticator and comes back. */
export function mfaLink(e) {
  if (!(e instanceof ApiError) || e.body.error !== 'mfa_required') return null;
  return el('a', { href: `/auth/login?mfa=1&returnTo=${encodeURIComponent(location.pathname + location.search)}`, class: 'mfa' }, 'Sign in again with your authenticator code');
}

// A failure nobody caught must not leave a silently half-working page: say so, and log it.
window.addEventListener('unhandledrejection', (ev) => {
  console.error('portal: unhandled failure', ev.reason);
  flash(`Something on this page failed: ${describeError(ev.reason)}. Reload to try again.`, 'bad');
});
window.addEventListener('error', (ev) => {
  flash(`Something on this page failed: ${ev.message}. Reload to try again.`, 'bad');
});
