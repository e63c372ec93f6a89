// SOC console: live sessions across all protocols, watch / terminate / lock, active locks.
import { api, el, fill, empty, load, flash, describeError, fmtTime, fmtDuration, fmtBytes, badge, table, startCountdowns } from './common.js';

const $ = (id) => document.getElementById(id);
let busy = false;

function actionForm(label, placeholder, button, onSubmit) {
  const id = `f-${Math.random().toString(36).slice(2)}`;
  const input = el('input', { id, name: 'reason', required: true, placeholder });
  const form = el('form', { class: 'inline' }, el('label', { for: id }, label), input, el('button', { type: 'submit', class: 'danger' }, button));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!input.value.trim()) { input.setAttribute('aria-invalid', 'true'); input.focus(); flash(`${label} is required.`, 'bad'); return; }
    busy = true;
    form.querySelector('button').disabled = true;
    try { await onSubmit(input.value.trim()); } catch (e) { flash(describeError(e), 'bad'); form.querySelector('button').disabled = false; } finally { busy = false; }
    await refresh();
  });
  form.addEventListener('focusin', () => { busy = true; });
  form.addEventListener('focusout', () => { busy = false; });
  return form;
}

async function loadSessions() {
  const box = $('sessions');
  await load(box, async () => {
    const list = (await api('GET', '/api/v1/sessions?state=active')).filter((s) => s.live);
    if (!list.length) return fill(box, empty('No live sessions right now. Sessions appear here as soon as someone connects through the gateway.'));
    fill(box, table('Live sessions', ['Identity', 'Target', 'Protocol', 'Role', 'Started', 'Time left', 'Bytes ↑/↓', 'Actions'], list.map((s) => el('tr', { 'data-session': s.id },
      el('td', {}, s.identity), el('td', {}, s.target), el('td', {}, badge(s.protocol)), el('td', {}, s.role),
      el('td', {}, fmtTime(s.startedAt)), s.msLeft === null ? el('td', {}, '—') : el('td', { 'data-until': String(Date.now() + s.msLeft) }, `${fmtDuration(s.msLeft)} left`),
      el('td', {}, `${fmtBytes(s.bytesUp)} / ${fmtBytes(s.bytesDown)}`),
      el('td', {}, el('div', { class: 'acts' },
        el('a', { href: `/portal/sessions/${encodeURIComponent(s.id)}`, class: 'button' }, `Watch ${s.identity}`),
        actionForm('Terminate reason', 'Why end it?', 'Terminate', async (reason) => {
          await api('POST', `/api/v1/sessions/${encodeURIComponent(s.id)}/kill`, { reason });
          flash(`Session of ${s.identity} on ${s.target} terminated.`);
        }),
        actionForm('Lock reason', `Why lock ${s.identity}?`, `Lock ${s.identity}`, async (reason) => {
          const l = await api('POST', '/api/v1/locks', { scope: 'identity', value: s.identity, reason });
          flash(`${s.identity} is locked; ${l.sessionsEnded} live session(s) ended.`);
        })))))));
  });
}

async function loadLocks() {
  const box = $('locks');
  await load(box, async () => {
    const list = await api('GET', '/api/v1/locks?active=1');
    if (!list.length) return fill(box, empty('No active locks.'));
    fill(box, table('Active locks', ['Scope', 'Value', 'Reason', 'By', 'Since', 'Until', ''], list.map((l) => el('tr', {},
      el('td', {}, l.scope), el('td', {}, l.value), el('td', {}, l.reason), el('td', {}, l.createdBy), el('td', {}, fmtTime(l.createdAt)), el('td', {}, l.expiresAt ? fmtTime(l.expiresAt) : 'until removed'),
      el('td', {}, el('button', { type: 'button', onclick: async (ev) => {
        ev.target.disabled = true;
        try { await api('DELETE', `/api/v1/locks/${encodeURIComponent(l.id)}`); flash(`Lock on ${l.value} removed.`); } catch (e) { flash(describeError(e), 'bad'); }
        await loadLocks();
      } }, `Remove lock on ${l.value}`))))));
  });
}

async function loadTargets() {
  const box = $('targets');
  await load(box, async () => {
    const list = await api('GET', '/api/v1/targets?all=1');
    if (!list.length) return fill(box, empty('No targets are configured.'));
    fill(box, table('Targets', ['Target', 'Protocol', 'Risk', 'Roles', 'Check'], list.map((tg) => {
      const out = el('span', { class: 'check', role: 'status' });
      const btn = el('button', { type: 'button' }, `Check ${tg.name}`);
      btn.addEventListener('click', async () => {
        btn.disabled = true;
        out.replaceChildren(' checking…');
        try {
          const r = await api('POST', `/api/v1/targets/${encodeURIComponent(tg.name)}/check`, {});
          out.replaceChildren(' ', badge(r.ok ? 'ok' : 'failed', r.ok ? 'ok' : 'bad'), ` ${r.detail}`);
        } catch (e) { out.replaceChildren(' ', badge('failed', 'bad'), ` ${describeError(e)}`); }
        btn.disabled = false;
      });
      return el('tr', { 'data-target': tg.name }, el('td', {}, tg.name, tg.description ? el('div', { class: 'muted' }, tg.description) : null), el('td', {}, tg.protocol),
        el('td', {}, tg.risk), el('td', {}, tg.roles.join(', ')), el('td', {}, btn, out));
    })));
  });
}

async function refresh() { await Promise.all([loadSessions(), loadLocks()]); }

startCountdowns();
await Promise.all([refresh(), loadTargets()]);
setInterval(() => { if (!document.hidden && !busy) void loadSessions(); }, 3000);
