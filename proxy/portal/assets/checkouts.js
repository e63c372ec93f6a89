// Checked-out accounts (shared accounts one identity holds at a time): who holds each, until when, who waits.
import { api, el, fill, empty, load, fmtTime, table } from './common.js';

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
      el('td', {}, c.queue.length ? c.queue.map((q) => q.requester).join(', ') : (c.whenHeld === 'queue' ? 'nobody' : '— (requests are refused while held)'))))));
  });
}
