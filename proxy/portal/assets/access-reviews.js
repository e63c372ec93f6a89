// Access reviews: the reviews I decide (the SOC sees all and starts them), one review's lines to
// confirm or revoke (a revocation needs a reason), and its results as CSV or JSON.
import { api, el, fill, empty, load, flash, describeError, fmtTime, badge, table } from './common.js';

const $ = (id) => document.getElementById(id);
let me = null;

const kindLabel = { eligibility: 'may request', breakglass: 'break-glass member', grant: 'grant longer than a day' };

function what(l) {
  const d = l.detail || {};
  if (l.kind === 'grant') return `${d.target} as ${d.role} until ${fmtTime(d.expiresAt)}${d.reason ? ` (${d.reason})` : ''}`;
  if (l.kind === 'breakglass') return `through ${(d.groups || []).join(', ')}`;
  return `${(d.targets || []).join(', ')} as ${(d.roles || []).join(', ')} through ${(d.groups || []).join(', ')}`;
}

async function loadList() {
  const box = $('reviews');
  await load(box, async () => {
    const list = await api('GET', '/api/v1/access-reviews');
    if (!list.length) return fill(box, empty('No access review is waiting for you.'));
    fill(box, table('Access reviews', ['Policy', 'Started', 'Due', 'Decided', 'State', ''], list.map((r) => el('tr', { 'data-review': r.id },
      el('td', {}, el('strong', {}, r.policy), r.scheduled ? el('span', { class: 'muted' }, ' (scheduled)') : null),
      el('td', {}, `${fmtTime(r.createdAt)} by ${r.createdBy}`),
      el('td', {}, fmtTime(r.dueAt), r.escalatedAt && r.state === 'open' ? ' ' : null, r.escalatedAt && r.state === 'open' ? badge('overdue, escalated', 'bad') : null),
      el('td', {}, `${r.counts.decided} of ${r.counts.total}`),
      el('td', {}, badge(r.state, r.state === 'completed' ? 'ok' : 'warn')),
      el('td', {}, el('a', { href: `?review=${encodeURIComponent(r.id)}` }, `Open the ${r.policy} review`))))));
  });
}

async function loadReview(id) {
  $('review-section').hidden = false;
  const box = $('review');
  await load(box, async () => {
    const v = await api('GET', `/api/v1/access-reviews/${encodeURIComponent(id)}`);
    $('h-review').textContent = `Review of ${v.policy}`;
    const exportLink = (format) => el('a', { href: `/api/v1/access-reviews/${encodeURIComponent(v.id)}/export?format=${format}`, download: '' }, `Download ${format.toUpperCase()}`);
    const rows = v.lines.map((l) => {
      const cid = `c-${l.id}`;
      const comment = el('input', { id: cid, name: 'comment', autocomplete: 'off', 'aria-label': `Comment on ${l.identity}'s ${kindLabel[l.kind]}` });
      const err = el('span', { class: 'err', role: 'alert' });
      const decide = (decision) => async () => {
        err.textContent = '';
        if (decision === 'revoke' && !comment.value.trim()) { err.textContent = 'Say why the access goes.'; comment.setAttribute('aria-invalid', 'true'); comment.focus(); return; }
        for (const b of row.querySelectorAll('button')) b.disabled = true;
        try {
          await api('POST', `/api/v1/access-reviews/${encodeURIComponent(v.id)}/lines/${encodeURIComponent(l.id)}/decide`, { decision, ...(comment.value.trim() ? { comment: comment.value.trim() } : {}) });
          flash(decision === 'revoke' ? `Revoked: ${l.identity} ${kindLabel[l.kind]}${l.kind === 'grant' ? '' : ' no more under this policy'}; live grants ended.` : `Confirmed: ${l.identity} keeps this access.`);
          await Promise.all([loadReview(id), loadList()]);
        } catch (e) {
          err.textContent = describeError(e);
          for (const b of row.querySelectorAll('button')) b.disabled = false;
        }
      };
      const own = me && l.identity === me.sub;
      const actions = l.decision
        ? el('td', {}, badge(l.decision === 'revoke' ? 'revoked' : 'confirmed', l.decision === 'revoke' ? 'bad' : 'ok'), ` by ${l.decidedBy} ${fmtTime(l.decidedAt)}`, l.comment ? el('div', { class: 'muted' }, `“${l.comment}”`) : null)
        : !v.mayDecide ? el('td', { class: 'muted' }, 'waiting for a reviewer')
          : own ? el('td', { class: 'muted' }, 'Your own access: another reviewer decides it.')
            : el('td', {}, comment, ' ',
              el('button', { type: 'button', class: 'primary', onclick: decide('confirm') }, `Confirm ${l.identity}`), ' ',
              el('button', { type: 'button', class: 'danger', onclick: decide('revoke') }, `Revoke ${l.identity}`), ' ', err);
      const row = el('tr', { 'data-line': l.id, 'data-identity': l.identity, 'data-kind': l.kind },
        el('td', {}, el('strong', {}, l.identity)), el('td', {}, kindLabel[l.kind]), el('td', {}, what(l)), actions);
      return row;
    });
    fill(box,
      el('p', {}, `${v.counts.decided} of ${v.counts.total} lines decided · reviewers ${v.reviewers.join(', ')} · due ${fmtTime(v.dueAt)}`,
        v.escalatedAt ? el('span', {}, ' · ', badge(`escalated to ${v.escalateTo.join(', ') || 'the SOC'}`, 'bad')) : null, ' · ', badge(v.state, v.state === 'completed' ? 'ok' : 'warn')),
      el('p', { class: 'actions' }, exportLink('csv'), ' ', exportLink('json')),
      rows.length ? table(`Lines of the ${v.policy} review`, ['Identity', 'Access', 'What', 'Decision'], rows) : empty('Nothing to review: nobody held access under this policy.'));
  });
}

async function setupStart() {
  if (!me?.soc) return;
  let policies;
  try { policies = await api('GET', '/api/v1/access-reviews/policies'); } catch { return; }
  $('start-section').hidden = false;
  $('st-policy').replaceChildren(...policies.map((p) => el('option', { value: p.name }, p.schedule ? `${p.name} (every ${p.schedule.every})` : p.name)));
  $('start-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = $('st-error');
    err.textContent = '';
    const reviewers = $('st-reviewers').value.split(',').map((x) => x.trim()).filter(Boolean);
    const button = ev.target.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const v = await api('POST', '/api/v1/access-reviews', { policy: $('st-policy').value, dueIn: $('st-due').value.trim(), ...(reviewers.length ? { reviewers } : {}) });
      flash(`Review of ${v.policy} started: ${v.counts.total} line(s), due ${fmtTime(v.dueAt)}.`);
      history.replaceState(null, '', `?review=${encodeURIComponent(v.id)}`);
      await Promise.all([loadList(), loadReview(v.id)]);
    } catch (e) {
      err.textContent = describeError(e);
    } finally {
      button.disabled = false;
    }
  });
}

try { me = await api('GET', '/api/v1/me'); } catch (e) { flash(describeError(e), 'bad'); }
const want = new URLSearchParams(location.search).get('review');
await Promise.all([loadList(), want ? loadReview(want) : null, setupStart()]);
