// Watch one live session: terminal sessions in asciinema-player fed by the live WebSocket
// (starting with the current screen), desktop sessions (VNC, RDP) on a canvas starting from the
// snapshot's keyframe, database sessions as a live statement table, other events (keystrokes,
// clicks, transfers) as a list; terminate with a reason or lock the identity from here.
import { api, el, flash, describeError, fmtTime, fmtDuration, mainData, fields, startCountdowns } from './common.js';
import { liveSource } from './live-driver.js';
import { ScreenView } from './screen-view.js';

const $ = (id) => document.getElementById(id);
const id = mainData('session');
const state = $('state');
let session = null;
let source = null;
let screen = null;
let ended = false;
const DESKTOPS = new Set(['vnc', 'rdp']);
/** The grant's end on this browser's clock (from the API's msLeft, so clock skew does not matter). */
let untilLocal = null;

function setState(text, kind = '') { state.textContent = text; state.className = `state ${kind}`; }

function showMeta(s) {
  const until = s.grantExpiresAt;
  const rows = [['Identity', s.identity], ['Target', s.target], ['Role', s.role], ['Protocol', s.protocol], ['Started', fmtTime(s.startedAt)], ['Grant ends', until ? fmtTime(until) : '—']];
  if (untilLocal !== null && !ended) rows.push(['Time left', el('span', { 'data-until': String(untilLocal) }, `${fmtDuration(untilLocal - Date.now())} left`)]);
  $('meta').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  $('meta').removeAttribute('aria-busy');
  $('lock-form').querySelector('button').textContent = `Lock ${s.identity}`;
}

function addStatement(f) {
  $('stmts-section').hidden = false;
  const d = f.data || {};
  const tbody = $('stmts').querySelector('tbody');
  tbody.append(el('tr', { class: d.decision && d.decision !== 'allow' ? 'flagged' : '' },
    el('td', {}, `${Number(f.t).toFixed(1)}s`), el('td', {}, d.kind ?? ''), el('td', {}, el('code', {}, String(d.statement ?? ''))),
    el('td', {}, d.error ? `${d.decision ?? 'allow'} · error: ${d.error}` : `${d.decision ?? 'allow'}${d.rows !== null && d.rows !== undefined ? ` · ${d.rows} rows` : ''}`)));
}

function addEvent(f) {
  $('events-section').hidden = false;
  const d = f.data || {};
  const { type, ...rest } = d;
  $('events').append(el('li', {}, el('strong', {}, `${type ?? 'event'} `), fields(rest), el('span', { class: 'muted' }, ` at ${Number(f.t).toFixed(1)}s`)));
}

/** Input frames (password prompts arrive as stars from the recorder), newest last, bounded. */
function addKeys(f) {
  const list = $('live-keys');
  if (list.querySelector('.muted:only-child')) list.replaceChildren();
  list.append(el('li', {}, el('span', { class: 'muted' }, `${Number(f.t).toFixed(1)}s `), el('kbd', {}, JSON.stringify(String(f.data)).slice(1, -1))));
  while (list.children.length > 200) list.firstElementChild.remove();
  const box = list.parentElement;
  box.scrollTop = box.scrollHeight;
}

function startTerminal(frames) {
  $('term-section').hidden = false;
  source = liveSource(frames);
  const { cols, rows } = source.size;
  window.AsciinemaPlayer.create(source.driver, $('player'), { autoPlay: true, cols, rows, fit: 'width', controls: false, terminalFontSize: 'small' });
}

/** The desktop's canvas, made on the first screen line (the page shell has no place for it). */
function startScreen() {
  if (screen) return;
  const who = session ? `${session.target} (${session.identity})` : 'the session';
  const canvas = el('canvas', { id: 'screen', role: 'img', 'aria-label': `Live screen of ${who}`, width: '800', height: '600' });
  const sec = el('section', { id: 'screen-section', 'aria-labelledby': 'h-screen' }, el('h2', { id: 'h-screen' }, 'Screen'),
    el('p', { class: 'muted' }, 'The remote desktop as the gateway relays it, from the current frame on. Keystrokes and clicks appear under Events.'), canvas);
  $('term-section').after(sec);
  screen = new ScreenView(canvas, { onError: (m) => console.warn(`screen: ${m}`) });
}

