// Tollgate RDP in the browser: the desktop on a canvas (drawn by the portal's screen renderer
// from the recorder's screen lines, exactly as the live view and replay draw them), keys sent as
// KeyboardEvent.code (the gateway turns them into scancodes; the target applies the person's
// layout), pointer, wheel and a clipboard box. The desktop is sized to the window at connect;
// after the window changes size, Reconnect opens a new session at the new size.
import { ScreenView } from '/portal/assets/screen-view.js';

const body = document.body;
const canvas = document.getElementById('screen');
const statusEl = document.getElementById('status');
const clip = document.getElementById('clip');
const clipSend = document.getElementById('clip-send');
const reconnect = document.getElementById('reconnect');
const view = new ScreenView(canvas, { onError: (m) => console.warn(`screen: ${m}`) });

function status(text, bad = false) {
  statusEl.textContent = text;
  statusEl.title = text; // the line is cut to the window's width; the whole text on hover
  statusEl.className = bad ? 'bad' : '';
}

/** The desktop size that fills the window below the header (width a multiple of 4). */
function wanted() {
  const header = document.querySelector('header').getBoundingClientRect().height;
  return { width: Math.max(320, Math.floor((window.innerWidth - 24) / 4) * 4), height: Math.max(200, Math.floor(window.innerHeight - header - 20)) };
}

/** The person's keyboard layout as a language tag: the physical layout where the browser tells it, else the language. */
async function layoutTag() {
  const lang = navigator.language || 'en-US';
  try {
    const map = navigator.keyboard && (await navigator.keyboard.getLayoutMap());
    if (map) {
      const q = map.get('KeyQ'), y = map.get('KeyY');
      if (q === 'a') return lang.startsWith('fr') ? lang : 'fr-FR';
      if (y === 'z') return /^(de|cs|sk|hu|sl|hr)/.test(lang) ? lang : 'de-DE';
      if (q === 'q' && y === 'y' && /^(de|fr)/.test(lang)) return 'en-US';
    }
  } catch { /* not allowed here: the language decides */ }
  return lang;
}

let ws = null;
let info = null;
let desktop = null;

function send(o) {
  if (ws && ws.readyState === 1 && desktop) ws.send(JSON.stringify(o));
}

async function connect() {
  body.dataset.ended = '';
  reconnect.hidden = true;
  const size = wanted();
  const q = new URLSearchParams({ target: body.dataset.target, role: body.dataset.role, width: String(size.width), height: String(size.height), kbd: await layoutTag() });
  status(`connecting at ${size.width}x${size.height}…`);
  const sock = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/rdp/ws?${q}`);
  ws = sock;
  desktop = null;
  sock.onmessage = (ev) => {
    if (sock !== ws) return;
    const m = JSON.parse(ev.data);
    switch (m.type) {
      case 'init':
        info = m;
        body.dataset.session = m.session;
        view.setSize(m.width, m.height);
        clipSend.disabled = !m.clipboard.toServer;
        status(`connecting to ${m.name}…`);
        return;
      case 'desktop':
        desktop = m;
        body.dataset.desktop = `${m.width}x${m.height}`;
        view.setSize(m.width, m.height);
        status(`connected to ${info ? info.name : 'the desktop'} (${m.width}x${m.height})`);
        canvas.focus();
        return;
      case 'clipboard':
        clip.value = m.text;
        body.dataset.clipboard = m.text;
        status('the desktop copied text: it is in the clipboard box');
        return;
      case 'warning':
        status(m.message, true);
        return;
      case 'problem':
        status(m.message, true);
        return;
      case 'end':
        status(m.message, true);
        body.dataset.endMessage = m.message;
        body.dataset.ended = 'true';
        reconnect.hidden = false;
        return;
      default:
        view.push(m);
    }
  };
  sock.onclose = () => {
    if (sock !== ws) return;
    if (body.dataset.ended !== 'true') { status('disconnected', true); body.dataset.ended = 'true'; }
    reconnect.hidden = false;
  };
  sock.onerror = () => { if (sock === ws) status('the gateway refused the connection (sign in, check the grant)', true); };
}

// ---- input ----
const pos = (e) => {
  const r = canvas.getBoundingClientRect();
  return { x: Math.max(0, Math.round((e.clientX - r.left) * canvas.width / r.width)), y: Math.max(0, Math.round((e.clientY - r.top) * canvas.height / r.height)) };
};
let locks = '';
function key(e, down) {
  e.preventDefault();
  const l = { caps: e.getModifierState('CapsLock'), num: e.getModifierState('NumLock'), scroll: e.getModifierState('ScrollLock') };
  const k = JSON.stringify(l);
  if (k !== locks) { locks = k; send({ type: 'sync', ...l }); }
  if (e.code) send({ type: 'key', code: e.code, down });
}
canvas.addEventListener('keydown', (e) => key(e, true));
canvas.addEventListener('keyup', (e) => key(e, false));
canvas.addEventListener('mousemove', (e) => send({ type: 'pointer', ...pos(e), buttons: e.buttons & 31 }));
canvas.addEventListener('mousedown', (e) => { canvas.focus(); send({ type: 'pointer', ...pos(e), buttons: e.buttons & 31 }); e.preventDefault(); });
canvas.addEventListener('mouseup', (e) => { send({ type: 'pointer', ...pos(e), buttons: e.buttons & 31 }); e.preventDefault(); });
canvas.addEventListener('contextmenu', (e) => e.preventDefault());
canvas.addEventListener('wheel', (e) => {
  // One notch is 120 in RDP; browsers report about 100 pixels or 3 lines per notch.
  const f = e.deltaMode === 1 ? 40 : e.deltaMode === 2 ? 120 : 1.2;
  const clampInt = (v) => Math.max(-1000, Math.min(1000, Math.round(v * f)));
  send({ type: 'wheel', ...pos(e), dx: clampInt(e.deltaX), dy: clampInt(e.deltaY) });
  e.preventDefault();
}, { passive: false });

clipSend.addEventListener('click', () => {
  send({ type: 'clipboard', text: clip.value });
  status('clipboard sent: paste it on the desktop');
  canvas.focus();
});

reconnect.addEventListener('click', () => {
  if (ws && ws.readyState <= 1) ws.close();
  void connect();
});

// After the window changed size, offer to reconnect at the new size (the desktop keeps its size).
let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    const w = wanted();
    if (!desktop || (Math.abs(w.width - desktop.width) < 32 && Math.abs(w.height - desktop.height) < 32)) return;
    reconnect.textContent = `Reconnect at ${w.width}x${w.height}`;
    reconnect.hidden = false;
  }, 250);
});

void connect();
