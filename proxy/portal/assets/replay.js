// One session's recordings: replay the terminal cast in asciinema-player with the keystrokes
// listed beside it, the statement log for databases, events and file transfers; each file with
// its seal (SHA-256) and whether it verifies now.
import { api, el, fill, empty, load, fmtTime, fmtDuration, fmtBytes, badge, table, describeError, mainData, fields } from './common.js';

const $ = (id) => document.getElementById(id);
const id = mainData('session');

async function text(url) {
  const res = await fetch(url, { credentials: 'same-origin' });
  if (!res.ok) {
    let msg = `the gateway answered ${res.status}`;
    try { msg = (await res.json()).message ?? msg; } catch { /* not JSON */ }
    throw new Error(msg);
  }
  return res.text();
}

function sealBlock(r) {
  const status = el('span', { class: 'verify', role: 'status' }, 'verifying…');
  api('GET', `/api/v1/recordings/${encodeURIComponent(r.id)}/verify`).then(
    (v) => status.replaceChildren(v.ok ? badge('seal verified: the file is unchanged', 'ok') : badge(`does NOT verify: ${v.detail}`, 'bad')),
    (e) => status.replaceChildren(badge(`cannot verify: ${describeError(e)}`, 'bad')),
  );
  return el('p', { class: 'sealrow' }, 'Seal: ', r.sha256 ? el('code', { class: 'sha' }, `sha256:${r.sha256}`) : el('span', { class: 'muted' }, 'not sealed yet'), ' ', status, ' ',
    el('a', { href: `/api/v1/recordings/${encodeURIComponent(r.id)}`, download: `${id}-${r.kind}` }, `Download (${fmtBytes(r.bytes)})`));
}

/** The cast's keystrokes and markers, each with its time, as list items. */
function keystrokes(castText) {
  const rows = [];
  for (const line of castText.split('\n').slice(1)) {
    if (!line.trim()) continue;
    let ev;
    try { ev = JSON.parse(line); } catch { continue; }
    if (!Array.isArray(ev)) continue;
    const t = Number(ev[0]);
    if (ev[1] === 'i') rows.push({ t, node: el('li', {}, el('span', { class: 'muted' }, `${t.toFixed(2)}s `), el('kbd', {}, JSON.stringify(String(ev[2])).slice(1, -1))) });
    else if (ev[1] === 'm') rows.push({ t, node: el('li', { class: 'marker' }, el('span', { class: 'muted' }, `${t.toFixed(2)}s `), `marker: ${ev[2]}`) });
  }
  return rows;
}

/** Highlight the keystroke the player has just replayed (and keep it in view). */
function follow(player, rows, box) {
  let current = null;
  const mark = async () => {
    const now = Number(await player.getCurrentTime());
    let hit = null;
    for (const r of rows) { if (r.t <= now + 0.05) hit = r; else break; }
    if (hit === current) return;
    current?.node.classList.remove('current');
    current?.node.removeAttribute('aria-current');
    current = hit;
    if (!hit) return;
    hit.node.classList.add('current');
    hit.node.setAttribute('aria-current', 'true');
    box.scrollTop = Math.max(0, hit.node.offsetTop - box.offsetTop - box.clientHeight / 2);
  };
  for (const ev of ['input', 'marker', 'seeked', 'ended']) player.addEventListener(ev, () => { void mark(); });
}

async function castSection(r) {
  const player = el('div', { class: 'player' });
  const keys = el('ol', { class: 'keys', 'aria-label': 'Keystrokes' });
  const sec = el('section', { class: 'rec', 'data-kind': 'cast' }, el('h2', {}, 'Terminal'), sealBlock(r),
    el('div', { class: 'replay' }, player, el('div', { class: 'keysbox', tabindex: '0', role: 'region', 'aria-label': 'Keystrokes' }, el('h3', {}, 'Keystrokes'), keys)));
  try {
    const cast = await text(`/api/v1/recordings/${encodeURIComponent(r.id)}`);
    const k = keystrokes(cast);
    keys.replaceChildren(...(k.length ? k.map((r) => r.node) : [el('li', { class: 'muted' }, 'No keystrokes recorded.')]));
    const p = window.AsciinemaPlayer.create({ data: cast }, player, { fit: 'width', preload: true, terminalFontSize: 'small' });
    follow(p, k, keys.parentElement);
  } catch (e) {
    player.replaceChildren(el('p', { class: 'err', role: 'alert' }, `Cannot load the cast: ${describeError(e)}`));
  }
  return sec;
}

