// Checked-out accounts (shared accounts one identity holds at a time): who holds each, until when, who waits;
// and, for the holder whose role allows it, "Reveal password" (with a fresh MFA or an authenticator code).
import { api, el, fill, empty, load, fmtTime, table, describeError, mfaLink, ApiError } from './common.js';

/** How long a revealed password stays on the screen. */
const SHOW_MS = 120_000;

/** Ask for the password of the account held under `grantId`; on mfa_required, ask for the authenticator code. */
async function reveal(c, box, button, mfaCode) {
  button.disabled = true;
  box.replaceChildren(el('p', {}, 'Checking…'));
  try {
    const r = await api('POST', `/api/v1/grants/${encodeURIComponent(c.holder.grantId)}/reveal`, mfaCode ? { mfaCode } : {});
    const value = el('code', { class: 'secret-value revealed-password' }, r.password);
    const hide = el('button', { type: 'button' }, 'Hide');
    const timer = setTimeout(() => hide.click(), SHOW_MS);
    hide.addEventListener('click', () => { clearTimeout(timer); value.textContent = ''; box.replaceChildren(el('p', { class: 'muted' }, 'Hidden. The reveal was recorded in the audit log.')); button.focus(); });
    box.replaceChildren(el('div', { class: 'secret', role: 'status' },
      el('p', {}, `Password of ${r.account ?? 'the account'} on ${r.target}: `, value, ' ', hide),
      el('p', { class: 'muted' }, `It rotates when you check the account in or your grant ends (${fmtTime(r.rotatesAt)}), and at the end of each session through the gateway. Shown for ${SHOW_MS / 60_000} minutes.`)));
  } catch (e) {
    box.replaceChildren(el('p', { class: 'err', role: 'alert' }, describeError(e)));
    if (e instanceof ApiError && e.body.error === 'mfa_required') {
      const id = `reveal-mfa-${c.holder.grantId}`;
      const input = el('input', { id, name: 'mfaCode', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}', maxlength: '8', size: '8' });
      const form = el('form', { class: 'inline mfa-code reveal-code' }, el('label', { for: id }, 'Authenticator code'), input, el('button', { type: 'submit', class: 'primary' }, 'Reveal'));
      form.addEventListener('submit', (ev) => { ev.preventDefault(); if (input.value.trim()) void reveal(c, box, button, input.value.trim()); });
      const link = mfaLink(e);
      box.append(form, ...(link ? [el('p', {}, 'Or: ', link)] : []));
      input.focus();
    }
  } finally {
    button.disabled = false;
  }
}

/** The holder's "Reveal password" for each account they hold whose role allows it. */
function revealBoxes(list) {
  return list.filter((c) => c.reveal && c.holder && c.holder.grantId).map((c) => {
    const box = el('div', { class: 'reveal-out', 'aria-live': 'polite' });
    const button = el('button', { type: 'button', class: 'reveal' }, 'Reveal password');
    button.addEventListener('click', () => void reveal(c, box, button));
    return el('div', { class: 'reveal-row', 'data-reveal': c.key },
      el('p', {}, `You hold ${c.targets.join(', ')}. `, button),
      box);
  });
}

/** Fill `box` with the check-out table; `section` (optional) is shown only when there are such accounts. */
export async function showCheckouts(box, section) {
  await load(box, async () => {
    const list = await api('GET', '/api/v1/checkouts');
    if (section) section.hidden = !list.length;
    if (!list.length) return fill(box, empty('No shared account is checked out one identity at a time on this gateway.'));
    fill(box, table('Checked-out accounts', ['Targets', 'Held by', 'Until', 'Waiting'], list.map((c) => el('tr', { 'data-checkout': c.key },
      el('td', {}, c.targets.join(', ')),
      el('td', {}, c.holder ? el('strong', {}, c.holder.identity) : el('span', { class: 'muted' }, 'free')),
      el('td', {}, c.holder ? fmtTime(c.holder.expiresAt) : '—'),
      el('td', {}, c.queue.length ? c.queue.map((q) => q.requester).join(', ') : (c.whenHeld === 'queue' ? 'nobody' : '— (requests are refused while held)'))))),
    ...revealBoxes(list));
  });
}
