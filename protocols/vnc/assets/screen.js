// Tollgate VNC in the browser: one renderer for screen lines (keyframe / rect / copy / resize /
// cursor, exactly as recorded), used by the interactive viewer, the SOC live view and replay.
const body = document.body;
const canvas = document.getElementById('screen');
const g = canvas.getContext('2d');
const statusEl = document.getElementById('status');
const eventsEl = document.getElementById('events');

function status(text, bad = false) {
  statusEl.textContent = text;
  statusEl.className = bad ? 'bad' : '';
}

function logEvent(text) {
  const li = document.createElement('li');
  li.textContent = text;
  eventsEl.append(li);
  while (eventsEl.children.length > 500) eventsEl.firstChild.remove();
  eventsEl.scrollTop = eventsEl.scrollHeight;
}

function pngImage(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return createImageBitmap(new Blob([bytes], { type: 'image/png' }));
}

/** Applies lines in order (PNG decoding is asynchronous, so lines queue behind each other). */
class Screen {
  constructor() { this.queue = Promise.resolve(); this.frames = 0; }
  apply(line) {
    this.queue = this.queue.then(() => this.applyNow(line)).catch((e) => status(`render error: ${e.message}`, true));
    return this.queue;
  }
  async applyNow(l) {
    switch (l.type) {
      case 'header':
        if (l.width && l.height) { canvas.width = l.width; canvas.height = l.height; }
        return;
      case 'init':
        canvas.width = l.width; canvas.height = l.height;
        return;
      case 'keyframe': {
        const img = await pngImage(l.png);
        if (canvas.width !== img.width || canvas.height !== img.height) { canvas.width = img.width; canvas.height = img.height; }
        g.drawImage(img, 0, 0);
        this.frames++;
        body.dataset.frames = String(this.frames);
        return;
      }
      case 'rect': {
        const img = await pngImage(l.png);
        g.drawImage(img, l.x, l.y);
        this.frames++;
        body.dataset.frames = String(this.frames);
        return;
      }
      case 'copy':
        g.drawImage(canvas, l.sx, l.sy, l.w, l.h, l.x, l.y, l.w, l.h);
        return;
      case 'resize': {
        const keep = g.getImageData(0, 0, Math.min(canvas.width, l.w), Math.min(canvas.height, l.h));
        canvas.width = l.w; canvas.height = l.h;
        g.putImageData(keep, 0, 0);
        return;
      }
      case 'cursor':
        canvas.style.cursor = l.png ? `url(data:image/png;base64,${l.png}) ${l.hx} ${l.hy}, default` : 'none';
        return;
      case 'input':
        if (l.kind === 'key') logEvent(`key ${JSON.stringify(l.text)}`);
        else if (l.kind === 'click') logEvent(`click ${l.button} at ${l.x},${l.y}`);
        else if (l.kind === 'clipboard') logEvent(`clipboard ${l.direction}${l.allowed ? '' : ' (refused)'}: ${JSON.stringify(String(l.text).slice(0, 80))}`);
        return;
      default:
    }
  }
}

const screen = new Screen();

// ---- keyboard: DOM key names to X keysyms
const NAMED = {
  Enter: 0xff0d, Backspace: 0xff08, Tab: 0xff09, Escape: 0xff1b, Delete: 0xffff, Home: 0xff50, End: 0xff57,
  PageUp: 0xff55, PageDown: 0xff56, Insert: 0xff63, ArrowLeft: 0xff51, ArrowUp: 0xff52, ArrowRight: 0xff53, ArrowDown: 0xff54,
  Shift: 0xffe1, Control: 0xffe3, Alt: 0xffe9, Meta: 0xffeb, AltGraph: 0xfe03, CapsLock: 0xffe5,
};
for (let i = 1; i <= 12; i++) NAMED[`F${i}`] = 0xffbd + i;
function keysym(e) {
  if (NAMED[e.key] !== undefined) return NAMED[e.key];
  if ([...e.key].length === 1) {
    const cp = e.key.codePointAt(0);
    return cp < 0x100 ? cp : 0x01000000 + cp;
  }
  return null;
}

