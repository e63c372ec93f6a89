// Delegations: the approvals I handed to someone for a time window, the ones handed to me; end one; give one.
import { api, el, fill, empty, load, flash, describeError, fmtTime, badge, inputTime, table } from './common.js';

const $ = (id) => document.getElementById(id);
let me = null;

async function loadDelegations() {
  const box = $('delegations');
  await load(box, async () => {
    const list = await api('GET', '/api/v1/delegations');
    if (!list.length) return fill(box, empty('No delegation is running or planned. Delegate your approvals below before you go away.'));
    fill(box, table('Delegations', ['From', 'To', 'Window', 'Reason', 'State', ''], list.map((d) => {
      const now = Date.now();
      const state = d.revokedAt ? badge('ended', '') : d.startsAt > now ? badge('planned', 'warn') : badge('active', 'ok');
      const end = d.revokedAt ? null : el('button', { type: 'button', class: 'danger' }, d.delegate === me?.sub ? 'Decline' : 'End now');
      end?.addEventListener('click', async () => {
        end.disabled = true;
        try { await api('POST', `/api/v1/delegations/${encodeURIComponent(d.id)}/revoke`, {}); flash(`The delegation from ${d.delegator} to ${d.delegate} has ended.`); await loadDelegations(); } catch (e) { flash(describeError(e), 'bad'); end.disabled = false; }
      });
      return el('tr', { 'data-delegation': d.id },
        el('td', {}, d.delegator === me?.sub ? el('strong', {}, 'you') : d.delegator), el('td', {}, d.delegate === me?.sub ? el('strong', {}, 'you') : d.delegate),
        el('td', {}, `${fmtTime(d.startsAt)} – ${fmtTime(d.endsAt)}`), el('td', {}, d.reason), el('td', {}, state), el('td', {}, end));
    })));
  });
}

$('delegate-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = $('dl-error');
  err.textContent = '';
  for (const i of ev.target.querySelectorAll('[aria-invalid]')) i.removeAttribute('aria-invalid');
  const until = inputTime($('dl-until').value);
  const from = inputTime($('dl-from').value);
  const body = { delegate: $('dl-delegate').value.trim(), reason: $('dl-reason').value.trim(), ...(from ? { from } : {}), ...(until ? { until } : {}) };
  const button = ev.target.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const d = await api('POST', '/api/v1/delegations', body);
    flash(`${d.delegate} decides for you from ${fmtTime(d.startsAt)} until ${fmtTime(d.endsAt)}.`);
    ev.target.reset();
    await loadDelegations();
  } catch (e) {
    err.textContent = describeError(e);
    const field = e.body?.field;
    const input = field ? $(`dl-${field === 'duration' ? 'until' : field}`) : null;
    if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
  } finally {
    button.disabled = false;
  }
});

try { me = await api('GET', '/api/v1/me'); } catch (e) { flash(describeError(e), 'bad'); }
await loadDelegations();
