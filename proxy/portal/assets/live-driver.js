// An asciinema-player driver fed by the gateway's live view: it starts from the snapshot (the
// current screen, not a blank one) and then writes each live output frame as it arrives.

function parseSize(v) {
  const m = /^(\d+)x(\d+)$/.exec(String(v ?? ''));
  return m ? { cols: Number(m[1]), rows: Number(m[2]) } : null;
}

/** frames: the snapshot's terminal frames ('o' output, 'r' resize "COLSxROWS"). */
export function liveSource(frames) {
  let dispatch = null;
  let ready = false;
  const pending = [];
  const started = performance.now();
  let size = { cols: 80, rows: 24 };
  let i = 0;
  if (frames[0]?.type === 'r') { size = parseSize(frames[0].data) ?? size; i = 1; }
  let init = '';
  while (i < frames.length && frames[i].type === 'o') { init += String(frames[i].data); i++; }
  pending.push(...frames.slice(i));

  const emit = (f) => {
    if (f.type === 'o') dispatch('output', String(f.data));
    else if (f.type === 'r') { const s = parseSize(f.data); if (s) dispatch('resize', s); }
  };
  const timing = () => ({ time: (performance.now() - started) / 1000, rate: 1, sampledAt: performance.timeOrigin + performance.now() });

  const driver = (callbacks) => {
    dispatch = callbacks.dispatch;
    return {
      init() {
        dispatch('reset', { size, init, theme: null });
        for (const f of pending.splice(0)) emit(f);
        ready = true;
      },
      play() {
        dispatch('play');
        dispatch('playing');
        dispatch('timing', timing());
        return true;
      },
      stop() {},
      getTiming: timing,
    };
  };
  return {
    driver,
    /** A live frame: written now, or queued until the player is ready. */
    push(f) {
      if (f.type !== 'o' && f.type !== 'r') return;
      if (ready) emit(f); else pending.push(f);
    },
    ended(message) { if (ready) dispatch('offline', { message }); },
    get size() { return size; },
  };
}