function viewer() {
  const q = new URLSearchParams({ target: body.dataset.target, role: body.dataset.role });
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/vnc/ws?${q}`);
  let info = null;
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === 'init') {
      info = m;
      body.dataset.session = m.session;
      status(`connected to ${m.name}${m.viewOnly ? ' (view only)' : ''}`);
      // Clipboard towards the desktop only where the role allows it.
      document.getElementById('clip-send').disabled = m.viewOnly || !(m.clipboard === 'both' || m.clipboard === 'to-server');
      screen.apply(m);
    } else if (m.type === 'end') {
      status(m.message, true);
      body.dataset.ended = 'true';
    } else if (m.type === 'warning') {
      status(m.message, true);
      logEvent(`warning: ${m.message}`);
    } else if (m.type === 'clipboard') {
      // The desktop copied text (the role lets it reach the browser): it fills the clipboard box.
      document.getElementById('clip').value = m.text;
      logEvent(`remote clipboard: ${JSON.stringify(m.text.slice(0, 80))}`);
    } else {
      screen.apply(m);
    }
  };
  ws.onclose = () => { if (!body.dataset.ended) { status('disconnected', true); body.dataset.ended = 'true'; } };
  ws.onerror = () => status('the gateway refused the connection (sign in, check the grant)', true);
  const send = (o) => { if (ws.readyState === 1 && info && !info.viewOnly) ws.send(JSON.stringify(o)); };
  // The clipboard box's text goes to the desktop's clipboard (when the role allows it, the gateway lets it through).
  document.getElementById('clip-send').addEventListener('click', () => {
    const text = document.getElementById('clip').value;
    send({ type: 'clipboard', text });
    logEvent(`clipboard sent: ${JSON.stringify(text.slice(0, 80))}`);
  });
  canvas.addEventListener('keydown', (e) => { const k = keysym(e); if (k !== null) { e.preventDefault(); send({ type: 'key', down: true, keysym: k }); } });
  canvas.addEventListener('keyup', (e) => { const k = keysym(e); if (k !== null) { e.preventDefault(); send({ type: 'key', down: false, keysym: k }); } });
  let mask = 0;
  const pos = (e) => {
    const r = canvas.getBoundingClientRect();
    return { x: Math.max(0, Math.round((e.clientX - r.left) * canvas.width / r.width)), y: Math.max(0, Math.round((e.clientY - r.top) * canvas.height / r.height)) };
  };
  const bit = (b) => (b === 0 ? 1 : b === 1 ? 2 : b === 2 ? 4 : 0);
  canvas.addEventListener('mousemove', (e) => send({ type: 'pointer', mask, ...pos(e) }));
  canvas.addEventListener('mousedown', (e) => { canvas.focus(); mask |= bit(e.button); send({ type: 'pointer', mask, ...pos(e) }); e.preventDefault(); });
  canvas.addEventListener('mouseup', (e) => { mask &= ~bit(e.button); send({ type: 'pointer', mask, ...pos(e) }); e.preventDefault(); });
  canvas.addEventListener('contextmenu', (e) => e.preventDefault());
  canvas.addEventListener('wheel', (e) => {
    const b = e.deltaY < 0 ? 8 : 16;
    send({ type: 'pointer', mask: mask | b, ...pos(e) });
    send({ type: 'pointer', mask, ...pos(e) });
    e.preventDefault();
  }, { passive: false });
  canvas.focus();
}

function watch() {
  const id = body.dataset.session;
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/sessions/${encodeURIComponent(id)}/live`);
  const frame = (f) => {
    if (f.type === 'screen') screen.apply(f.data);
    else if (f.type === 'event') logEvent(`${f.data.type}: ${JSON.stringify(f.data).slice(0, 160)}`);
    else if (f.type === 'end') { status('the session ended', true); body.dataset.ended = 'true'; }
  };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === 'snapshot') {
      status(`watching ${m.session.identity} on ${m.session.target} (${m.session.role})`);
      body.dataset.identity = m.session.identity;
      for (const f of m.frames) frame(f);
    } else frame(m);
  };
  ws.onclose = () => { if (!body.dataset.ended) { status('disconnected', true); body.dataset.ended = 'true'; } };
  const post = async (path, payload) => {
    const r = await fetch(path, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) });
    if (!r.ok) throw new Error((await r.json().catch(() => ({}))).message ?? `HTTP ${r.status}`);
    return r.json();
  };
  const reason = () => document.getElementById('reason').value.trim() || 'terminated from the live view';
  document.getElementById('kill').addEventListener('click', () => post(`/api/v1/sessions/${encodeURIComponent(id)}/kill`, { reason: reason() })
    .then(() => status('session terminated', true), (e) => status(e.message, true)));
  document.getElementById('lock').addEventListener('click', () => post('/api/v1/locks', { scope: 'identity', value: body.dataset.identity, reason: reason() })
    .then(() => status(`${body.dataset.identity} locked`, true), (e) => status(e.message, true)));
}

async function replay() {
  const id = body.dataset.recording;
  const r = await fetch(`/api/v1/recordings/${encodeURIComponent(id)}`, { credentials: 'same-origin' });
  if (!r.ok) { status(`cannot load the recording (HTTP ${r.status})`, true); return; }
  const lines = (await r.text()).split('\n').filter(Boolean).flatMap((l) => { try { return [JSON.parse(l)]; } catch { return []; } });
  const keyframes = lines.map((l, i) => (l.type === 'keyframe' ? i : -1)).filter((i) => i >= 0);
  const duration = lines.length ? lines[lines.length - 1].t : 0;
  const seek = document.getElementById('seek');
  const timeEl = document.getElementById('time');
  seek.max = String(duration);
  let pos = -1; // index of the last applied line
  let playing = null;
  const goTo = async (t) => {
    // From the last keyframe at or before t (the seek index), or forward from where we are.
    let start = -1;
    for (const k of keyframes) if (lines[k].t <= t) start = k;
    if (start < 0) return;
    const from = pos >= start && lines[pos] && lines[pos].t <= t ? pos + 1 : start;
    let i = from;
    for (; i < lines.length && lines[i].t <= t; i++) screen.apply(lines[i]);
    pos = i - 1;
    await screen.queue;
    timeEl.textContent = `${t.toFixed(1)} s`;
    body.dataset.position = String(t);
  };
  seek.addEventListener('input', () => { pos = -1; goTo(Number(seek.value)); });
  document.getElementById('play').addEventListener('click', () => {
    if (playing) { clearInterval(playing); playing = null; return; }
    let t = Number(seek.value);
    const t0 = performance.now() / 1000 - t;
    playing = setInterval(() => {
      t = performance.now() / 1000 - t0;
      if (t >= duration) { t = duration; clearInterval(playing); playing = null; }
      seek.value = String(t);
      goTo(t);
    }, 100);
  });
  for (const l of lines) if (l.type === 'input') screen.apply(l);
  status(`${lines.length} lines, ${keyframes.length} keyframes, ${duration.toFixed(1)} s`);
  await goTo(0);
  body.dataset.ready = 'true';
}

({ view: viewer, watch, replay })[body.dataset.mode]?.();
