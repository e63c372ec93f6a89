// Recordings search: by identity, target and time; each recording with its seal and whether it
// verifies (the gateway re-hashes the file on request).
import { api, el, fill, empty, load, fmtTime, fmtDuration, fmtBytes, badge, inputTime, table, sealCell } from './common.js';

const $ = (id) => document.getElementById(id);

async function search(params) {
  const box = $('results');
  await load(box, async () => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
    const list = await api('GET', `/api/v1/recordings?${q}`);
    const withRecs = list.filter((x) => x.recordings.length);
    if (!withRecs.length) return fill(box, empty(Object.keys(params).some((k) => params[k]) ? 'No recordings match this search.' : 'No recordings yet. Every session through the gateway is recorded and appears here.'));
    fill(box, table('Recordings', ['Session', 'Identity', 'Target', 'Started', 'Length', 'Recordings and seals'], withRecs.map(({ session: s, recordings }) => el('tr', { 'data-session': s.id },
      el('td', {}, el('a', { href: `/portal/recordings/${encodeURIComponent(s.id)}` }, `Replay ${s.target} · ${s.identity}`), s.live ? [' ', badge('live', 'warn')] : null),
      el('td', {}, s.identity), el('td', {}, `${s.target} (${s.protocol})`), el('td', {}, fmtTime(s.startedAt)),
      el('td', {}, s.endedAt ? fmtDuration(s.endedAt - s.startedAt) : 'running'),
      el('td', {}, el('table', { class: 'inner' }, el('tbody', {}, recordings.map((r) => el('tr', {}, el('td', {}, `${r.kind} · ${fmtBytes(r.bytes)}`), sealCell(r))))))))));
  });
}

const form = $('search');
{
  const read = () => ({ identity: $('f-identity').value.trim(), target: $('f-target').value.trim(), since: inputTime($('f-since').value), until: inputTime($('f-until').value) });
  const p = new URLSearchParams(location.search);
  if (p.get('identity')) $('f-identity').value = p.get('identity');
  if (p.get('target')) $('f-target').value = p.get('target');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = read();
    const url = new URLSearchParams();
    if (v.identity) url.set('identity', v.identity);
    if (v.target) url.set('target', v.target);
    history.replaceState(null, '', `?${url}`);
    void search(v);
  });
  await search(read());
}
