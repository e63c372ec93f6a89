// One session's recordings: replay the terminal cast in asciinema-player with the keystrokes
// listed beside it, desktop screens (VNC, RDP) on a canvas with play / pause / seek (the seek
// starts from the keyframe index) and the input beside them, the statement log for databases,
// events and file transfers; each file with its seal (SHA-256) and whether it verifies now.
import { api, el, fill, empty, load, fmtTime, fmtDuration, fmtBytes, badge, table, describeError, mainData, fields } from './common.js';
import { ScreenView, ScreenPlayer, parseScreen } from './screen-view.js';

const $ = (id) => document.getElementById(id);
const id = mainData('session');
/** Screen sections so far (their controls need ids unique on the page). */
let screens = 0;

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

/** mark(t): highlight the last row at or before time t (seconds) and keep it in view in box. */
function highlighter(rows, box) {
  let current = null;
  return (now) => {
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
}

/** Highlight the keystroke the player has just replayed. */
function follow(player, rows, box) {
  const mark = highlighter(rows, box);
  for (const ev of ['input', 'marker', 'seeked', 'ended']) player.addEventListener(ev, () => { void Promise.resolve(player.getCurrentTime()).then((t) => mark(Number(t))); });
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

/** A screen recording's input lines (keys, clicks, clipboard) as list items with their time. */
function screenInputs(lines) {
  const rows = [];
  for (const l of lines) {
    if (l.type !== 'input') continue;
    const at = el('span', { class: 'muted' }, `${l.t.toFixed(2)}s `);
    let what;
    if (l.kind === 'key') what = el('kbd', {}, JSON.stringify(String(l.text ?? '')).slice(1, -1));
    else if (l.kind === 'click') what = `click ${l.button ?? ''} at ${l.x ?? '?'},${l.y ?? '?'}`;
    else if (l.kind === 'clipboard') what = `clipboard ${l.direction ?? ''}${l.allowed === false ? ' (refused)' : ''}${typeof l.text === 'string' ? `: ${JSON.stringify(l.text.slice(0, 80))}` : l.bytes !== undefined ? ` (${l.bytes} bytes)` : ''}`;
    else if (l.kind === 'bell') what = 'bell';
    else continue;
    rows.push({ t: l.t, node: el('li', {}, at, what) });
  }
  return rows;
}

async function screenSection(r, target) {
  const seekId = `screen-seek-${++screens}`;
  const canvas = el('canvas', { role: 'img', 'aria-label': `Recorded screen of ${target}`, width: '800', height: '600' });
  const play = el('button', { type: 'button', disabled: true }, 'Play');
  const seek = el('input', { type: 'range', id: seekId, min: '0', max: '0', step: 'any', value: '0', disabled: true });
  const time = el('span', { class: 'muted', 'aria-live': 'off' }, '');
  const status = el('p', { class: 'muted', role: 'status' }, 'Loading the screen recording…');
  const inputs = el('ol', { class: 'keys', 'aria-label': 'Keystrokes and clicks' });
  const box = el('div', { class: 'keysbox', tabindex: '0', role: 'region', 'aria-label': 'Keystrokes and clicks' }, el('h3', {}, 'Input'), inputs);
  const label = el('label', { for: seekId }, 'Position');
  const controls = el('p', { class: 'screen-controls' }, play, label, seek, time);
  const sec = el('section', { class: 'rec', 'data-kind': 'screen' }, el('h2', {}, 'Screen'), sealBlock(r),
    el('div', { class: 'replay' }, el('div', {}, canvas, controls, status), box));
  // One wrapping row under the screen (CSSOM, allowed by the CSP; portal.css is not touched).
  Object.assign(controls.style, { display: 'flex', flexWrap: 'wrap', alignItems: 'center', gap: '.5rem' });
  Object.assign(label.style, { display: 'inline', margin: '0' });
  Object.assign(seek.style, { flex: '1 1 10rem', minWidth: '0', width: 'auto' });
  try {
    const lines = parseScreen(await text(`/api/v1/recordings/${encodeURIComponent(r.id)}`));
    const rows = screenInputs(lines);
    inputs.replaceChildren(...(rows.length ? rows.map((x) => x.node) : [el('li', { class: 'muted' }, 'No keystrokes or clicks recorded.')]));
    const view = new ScreenView(canvas, { onError: (m) => { status.textContent = `Part of the recording could not be drawn: ${m}`; } });
    const follow = highlighter(rows, box);
    const player = new ScreenPlayer(view, lines, {
      onTime: (t) => {
        if (document.activeElement !== seek) seek.value = String(t);
        time.textContent = `${t.toFixed(1)} s of ${player.duration.toFixed(1)} s`;
        sec.dataset.position = String(t);
        canvas.setAttribute('aria-label', `Recorded screen of ${target} at ${t.toFixed(1)} s`);
        follow(t);
      },
      onState: (playing) => { play.textContent = playing ? 'Pause' : 'Play'; },
    });
    if (!player.index.length) {
      status.textContent = 'This screen recording has no frame (the session ended before the first screen update).';
      return sec;
    }
    seek.max = String(player.duration);
    // Tick marks where a seek lands without replaying from further back.
    const ticks = el('datalist', { id: `${seekId}-keyframes` }, player.index.map((k) => el('option', { value: String(k.t) })));
    seek.setAttribute('list', ticks.id);
    seek.after(ticks);
    play.addEventListener('click', () => { if (player.playing) player.pause(); else player.play(); });
    seek.addEventListener('input', () => { player.pause(); void player.seek(Number(seek.value)); });
    play.disabled = false;
    seek.disabled = false;
    await player.seek(player.index[0].t);
    status.textContent = `${fmtDuration(player.duration * 1000)} · ${player.index.length} keyframe${player.index.length === 1 ? '' : 's'} · ${rows.length} input event${rows.length === 1 ? '' : 's'}`;
    sec.dataset.ready = 'true';
  } catch (e) {
    status.replaceChildren(el('span', { class: 'err', role: 'alert' }, `Cannot load the screen recording: ${describeError(e)}`));
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
  const order = { cast: 0, screen: 1, queries: 2, events: 3 };
  const recs = [...s.recordings].sort((a, b) => (order[a.kind] ?? 9) - (order[b.kind] ?? 9));
  const sections = [];
  for (const r of recs) {
    sections.push(r.kind === 'cast' ? await castSection(r) : r.kind === 'screen' ? await screenSection(r, s.target) : r.kind === 'queries' ? await queriesSection(r) : await eventsSection(r));
  }
  fill($('recs'), sections);
});
