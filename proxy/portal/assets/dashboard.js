// Dashboard: JIT health figures and small SVG charts over the last days, from /api/v1/portal/dashboard.
import { api, el, fill, empty, load, fmtDuration, fmtTime, table, badge, flash, describeError } from './common.js';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function figure(label, value, note, kind = '') {
  return el('div', { class: `figure ${kind}`, role: 'group', 'aria-label': label },
    el('div', { class: 'value' }, value), el('div', { class: 'label' }, label), note ? el('div', { class: 'note' }, note) : null);
}

/** A bar chart: one bar per day, with a text summary for screen readers. */
function chart(title, points, fmt) {
  const W = 280; const H = 90; const pad = 14;
  const vals = points.map((p) => p.value ?? 0);
  const max = Math.max(1, ...vals);
  const bw = (W - 2) / points.length;
  const bars = points.map((p, i) => {
    const h = p.value ? Math.max(2, ((H - pad) * p.value) / max) : 0;
    return svg('rect', { x: 1 + i * bw + 1, y: H - h, width: Math.max(1, bw - 2), height: h, class: 'bar' }, svg('title', {}, `${p.day}: ${p.value === null ? 'no data' : fmt(p.value)}`));
  });
  const latest = [...points].reverse().find((p) => p.value !== null);
  const summary = `${title}: peak ${fmt(max)}${latest ? `, latest ${latest.day} ${fmt(latest.value)}` : ''}`;
  return el('figure', { class: 'chart' },
    svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary, preserveAspectRatio: 'none' },
      svg('line', { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: 'axis' }), ...bars),
    el('figcaption', {}, title, el('span', { class: 'muted' }, ` · peak ${fmt(max)}`)));
}

await load($('figures'), async () => {
  const h = await api('GET', '/api/v1/portal/dashboard');
  $('asof').textContent = `As of ${fmtTime(h.at)}.`;
  const pct = h.jitShare.ratio === null ? '—' : `${Math.round(h.jitShare.ratio * 100)}%`;
  fill($('figures'),
    figure('Standing privileges remaining', String(h.standingPrivileges.count), 'minted credentials with no live session', h.standingPrivileges.count ? 'bad' : 'ok'),
    figure('Privileged access through JIT', pct, `${h.jitShare.jit} of ${h.jitShare.total} sessions under an approved request`),
    figure('Average privilege active time', fmtDuration(h.avgPrivilegeMs), 'per session'),
    figure('Approval response (median)', fmtDuration(h.approvalResponse.medianMs), `p90 ${fmtDuration(h.approvalResponse.p90Ms)} over ${h.approvalResponse.count} decisions`),
    figure('Break-glass uses this month', String(h.breakGlassThisMonth), 'each has a mandatory review', h.breakGlassThisMonth ? 'warn' : ''),
    figure('Expired unused grants', String(h.expiredUnusedGrants), 'access granted but never used'),
  );
  const s = h.series;
  fill($('charts'),
    chart('Sessions per day', s.sessions, (v) => String(v)),
    chart('Requests per day', s.requests, (v) => String(v)),
    chart('Median approval time', s.approvalMedianMs, fmtDuration),
    chart('Average privilege time', s.avgPrivilegeMs, fmtDuration));
  const st = h.standingPrivileges.leases;
  fill($('standing'), st.length
    ? table('Standing privileges', ['Lease', 'Target', 'Kind', 'State', 'Since', 'Revoke'], st.map((l) => el('tr', {}, el('td', {}, el('code', {}, l.id)), el('td', {}, l.target), el('td', {}, l.kind), el('td', {}, l.state), el('td', {}, fmtTime(l.createdAt)),
      el('td', {}, l.attempts ? `failed ${l.attempts}×: ${l.error ?? ''}${l.retryAt ? ` — next try ${fmtTime(l.retryAt)}` : ''}` : 'not tried yet'))))
    : empty('None: no minted credential exists outside a live session.'));
});

// Delivery visibility (SOC only: it names recipients and receivers' errors).
async function loadDelivery() {
  const n = await api('GET', '/api/v1/notifications');
  const s = await api('GET', '/api/v1/siem');
  const states = { pending: ['retrying', 'warn'], sending: ['sending', 'warn'], failed: ['failed', 'bad'] };
  const retry = (d) => {
    const b = el('button', { type: 'button' }, 'Retry now');
    b.addEventListener('click', async () => {
      b.disabled = true;
      try { await api('POST', `/api/v1/notifications/deliveries/${encodeURIComponent(d.id)}/retry`, {}); flash('Queued again.'); await loadDelivery(); } catch (e) { flash(describeError(e), 'bad'); b.disabled = false; }
    });
    return b;
  };
  fill($('deliveries'), !n.channels.length
    ? empty('No notification channel is configured (notifications.webhooks, notifications.email).')
    : n.problems.length
      ? table('Notifications that failed or are being retried', ['Channel', 'About', 'To', 'State', 'Attempts', 'Last error', 'Next attempt', ''], n.problems.map((d) => el('tr', { 'data-delivery': d.id },
        el('td', {}, d.channel), el('td', {}, d.title || d.topic), el('td', {}, d.recipient), el('td', {}, badge(...states[d.state])),
        el('td', {}, String(d.attempts)), el('td', {}, el('code', {}, d.lastError || '')), el('td', {}, d.nextAt ? fmtTime(d.nextAt) : '—'), el('td', {}, retry(d)))))
      : empty(`Every notification was delivered (${n.counts.delivered} kept, ${n.counts.pending} waiting).`));
  fill($('siem'), s.length
    ? table('SIEM sinks', ['Sink', 'Receiver', 'Acknowledged', 'Behind', 'Last received', 'Last error'], s.map((x) => el('tr', { 'data-sink': x.sink },
      el('td', {}, x.sink), el('td', {}, x.where), el('td', {}, `seq ${x.seq} of ${x.head}`), el('td', {}, x.behind ? badge(`${x.behind} events`, x.failures ? 'bad' : 'warn') : badge('up to date', 'ok')),
      el('td', {}, x.ackAt ? fmtTime(x.ackAt) : '—'), el('td', {}, x.lastError ? el('code', {}, `${x.lastError} (${x.failures} in a row)`) : '—'))))
    : empty('No SIEM sink is configured (siem.syslog, siem.webhooks); the audit log can still be pulled from /api/v1/audit/export.'));
}

const me = await api('GET', '/api/v1/me').catch(() => null);
if (me?.soc) {
  $('delivery-section').hidden = false;
  await load($('deliveries'), loadDelivery);
}
