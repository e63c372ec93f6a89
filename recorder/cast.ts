/**
 * asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/): a header line, then one
 * `[t, code, data]` line per event, t in seconds (microsecond precision) since the cast's start.
 * Bytes are decoded with streaming UTF-8 decoders (one per direction) so a multi-byte character
 * split across two reads never becomes two broken halves.
 */
import { StringDecoder } from 'node:string_decoder';
import { SystemClock, type Clock } from '../policies/clock.js';
import type { CastOptions, CastRecorder } from './types.js';
import type { FileSink } from './sink.js';

export type CastCode = 'o' | 'i' | 'r' | 'm';

export interface CastHeader {
  version: 2;
  width: number;
  height: number;
  timestamp?: number;
  duration?: number;
  idle_time_limit?: number;
  command?: string;
  title?: string;
  env?: Record<string, string>;
  theme?: unknown;
  [k: string]: unknown;
}

export interface CastEvent {
  t: number;
  type: CastCode;
  data: string;
}

const KEPT_ENV = ['TERM', 'SHELL'];
/** The end of a line that asks for a secret the terminal will not echo (sudo, ssh, passwd, psql \password). */
const SECRET_PROMPT = /(?:password|passphrase|passcode|\bpin\b|one-time code|verification code|\botp\b|passwort|mot de passe|contraseña|senha|пароль|密码|パスワード)[^\n:：]{0,80}[:：]\s*$/iu;
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])/g;
/** Characters that end a typed secret (Enter, Ctrl-C, Ctrl-D). */
const SECRET_END = /[\r\n\x03\x04]/;
const MAX_DIM = 10_000;

function dim(v: unknown, dflt: number): number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= MAX_DIM ? v : dflt;
}

/** A time in seconds as asciicast writes it: fixed microsecond precision, valid JSON. */
export function castTime(seconds: number): string {
  return (Math.round(seconds * 1e6) / 1e6).toFixed(6);
}

export class CastWriter implements CastRecorder {
  private readonly start: number;
  /** Seconds since the cast opened: the monotonic high-resolution timer with the system clock, else the injected clock. */
  private readonly elapsed: () => number;
  private lastT = 0;
  private readonly outDec = new StringDecoder('utf8');
  private readonly inDec = new StringDecoder('utf8');
  private closed = false;
  /** The current output line (after the last newline, bounded), to spot a password prompt. */
  private outLine = '';
  /** Typing a secret at a prompt: input is recorded as '*' until Enter. */
  private masking = false;
  readonly header: CastHeader;