function addScreen(line) {
  if (!screen) startScreen();
  screen.push(line);
}

function onFrame(f) {
  if (f.type === 'snapshot') {
    session = f.session;
    showMeta(session);
    const term = f.frames.filter((x) => x.type === 'o' || x.type === 'r');
    if (term.length || session.protocol === 'ssh') startTerminal(term);
    if (DESKTOPS.has(session.protocol)) startScreen();
    for (const x of f.frames) {
      if (x.type === 'query') addStatement(x);
      else if (x.type === 'event') addEvent(x);
      else if (x.type === 'screen') addScreen(x.data);
    }
    setState(`Live: watching ${session.identity} on ${session.target}.`, 'ok');
    return;
  }
  if (f.type === 'o' || f.type === 'r') {
    if (!source) startTerminal([]);
    source.push(f);
  } else if (f.type === 'i') addKeys(f); else if (f.type === 'query') addStatement(f);
  else if (f.type === 'event') addEvent(f);
  else if (f.type === 'screen') addScreen(f.data);
  else if (f.type === 'end') {
    ended = true;
    source?.ended('Session ended');
    if (screen) screen.canvas.setAttribute('aria-label', `Last screen of ${session ? session.target : 'the session'} before it ended`);
    setState(`The session has ended${f.data ? ` (${typeof f.data === 'string' ? f.data : JSON.stringify(f.data)})` : ''}. `, 'done');
    state.append(el('a', { href: `/portal/recordings/${encodeURIComponent(id)}` }, 'Open the recording'));
    for (const b of $('controls').querySelectorAll('button')) b.disabled = true;
  }
}

function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/api/v1/sessions/${encodeURIComponent(id)}/live`);
  ws.addEventListener('message', (ev) => {
    try { onFrame(JSON.parse(ev.data)); } catch (e) { console.error('bad live frame', e); }
  });
  ws.addEventListener('close', () => {
    if (!ended) void checkStill();
  });
}

function showNotLive(s) {
  showMeta(s);
  setState(`This session is not live (it ended ${fmtTime(s.endedAt)}${s.endReason ? `: ${s.endReason}` : ''}). `, 'done');
  state.append(el('a', { href: `/portal/recordings/${encodeURIComponent(id)}` }, 'Open the recording'));
  for (const b of $('controls').querySelectorAll('button')) b.disabled = true;
}

/** Ask the API about the session: 404/403 get a clear message; an ended one links to its recording. */
async function checkStill() {
  try {
    const s = await api('GET', `/api/v1/sessions/${encodeURIComponent(id)}`);
    if (s.live) { if (s.msLeft !== null) untilLocal = Date.now() + s.msLeft; return s; }
    ended = true;
    showNotLive(s);
  } catch (e) {
    setState(describeError(e), 'bad');
    $('controls').hidden = true;
  }
  return null;
}

$('kill-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const reason = $('kill-reason').value.trim();
  if (!reason) { $('kill-reason').setAttribute('aria-invalid', 'true'); $('kill-reason').focus(); flash('Give a reason for terminating the session.', 'bad'); return; }
  try { await api('POST', `/api/v1/sessions/${encodeURIComponent(id)}/kill`, { reason }); flash('Session terminated.'); } catch (e) { flash(describeError(e), 'bad'); }
});
$('lock-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const reason = $('lock-reason').value.trim();
  if (!session) { flash('The session is not loaded yet.', 'bad'); return; }
  if (!reason) { $('lock-reason').setAttribute('aria-invalid', 'true'); $('lock-reason').focus(); flash('Give a reason for the lock.', 'bad'); return; }
  try {
    const l = await api('POST', '/api/v1/locks', { scope: 'identity', value: session.identity, reason });
    flash(`${session.identity} is locked (${l.sessionsEnded} live session(s) ended). Remove the lock on the Sessions page.`);
  } catch (e) { flash(describeError(e), 'bad'); }
});

startCountdowns();
if (await checkStill()) connect();
