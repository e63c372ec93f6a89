// Approvals: pending requests I can act on (approve / deny with a comment) and open break-glass
// reviews to close. Large buttons, one card per request: made for a phone.
import { api, el, fill, empty, load, flash, describeError, fmtTime, fmtDuration, badge, mfaLink } from './common.js';

const $ = (id) => document.getElementById(id);
let me = null;

async function loadPending() {
  const box = $('pending');
  await load(box, async () => {
    const list = await api('GET', '/api/v1/requests?scope=approvable');
    if (!list.length) return fill(box, empty('Nothing is waiting for you. New requests you can approve appear here.'));
    fill(box, list.map((r) => {
      const cid = `c-${r.id}`;
      const comment = el('textarea', { id: cid, rows: '2', name: 'comment', placeholder: 'Optional for approval; say why when denying' });
      const err = el('p', { class: 'err', role: 'alert' });
      const act = (action) => async () => {
        for (const b of card.querySelectorAll('button')) b.disabled = true;
        err.textContent = '';
        try {
          const out = await api('POST', `/api/v1/requests/${encodeURIComponent(r.id)}/${action}`, comment.value.trim() ? { comment: comment.value.trim() } : {});
          flash(action === 'approve'
            ? (out.state === 'approved' ? `Approved: ${r.requester} now has ${r.target} as ${r.role}.` : `Your approval is recorded; the request now waits for stage ${out.currentStage + 1} of ${out.stages.length}.`)
            : `Denied ${r.requester}'s request for ${r.target}.`);
          await loadPending();
        } catch (e) {
          err.textContent = describeError(e);
          const mfa = mfaLink(e);
          if (mfa) err.append(' ', mfa);
          for (const b of card.querySelectorAll('button')) b.disabled = false;
        }
      };
      const stages = r.stages || [];
      const prior = (r.approvals || []).filter((a) => a.decision === 'approve').map((a) => `${a.approver} (stage ${a.stage + 1})`);
      const card = el('article', { class: 'card', 'data-request': r.id },
        el('h3', {}, `${r.requester} → ${r.target} `, el('span', { class: 'muted' }, `as ${r.role}`), ' ', badge(`${r.risk} risk`, r.risk === 'critical' || r.risk === 'high' ? 'bad' : r.risk === 'medium' ? 'warn' : 'ok')),
        el('p', {}, `For ${fmtDuration(r.durationMs)} · filed ${fmtTime(r.createdAt)} · stage ${Math.min(r.currentStage + 1, stages.length)} of ${stages.length}`,
          r.stageDeadline ? ` · decide before ${fmtTime(r.stageDeadline)}` : '', r.mfaRequired ? ' · needs MFA' : ''),
        el('blockquote', {}, r.reason),
        prior.length ? el('p', { class: 'muted' }, `Already approved by ${prior.join(', ')}`) : null,
        el('div', { class: 'field wide' }, el('label', { for: cid }, 'Comment'), comment),
        err,
        el('div', { class: 'actions' },
          el('button', { type: 'button', class: 'primary', onclick: act('approve') }, `Approve ${r.requester}`),
          el('button', { type: 'button', class: 'danger', onclick: act('deny') }, 'Deny')));
      return card;
    }));
  });
}

async function loadReviews() {
  const box = $('reviews');
  await load(box, async () => {
    const list = (await api('GET', '/api/v1/reviews?state=open'));
    if (!list.length) return fill(box, empty('No open break-glass reviews.'));
    fill(box, list.map((rv) => {
      const cid = `r-${rv.id}`;
      const comment = el('textarea', { id: cid, rows: '2', required: true, placeholder: 'What happened and whether it was justified' });
      const err = el('p', { class: 'err', role: 'alert' });
      const own = me && rv.identity === me.sub;
      // The gateway says who may close it (the SOC or a reviewer group, never a break-glass member).
      const why = own ? null : rv.closeRefusal ?? null;
      const btn = el('button', { type: 'button', class: 'primary', disabled: own || !!why }, 'Close review');
      btn.addEventListener('click', async () => {
        if (!comment.value.trim()) { err.textContent = 'Write a comment before closing the review.'; comment.setAttribute('aria-invalid', 'true'); comment.focus(); return; }
        btn.disabled = true;
        try { await api('POST', `/api/v1/reviews/${encodeURIComponent(rv.id)}/close`, { comment: comment.value.trim() }); flash('Review closed.'); await loadReviews(); } catch (e) { err.textContent = describeError(e); btn.disabled = false; }
      });
      return el('article', { class: 'card', 'data-review': rv.id },
        el('h3', {}, `${rv.identity} used break-glass `, badge('break-glass', 'bad')),
        el('p', {}, `Opened ${fmtTime(rv.openedAt)} · grant ${rv.grantId}`),
        el('blockquote', {}, rv.reason),
        own ? el('p', { class: 'muted' }, 'You used this break-glass yourself; someone else must close its review.') : null,
        why ? el('p', { class: 'muted' }, `You cannot close this review: ${why}.`) : null,
        el('div', { class: 'field wide' }, el('label', { for: cid }, 'Review comment'), comment), err, btn);
    }));
  });
}

/**
 * A notification's link (?request=<id> or ?review=<id>) points at one card: it is marked and
 * scrolled to. Nothing is decided by opening the page; the buttons still have to be pressed.
 */
function showLinked() {
  const q = new URLSearchParams(location.search);
  for (const [param, attr, gone] of [
    ['request', 'data-request', 'That request no longer waits for you: it was decided, expired or cancelled, or it is not yours to approve.'],
    ['review', 'data-review', 'That break-glass review is closed, or not yours to close.'],
  ]) {
    const id = q.get(param);
    if (!id) continue;
    const card = [...document.querySelectorAll(`[${attr}]`)].find((c) => c.getAttribute(attr) === id);
    if (!card) { flash(gone, 'warn'); continue; }
    card.classList.add('linked');
    card.setAttribute('aria-current', 'true');
    const h = card.querySelector('h3');
    if (h) { h.setAttribute('tabindex', '-1'); h.focus({ preventScroll: true }); }
    card.scrollIntoView({ block: 'center' });
  }
}

try { me = await api('GET', '/api/v1/me'); } catch (e) { flash(describeError(e), 'bad'); }
await Promise.all([loadPending(), loadReviews()]);
showLinked();
setInterval(() => { if (!document.hidden && !document.activeElement?.matches('textarea')) void loadPending(); }, 15000);
