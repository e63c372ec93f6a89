// Audit: filterable, append-only, hash-chained events, with the chain's verification status.
import { api, el, fill, empty, load, fmtTime, badge, inputTime, table, describeError, fields } from './common.js';

const $ = (id) => document.getElementById(id);
const PAGE = 200;
let lastSeq = 0;
let filters = {};

async function verifyChain() {
  const p = $('chain');
  try {
    const v = await api('GET', '/api/v1/audit/verify');
    p.replaceChildren(v.ok
      ? el('span', {}, badge('chain verified', 'ok'), ` ${v.count} events; every hash links to the one before. Head `, el('code', {}, String(v.head).slice(0, 16)), '…')
      : el('span', {}, badge('chain BROKEN', 'bad'), ` at event #${v.brokenAt}: ${v.detail}`));
    p.className = `chain ${v.ok ? 'ok' : 'bad'}`;
  } catch (e) {
    p.replaceChildren(badge('cannot verify', 'bad'), ` ${describeError(e)}`);
  }
}

function rows(events) {
  return events.map((e) => el('tr', { 'data-seq': String(e.seq) },
    el('td', {}, String(e.seq)), el('td', {}, fmtTime(e.at)), el('td', {}, e.actor), el('td', {}, el('strong', {}, e.action)),
    el('td', {}, e.subject ?? ''), el('td', { class: 'data' }, fields(e.data))));
}

async function fetchPage(after) {
  const q = new URLSearchParams({ limit: String(PAGE) });
  for (const [k, v] of Object.entries(filters)) if (v !== undefined && v !== '') q.set(k, String(v));
  if (after) q.set('afterSeq', String(after));
  return api('GET', `/api/v1/audit?${q}`);
}

async function reload() {
  const box = $('events');
  lastSeq = 0;
  await load(box, async () => {
    const events = await fetchPage(0);
    $('more').hidden = events.length < PAGE;
    if (!events.length) return fill(box, empty(Object.values(filters).some((v) => v) ? 'No audit events match these filters.' : 'No audit events yet.'));
    lastSeq = events.at(-1).seq;
    fill(box, table('Audit events', ['#', 'When', 'Actor', 'Action', 'Subject', 'Details'], rows(events)));
  });
}

$('more').addEventListener('click', async () => {
  try {
    const events = await fetchPage(lastSeq);
    if (events.length) { lastSeq = events.at(-1).seq; $('events').querySelector('tbody').append(...rows(events)); }
    $('more').hidden = events.length < PAGE;
  } catch (e) { $('events').append(el('p', { class: 'err', role: 'alert' }, describeError(e))); }
});

$('filters').addEventListener('submit', (ev) => {
  ev.preventDefault();
  filters = { actor: $('a-actor').value.trim(), action: $('a-action').value.trim(), subject: $('a-subject').value.trim(), since: inputTime($('a-since').value), until: inputTime($('a-until').value) };
  void reload();
});

const p = new URLSearchParams(location.search);
for (const k of ['actor', 'action', 'subject']) if (p.get(k)) { $(`a-${k}`).value = p.get(k); filters[k] = p.get(k); }
await Promise.all([verifyChain(), reload()]);