  /**
   * @param publish called with each event (code, data) for the live bus.
   * @param onClosed called once when the cast ends.
   */
  constructor(
    private readonly sink: FileSink,
    clock: Clock,
    opts: CastOptions,
    defaultTitle: string | undefined,
    private readonly publish: (code: CastCode, data: string) => void,
    private readonly onClosed: () => void = () => {},
  ) {
    this.start = clock.now();
    if (clock instanceof SystemClock) {
      const t0 = performance.now();
      this.elapsed = () => (performance.now() - t0) / 1000;
    } else {
      this.elapsed = () => (clock.now() - this.start) / 1000;
    }
    const header: CastHeader = {
      version: 2,
      width: dim(opts.width, 80),
      height: dim(opts.height, 24),
      timestamp: Math.floor(this.start / 1000),
    };
    const title = typeof opts.title === 'string' ? opts.title : defaultTitle;
    if (title) header.title = title.slice(0, 256);
    if (opts.env) {
      const env: Record<string, string> = {};
      for (const k of KEPT_ENV) {
        const v = opts.env[k];
        if (typeof v === 'string') env[k] = v.slice(0, 256);
      }
      if (Object.keys(env).length) header.env = env;
    }
    this.header = header;
    sink.appendLine(JSON.stringify(header));
    // On disk at once: a crash in the first second still leaves a valid (if empty) cast.
    sink.flush();
    // Watchers learn the terminal size from the header as a resize frame.
    publish('r', `${header.width}x${header.height}`);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private emit(code: CastCode, data: string): void {
    const t = Math.max(this.lastT, this.elapsed());
    this.lastT = t;
    this.sink.appendLine(`[${castTime(t)}, "${code}", ${JSON.stringify(data)}]`);
    this.publish(code, data);
  }

  output(data: Buffer | string): void {
    if (this.closed) return;
    const s = typeof data === 'string' ? data : this.outDec.write(data);
    if (!s.length) return;
    const nl = Math.max(s.lastIndexOf('\n'), s.lastIndexOf('\r'));
    this.outLine = (nl >= 0 ? s.slice(nl + 1) : this.outLine + s).slice(-400);
    this.emit('o', s);
  }

  /**
   * Keystrokes. What is typed right after a password / passphrase / PIN prompt is recorded (and
   * published) as one '*' per character up to Enter, so a secret typed at sudo or ssh never lands
   * in the recording.
   */
  input(data: Buffer | string): void {
    if (this.closed) return;
    let s = typeof data === 'string' ? data : this.inDec.write(data);
    if (!s.length) return;
    if (!this.masking && SECRET_PROMPT.test(this.outLine.replace(ANSI, ''))) this.masking = true;
    if (this.masking) {
      const end = s.search(SECRET_END);
      const typed = end < 0 ? s : s.slice(0, end);
      s = '*'.repeat(Array.from(typed).length) + (end < 0 ? '' : s.slice(end));
      if (end >= 0) {
        this.masking = false;
        this.outLine = '';
      }
    }
    this.emit('i', s);
  }

  resize(cols: number, rows: number): void {
    if (this.closed) return;
    const c = dim(cols, 0);
    const r = dim(rows, 0);
    if (!c || !r) return; // nonsense sizes from a client are not recorded
    this.emit('r', `${c}x${r}`);
  }

  marker(label: string): void {
    if (this.closed) return;
    this.emit('m', String(label ?? ''));
  }

  /** Ends the cast: pending partial characters are flushed (as U+FFFD) and the file is sealed. */
  close(): void {
    void this.closeAndSeal();
  }

  closeAndSeal(): Promise<void> {
    if (!this.closed) {
      const out = this.outDec.end();
      if (out.length) this.emit('o', out);
      const inp = this.inDec.end();
      if (inp.length) this.emit('i', inp);
      this.closed = true;
      this.onClosed();
    }
    return this.sink.seal();
  }
}

/** A cast recorder that records nothing (file could not be created, or the session is closed). */
export class NullCast implements CastRecorder {
  output(): void {}
  input(): void {}
  resize(): void {}
  marker(): void {}
  close(): void {}
}

export interface CastCheck {
  ok: boolean;
  errors: string[];
  header: CastHeader | null;
  events: number;
  /** Time of the last event, seconds. */
  duration: number;
}

const CODES = new Set(['o', 'i', 'r', 'm']);

function checkHeader(h: unknown, errors: string[]): h is CastHeader {
  if (!h || typeof h !== 'object' || Array.isArray(h)) {
    errors.push('line 1: header is not a JSON object');
    return false;
  }
  const o = h as Record<string, unknown>;
  if (o.version !== 2) errors.push(`line 1: version is ${JSON.stringify(o.version)}, expected 2`);
  for (const k of ['width', 'height']) {
    // 0 happens (asciinema on a terminal of unknown size); players then use their default size.
    if (!(typeof o[k] === 'number' && Number.isInteger(o[k]) && (o[k] as number) >= 0)) errors.push(`line 1: ${k} must be a non-negative integer`);
  }
  if (o.timestamp !== undefined && !(typeof o.timestamp === 'number' && Number.isFinite(o.timestamp))) errors.push('line 1: timestamp must be a number');
  // asciinema itself writes null for a variable that was not set (SHELL or TERM in a bare environment).
  if (o.env !== undefined && (typeof o.env !== 'object' || o.env === null || Object.values(o.env).some((v) => typeof v !== 'string' && v !== null))) {
    errors.push('line 1: env must map names to strings (or null for unset)');
  }
  return errors.length === 0;
}

function checkEvent(e: unknown, n: number, prevT: number, errors: string[]): CastEvent | null {
  if (!Array.isArray(e) || e.length !== 3) {
    errors.push(`line ${n}: event must be a 3-element array`);
    return null;
  }
  const [t, code, data] = e as unknown[];
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) {
    errors.push(`line ${n}: time must be a non-negative number`);
    return null;
  }
  if (t < prevT) errors.push(`line ${n}: time ${t} goes back (previous ${prevT})`);
  if (typeof code !== 'string' || !CODES.has(code)) {
    errors.push(`line ${n}: unknown event code ${JSON.stringify(code)}`);
    return null;
  }
  if (typeof data !== 'string') {
    errors.push(`line ${n}: data must be a string`);
    return null;
  }
  if (code === 'r' && !/^\d+x\d+$/.test(data)) errors.push(`line ${n}: resize data must be COLSxROWS`);
  return { t, type: code as CastCode, data };
}