async function queriesSection(r) {
  const box = el('div', {});
  const sec = el('section', { class: 'rec', 'data-kind': 'queries' }, el('h2', {}, 'Statements'), sealBlock(r), box);
  await load(box, async () => {
    const qs = await api('GET', `/api/v1/sessions/${encodeURIComponent(id)}/queries`);
    if (!qs.length) return fill(box, empty('No statements were recorded.'));
    fill(box, table('Statements', ['Time', 'Kind', 'Statement', 'Rows', 'Took', 'Decision'], qs.map((q) => el('tr', { class: q.decision !== 'allow' || q.error ? 'flagged' : '' },
      el('td', {}, fmtTime(q.at)), el('td', {}, q.kind ?? ''), el('td', {}, el('code', {}, q.statement)), el('td', {}, q.rows ?? ''),
      el('td', {}, q.durationMs === null ? '' : `${q.durationMs} ms`), el('td', {}, q.error ? `${q.decision} · ${q.error}` : q.decision)))));
  });
  return sec;
}

async function eventsSection(r) {
  const box = el('div', {});
  const title = { events: 'Events and transfers', http: 'HTTP requests', screen: 'Screen stream' }[r.kind] ?? `${r.kind} stream`;
  const sec = el('section', { class: 'rec', 'data-kind': r.kind }, el('h2', {}, title), sealBlock(r), box);
  if (r.kind !== 'events' && r.kind !== 'http') { fill(box, el('p', { class: 'muted' }, 'This stream is not shown in the browser; download it above.')); return sec; }
  await load(box, async () => {
    const lines = (await text(`/api/v1/recordings/${encodeURIComponent(r.id)}`)).split('\n').filter(Boolean).map((l) => { try { return JSON.parse(l); } catch { return null; } }).filter(Boolean);
    if (!lines.length) return fill(box, empty('No events were recorded.'));
    fill(box, table('Events', ['At', 'Type', 'Details'], lines.map((e) => {
      const { t, type, ...rest } = e;
      return el('tr', { class: /transfer|upload|download|sftp|scp/i.test(String(type)) ? 'transfer' : '' }, el('td', {}, `${Number(t).toFixed(2)}s`), el('td', {}, String(type)), el('td', {}, fields(rest)));
    })));
  });
  return sec;
}

await load($('recs'), async () => {
  const s = await api('GET', `/api/v1/sessions/${encodeURIComponent(id)}`);
  const rows = [['Identity', s.identity], ['Target', `${s.target} (${s.protocol})`], ['Role', s.role], ['Started', fmtTime(s.startedAt)],
    ['Ended', s.endedAt ? `${fmtTime(s.endedAt)} after ${fmtDuration(s.endedAt - s.startedAt)}` : 'still running'], ['End reason', s.endReason ?? '—'],
    ['Bytes ↑/↓', `${fmtBytes(s.bytesUp)} / ${fmtBytes(s.bytesDown)}`], ['Client', s.clientAddr ?? '—'],
    ['Audit trail', el('span', {}, el('a', { href: `/portal/audit?subject=${encodeURIComponent(s.id)}` }, 'this session'), ' · ', el('a', { href: `/portal/audit?subject=${encodeURIComponent(s.grantId)}` }, 'its grant'))]];
  $('meta').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  $('meta').removeAttribute('aria-busy');
  if (!s.recordings.length) return fill($('recs'), empty('This session produced no recording files (it ended before anything was recorded).'));
  const order = { cast: 0, queries: 1, events: 2 };
  const recs = [...s.recordings].sort((a, b) => (order[a.kind] ?? 9) - (order[b.kind] ?? 9));
  const sections = [];
  for (const r of recs) sections.push(r.kind === 'cast' ? await castSection(r) : r.kind === 'queries' ? await queriesSection(r) : await eventsSection(r));
  fill($('recs'), sections);
});
