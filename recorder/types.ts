/**
 * What a protocol module records through. The proxy opens one SessionRecording per session and
 * closes (seals) it at teardown; protocol modules only call these methods.
 */

export interface CastOptions {
  width: number;
  height: number;
  title?: string;
  /** Only TERM and SHELL are kept. */
  env?: Record<string, string>;
  /** One cast per interactive channel; name distinguishes several (e.g. "shell", "exec-2"). */
  name?: string;
}

/** asciicast v2 writer: written incrementally (flushed at least every second). */
export interface CastRecorder {
  output(data: Buffer | string): void;
  input(data: Buffer | string): void;
  resize(cols: number, rows: number): void;
  marker(label: string): void;
  close(): void;
}

export interface StatementStart {
  statement: string;
  /** First keyword(s), e.g. SELECT, DROP, "ALTER SYSTEM". */
  kind?: string | null;
  /** Number of bind parameters (values are not recorded by default). */
  params?: number;
  decision?: 'allow' | 'deny' | 'kill' | 'alert';
}

export interface StatementHandle {
  finish(result: { rows?: number | null; error?: string | null }): void;
}

export interface QueryRecorder {
  statement(s: StatementStart): StatementHandle;
}

/** One timestamped event (file transfer, exec command, HTTP request, clipboard, rule hit...). */
export interface EventRecorder {
  event(type: string, data: Record<string, unknown>): void;
}

/** Screen stream for desktop protocols (VNC/RDP): frames and input as NDJSON with PNG keyframes. */
export interface ScreenRecorder {
  /** A raw NDJSON line object appended with its timestamp. */
  write(type: string, data: Record<string, unknown>): void;
  close(): void;
}

export interface SessionRecording {
  readonly sessionId: string;
  cast(opts: CastOptions): CastRecorder;
  queries(): QueryRecorder;
  events(): EventRecorder;
  screen(opts: { width: number; height: number }): ScreenRecorder;
  /** Flush and seal every file (SHA-256), index them in the store. Idempotent. */
  close(): Promise<void>;
}

/** A frame on the live bus, as a watcher receives it. */
export interface LiveFrame {
  /** Seconds since session start. */
  t: number;
  type: 'o' | 'i' | 'r' | 'm' | 'query' | 'event' | 'screen' | 'end';
  data: unknown;
  /**
   * For terminal frames ('o'/'i'/'r'/'m'): which cast of the session they belong to (e.g. "shell",
   * "exec-2"), when a session records several. The snapshot follows one cast at a time.
   */
  cast?: string;
}

export interface LiveSubscription {
  /** What happened so far (bounded), so a watcher starts from the current screen. */
  snapshot: LiveFrame[];
  unsubscribe(): void;
}

export interface LiveBus {
  publish(sessionId: string, frame: LiveFrame): void;
  subscribe(sessionId: string, onFrame: (f: LiveFrame) => void): LiveSubscription;
  end(sessionId: string): void;
}