function isJson(line: string): boolean {
  try {
    JSON.parse(line);
    return true;
  } catch {
    return false;
  }
}

/** Check a header line and event lines; keeps the valid events and every error (bounded). */
function scan(lines: string[]): { header: CastHeader | null; events: CastEvent[]; errors: string[] } {
  const errors: string[] = [];
  const events: CastEvent[] = [];
  if (lines.length === 0) return { header: null, events, errors: ['empty file'] };
  let header: CastHeader | null = null;
  try {
    const h: unknown = JSON.parse(lines[0]!);
    if (checkHeader(h, errors)) header = h;
  } catch {
    errors.push('line 1: header is not valid JSON');
  }
  let prev = 0;
  for (let i = 1; i < lines.length && errors.length <= 50; i++) {
    let e: unknown;
    try {
      e = JSON.parse(lines[i]!);
    } catch {
      errors.push(`line ${i + 1}: not valid JSON`);
      continue;
    }
    const ev = checkEvent(e, i + 1, prev, errors);
    if (ev) {
      prev = Math.max(prev, ev.t);
      events.push(ev);
    }
  }
  if (errors.length > 50) errors.push('too many errors; stopped');
  return { header, events, errors };
}

/**
 * Validate an asciicast v2 text strictly: every line JSON, header fields, known codes, string
 * data, COLSxROWS resizes, time never going back, no torn last line.
 */
export function verifyCastText(text: string): CastCheck {
  const lines = text.split('\n');
  const lastLine = lines.pop()!;
  // asciinema itself may leave out the final newline; a last line that is not whole JSON is torn.
  const torn = lastLine !== '' && !isJson(lastLine);
  if (lastLine !== '' && !torn) lines.push(lastLine);
  const { header, events, errors } = scan(lines);
  if (torn) errors.push('the last line is cut short (truncated by a crash?)');
  const duration = events.length ? events[events.length - 1]!.t : 0;
  return { ok: errors.length === 0, errors, header, events: events.length, duration };
}

/**
 * Parse an asciicast v2 text into its header and events for replay. Throws on a malformed file,
 * except that a last line cut short by a crash (no final newline) is ignored.
 */
export function replayCast(text: string): { header: CastHeader; events: CastEvent[] } {
  const lines = text.split('\n');
  const last = lines.pop();
  if (last && isJson(last)) lines.push(last); // else a torn last line: dropped
  const { header, events, errors } = scan(lines);
  if (!header || errors.length) throw new Error(`not a valid asciicast v2: ${errors.slice(0, 3).join('; ')}`);
  return { header, events };
}
