/**
 * One authenticated client connection: opens the session, mints the lease, dials the target as the
 * minted credential and relays every channel through the inspectors while recording.
 */
import type ssh2 from 'ssh2';
import type { ProtocolContext, Authorized, LiveSession, EndReason } from '../types.js';
import type { CastRecorder, EventRecorder } from '../../recorder/types.js';
import { redactStatement } from '../../recorder/index.js';
import { provisionerFor } from './provisioners/index.js';
import { dialUpstream } from './upstream.js';
import { LineEditor } from './inspector/line-editor.js';
import { ShellLines } from './inspector/shell-lines.js';
import { SftpInspector, type FileTransfer } from './inspector/sftp.js';
import { ScpInspector, scpMode } from './inspector/scp.js';
import { disconnectWith, DISCONNECT, printable, tollgate, openAgentChannel } from './wire.js';
import type { Duplex } from 'node:stream';

type Accept<T = void> = (() => T) | undefined;
type Reject = (() => void) | undefined;

interface PtyInfo { cols: number; rows: number; width: number; height: number; term: string; modes?: Record<string, number> }

const ENV_ALLOWED = (k: string) => k === 'TERM' || k === 'LANG' || /^LC_[A-Z_]+$/.test(k);

interface OpenChannel {
  stream: ssh2.ServerChannel;
  upstream: ssh2.ClientChannel | null;
  pty: PtyInfo | null;
  cast: CastRecorder | null;
  finish?: () => void;
}

export class SshBroker {
  private session: LiveSession | null = null;
  private upstream: ssh2.Client | null = null;
  private readonly ready: Promise<boolean>;
  private resolveReady!: (ok: boolean) => void;
  private failure: string | null = null;
  private channels = new Set<OpenChannel>();
  private channelSeq = 0;
  private ending = false;
  private events: EventRecorder | null = null;
  private minting: Promise<unknown> | null = null;
  private finished: Promise<void> | null = null;
  private failureReason: EndReason | null = null;

  constructor(
    private readonly ctx: ProtocolContext,
    private readonly client: ssh2.Connection,
    private readonly auth: Authorized,
    private readonly clientAddr: string,
  ) {
    this.ready = new Promise((r) => { this.resolveReady = r; });
    client.on('session', (accept: Accept<ssh2.Session>, reject: Reject) => this.onSession(accept, reject));
    client.on('tcpip', (accept: Accept<ssh2.ServerChannel>, reject: Reject, info: ssh2.TcpipRequestInfo) => this.onTcpip(accept, reject, info));
    client.on('request', (accept: ((port?: number) => void) | undefined, reject: Reject, name: string, info: { bindAddr: string; bindPort: number }) => {
      this.onGlobalRequest(accept, reject, name, info);
    });
    client.on('close', () => { void this.finish({ code: 'client_exit', message: 'the client disconnected' }); });
    client.on('end', () => { void this.finish({ code: 'client_exit', message: 'the client disconnected' }); });
  }

  get log() { return this.session?.log ?? this.ctx.log; }

  async start(): Promise<void> {
    const { target, role } = this.auth;
    try {
      this.session = await this.ctx.sessions.open(this.auth, { protocol: 'ssh', clientAddr: this.clientAddr });
    } catch (e) {
      this.failure = tollgate((e as Error).message);
      this.resolveReady(false);
      disconnectWith(this.client, DISCONNECT.BY_APPLICATION, this.failure);
      return;
    }
    const session = this.session;
    session.onTerminate((reason) => { void this.terminate(reason); });
    session.onWarning((message) => this.warn(message));
    this.events = session.recording.events();
    if (this.ending) { await session.end({ code: 'client_exit', message: 'the client disconnected' }); return; }
    try {
      const minting = provisionerFor(target).mint(this.ctx, session, target, role);
      this.minting = minting;
      const cred = await minting;
      if (this.ending || session.ended) { this.resolveReady(false); return; }
      const forwardAgent = role.allowAgentForwarding === true
        ? (cb: (err: Error | undefined, stream?: Duplex) => void) => openAgentChannel(this.client, cb)
        : undefined;
      const up = await dialUpstream(target, cred, forwardAgent);
      if (this.ending || session.ended) { up.end(); this.resolveReady(false); return; }
      this.upstream = up;
      up.on('tcp connection', (info: ssh2.TcpConnectionDetails, acceptUp: () => ssh2.ClientChannel, rejectUp: () => void) => this.onRemoteConnection(info, acceptUp, rejectUp));
      up.on('error', (e) => { session.log.warn({ err: e.message }, 'ssh: upstream error'); });
      up.on('close', () => {
        if (!this.ending) void this.terminate({ code: 'target_closed', message: 'the target closed the connection' });
      });
      session.log.info({ user: cred.username }, 'ssh: upstream ready');
      this.resolveReady(true);
    } catch (e) {
      const msg = (e as Error).message;
      this.failure = tollgate(msg);
      session.log.warn({ err: msg }, 'ssh: could not start the upstream session');
      // Channels (open or opening) write the failure; then the connection closes with it as reason.
      this.failureReason = { code: 'target_error', message: msg };
      this.resolveReady(false);
      setTimeout(() => { void this.finish(this.failureReason!, this.failure!); }, 500).unref();
    }
  }

  // ---- channels -----------------------------------------------------------------------------

  private onSession(accept: Accept<ssh2.Session>, reject: Reject): void {
    if ((this.ending && !this.failureReason) || !accept) { reject?.(); return; }
    const s = accept();
    const ch: OpenChannel = { stream: null as unknown as ssh2.ServerChannel, upstream: null, pty: null, cast: null };
    const env: Record<string, string> = {};
    let agentForward = false;
    s.on('pty', (acc: Accept, _rej: Reject, info: PtyInfo) => { ch.pty = { ...info }; acc?.(); });
    s.on('env', (acc: Accept, rej: Reject, info: { key: string; val: string }) => {
      if (ENV_ALLOWED(info.key)) { env[info.key] = info.val; acc?.(); } else rej?.();
    });
    s.on('window-change', (acc: Accept, _rej: Reject, info: PtyInfo) => {
      if (ch.pty) Object.assign(ch.pty, { cols: info.cols, rows: info.rows, width: info.width, height: info.height });
      ch.upstream?.setWindow(info.rows, info.cols, info.height, info.width);
      ch.cast?.resize(info.cols, info.rows);
      acc?.();
    });
    s.on('signal', (acc: Accept, _rej: Reject, info: { name: string }) => { ch.upstream?.signal(info.name); acc?.(); });
    s.on('auth-agent', (acc: Accept, rej: Reject) => {
      if (this.auth.role.allowAgentForwarding !== true) {
        this.session?.audit('ssh.agent_forward.refused', {});
        rej?.();
        return;
      }
      agentForward = true;
      this.session?.audit('ssh.agent_forward', {});
      acc?.();
    });
    s.on('x11', (_acc: Accept, rej: Reject) => rej?.());
    s.on('shell', (acc: Accept<ssh2.ServerChannel>, rej: Reject) => {
      if (!acc) return rej?.();
      ch.stream = acc();
      void this.runShell(ch, env, agentForward);
    });
    s.on('exec', (acc: Accept<ssh2.ServerChannel>, rej: Reject, info: { command: string }) => {
      if (!acc) return rej?.();
      ch.stream = acc();
      void this.runExec(ch, env, info.command, agentForward);
    });
    s.on('subsystem', (acc: Accept<ssh2.ServerChannel>, rej: Reject, info: { name: string }) => {
      if (info.name !== 'sftp' || !acc) return rej?.();
      ch.stream = acc();
      void this.runSftp(ch);
    });
  }

  /** Wait for the upstream; on failure tell the person on this channel and close it. */
  private async upstreamOr(ch: OpenChannel): Promise<ssh2.Client | null> {
    this.channels.add(ch);
    ch.stream.on('close', () => { this.channels.delete(ch); });
    const ok = await this.ready;
    if (ok && this.upstream && !this.ending) return this.upstream;
    this.closeChannel(ch, this.failure ?? 'Tollgate: the session is ending');
    return null;
  }

  private closeChannel(ch: OpenChannel, message: string | null, code = 1): void {
    const s = ch.stream;
    try {
      if (message) {
        const text = `\r\n${printable(message).replace(/\n/g, '\r\n')}\r\n`;
        if (ch.pty) s.write(text); else s.stderr.write(text);
      }
      s.exit(code);
      s.end();
    } catch { /* channel already gone */ }
    ch.finish?.();
  }

  private async runShell(ch: OpenChannel, env: Record<string, string>, agentForward: boolean): Promise<void> {
    const up = await this.upstreamOr(ch);
    if (!up) return;
    const session = this.session!;
    const name = `shell-${++this.channelSeq}`;
    const pty = ch.pty;
    const window: ssh2.PseudoTtyOptions | false = pty ? { rows: pty.rows, cols: pty.cols, width: pty.width, height: pty.height, term: pty.term, modes: pty.modes as never } : false;
    up.shell(window, { env, agentForward } as ssh2.ShellOptions, (err, upCh) => {
      if (err) { this.closeChannel(ch, `Tollgate: the target refused the shell: ${err.message}`); return; }
      ch.upstream = upCh;
      ch.cast = session.recording.cast({ width: pty?.cols ?? 80, height: pty?.rows ?? 24, name, title: `${this.auth.target.name} (${this.auth.role.name})`, env: pty ? { TERM: pty.term } : {} });
      const editor = new LineEditor();
      const shellLines = new ShellLines();
      this.relay(ch, upCh, (chunk, forward) => {
        ch.cast?.input(chunk);
        const lines = editor.feed(chunk);
        let start = 0;
        for (const l of lines) {
          // Read as the shell will: with the continuation lines before it, quotes removed, wrappers seen through.
          const sl = shellLines.read(l);
          const decision = session.check(sl.text, { kind: 'shell', channel: name, shell: sl.shell, uncertain: sl.uncertain });
          if (decision.uncertain) this.events?.event('shell.line-uncertain', { channel: name, line: sl.text, uncertain: decision.uncertain, strict: decision.strict === true });
          if (l.uncertain) {
            // Known limit (cursor movement, history, completion, a line longer than the editor keeps): say so next to the recording.
            session.log.info({ channel: name, truncated: l.truncated }, 'ssh: line used editing keys the gateway does not follow (or was too long); checked the text it could reconstruct');
            this.events?.event('shell.line-unverified', { channel: name, reconstructed: l.line, ...(l.truncated ? { truncated: true } : {}) });
          }
          if (decision.action === 'deny' || decision.action === 'kill') {
            forward(chunk.subarray(start, l.at));
            this.events?.event('shell.denied', { channel: name, line: l.line, action: decision.action });
            const msg = `\r\n[tollgate] ${decision.action === 'kill' ? 'forbidden, ending the session' : 'denied'}: ${printable(decision.message)}\r\n`;
            ch.stream.write(msg);
            ch.cast?.output(msg);
            if (decision.action === 'kill') return false;
            // Abandon the line on the target instead of running it: Ctrl-E Ctrl-U empties a readline
            // line wherever the cursor is, and in a cooked tty VKILL erases the pending input.
            forward(Buffer.from([0x05, 0x15]));
            start = l.end;
          } else {
            sl.accept();
            forward(chunk.subarray(start, l.end));
            start = l.end;
          }
        }
        forward(chunk.subarray(start));
        return true;
      });
    });
  }

  private async runExec(ch: OpenChannel, env: Record<string, string>, command: string, agentForward: boolean): Promise<void> {
    const up = await this.upstreamOr(ch);
    if (!up) return;
    const session = this.session!;
    const decision = session.check(command, { kind: 'exec' });
    // Recorded and audited like a query-log statement: no PASSWORD '…' literals (e.g. ssh host "psql -c \"ALTER ROLE …\"").
    const shown = redactStatement(command);
    this.events?.event('exec', { command: shown, decision: decision.action });
    session.audit('ssh.exec', { command: shown, decision: decision.action });
    if (decision.action === 'deny' || decision.action === 'kill') {
      this.closeChannel(ch, `Tollgate: ${decision.action === 'kill' ? 'forbidden command, ending the session' : 'command denied'}: ${decision.message}`);
      return;
    }
    const scp = scpMode(command);
    const pty = ch.pty;
    const opts = { env, agentForward } as ssh2.ExecOptions; // ssh2 reads agentForward; its types omit it
    if (pty) opts.pty = { rows: pty.rows, cols: pty.cols, width: pty.width, height: pty.height, term: pty.term, modes: pty.modes as never };
    up.exec(command, opts, (err, upCh) => {
      if (err) { this.closeChannel(ch, `Tollgate: the target refused the command: ${err.message}`); return; }
      ch.upstream = upCh;
      if (scp) {
        const insp = new ScpInspector(scp.direction, scp.path, (t) => this.transfer('scp', t, scp.path));
        this.relay(ch, upCh, (chunk, forward) => { if (scp.direction === 'upload') insp.feed(chunk); forward(chunk); return true; },
          (chunk) => { if (scp.direction === 'download') insp.feed(chunk); });
        return;
      }
      ch.cast = session.recording.cast({ width: pty?.cols ?? 80, height: pty?.rows ?? 24, name: `exec-${++this.channelSeq}`, title: shown.slice(0, 200), env: pty ? { TERM: pty.term } : {} });
      this.relay(ch, upCh, (chunk, forward) => { ch.cast?.input(chunk); forward(chunk); return true; });
    });
  }

  private async runSftp(ch: OpenChannel): Promise<void> {
    const up = await this.upstreamOr(ch);
    if (!up) return;
    const session = this.session!;
    up.subsys('sftp', (err, upCh) => {
      if (err) { this.closeChannel(ch, `Tollgate: the target refused sftp: ${err.message}`); return; }
      ch.upstream = upCh;
      const insp = new SftpInspector((t) => this.transfer('sftp', t), (op, data) => { this.events?.event(op, data); this.session?.audit(op, data); });
      // What the inspector holds counts against the session's buffer budget (over it, the session ends: resource_limit).
      let held = 0;
      const account = () => { const now = insp.held; const ok = session.holdBytes(now - held); held = now; return ok; };
      ch.finish = () => { insp.finish(); account(); };
      this.relay(ch, upCh, (chunk, forward) => { insp.feedClient(chunk); forward(chunk); return account(); }, (chunk) => { insp.feedServer(chunk); account(); });
    });
  }

  private transfer(protocol: 'sftp' | 'scp', t: FileTransfer, base?: string): void {
    const data: Record<string, unknown> = { protocol, path: t.path, direction: t.direction, size: t.size, sha256: t.sha256, complete: t.complete };
    if (base !== undefined) data.base = base;
    this.events?.event('file-transfer', data);
    this.session?.audit(`${protocol}.${t.direction}`, data);
  }

  /**
   * Relay one channel pair with backpressure. onInput decides what of each client chunk goes
   * upstream (returns false to stop reading); onOutput sees what the target sends.
   */
  private relay(
    ch: OpenChannel,
    upCh: ssh2.ClientChannel,
    onInput: (chunk: Buffer, forward: (b: Buffer) => void) => boolean,
    onOutput?: (chunk: Buffer) => void,
  ): void {
    const down = ch.stream;
    const session = this.session!;
    let stopped = false;
    const forward = (b: Buffer) => {
      if (!b.length || stopped) return;
      session.addBytes(b.length, 0);
      if (!upCh.write(b)) { down.pause(); upCh.once('drain', () => down.resume()); }
    };
    // Guarded: a throw while inspecting ends this session only (logged, audited), never the gateway.
    down.on('data', session.guard((chunk: Buffer) => {
      if (stopped) return;
      if (!onInput(chunk, forward)) { stopped = true; down.pause(); }
    }));
    const toClient = (target: NodeJS.WritableStream, chunk: Buffer) => {
      onOutput?.(chunk);
      ch.cast?.output(chunk);
      session.addBytes(0, chunk.length);
      if (!target.write(chunk)) { upCh.pause(); target.once('drain', () => upCh.resume()); }
    };
    upCh.on('data', session.guard((chunk: Buffer) => toClient(down, chunk)));
    upCh.stderr.on('data', session.guard((chunk: Buffer) => toClient(down.stderr, chunk)));
    upCh.on('exit', (code: number | null, signal?: string, dumped?: boolean, desc?: string) => {
      try {
        if (typeof code === 'number') down.exit(code);
        else if (signal) down.exit(signal, !!dumped, desc ?? '');
      } catch { /* client side gone */ }
    });
    upCh.on('close', () => {
      ch.finish?.();
      ch.finish = undefined;
      ch.cast?.close();
      ch.cast = null;
      try { down.end(); } catch { /* already closed */ }
    });
    down.on('end', () => { try { upCh.end(); } catch { /* ignore */ } });
    down.on('close', () => {
      ch.finish?.();
      ch.finish = undefined;
      try { upCh.close(); } catch { /* ignore */ }
    });
  }

  private onTcpip(accept: Accept<ssh2.ServerChannel>, reject: Reject, info: ssh2.TcpipRequestInfo): void {
    const allowed = this.auth.role.allowPortForwarding === true;
    const where = { destIP: info.destIP, destPort: info.destPort };
    if (!allowed || this.ending) {
      this.session?.audit('ssh.port_forward.refused', where);
      reject?.();
      return;
    }
    void this.ready.then((ok) => {
      if (!ok || !this.upstream || this.ending) { reject?.(); return; }
      this.upstream.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, (err, upCh) => {
        if (err || !accept) { reject?.(); return; }
        const down = accept();
        this.events?.event('port-forward', where);
        this.session?.audit('ssh.port_forward', where);
        const ch: OpenChannel = { stream: down, upstream: upCh, pty: null, cast: null };
        this.channels.add(ch);
        down.on('close', () => this.channels.delete(ch));
        down.pipe(upCh).pipe(down);
        down.on('close', () => { try { upCh.close(); } catch { /* ignore */ } });
        upCh.on('close', () => { try { down.close(); } catch { /* ignore */ } });
      });
    });
  }

  /** Remote forwarding (ssh -R): only when the role allows port forwarding. */
  private onGlobalRequest(accept: ((port?: number) => void) | undefined, reject: Reject, name: string, info: { bindAddr: string; bindPort: number }): void {
    const allowed = this.auth.role.allowPortForwarding === true;
    if (!allowed || (name !== 'tcpip-forward' && name !== 'cancel-tcpip-forward')) {
      this.session?.audit('ssh.forward.refused', { request: name });
      reject?.();
      return;
    }
    void this.ready.then((ok) => {
      const up = this.upstream;
      if (!ok || !up || this.ending) { reject?.(); return; }
      if (name === 'cancel-tcpip-forward') {
        up.unforwardIn(info.bindAddr, info.bindPort, (err) => (err ? reject?.() : accept?.()));
        return;
      }
      up.forwardIn(info.bindAddr, info.bindPort, (err, port) => {
        if (err) { reject?.(); return; }
        this.events?.event('remote-forward', { bindAddr: info.bindAddr, bindPort: port });
        this.session?.audit('ssh.remote_forward', { bindAddr: info.bindAddr, bindPort: port });
        accept?.(port);
      });
    });
  }

  private onRemoteConnection(info: ssh2.TcpConnectionDetails, acceptUp: () => ssh2.ClientChannel, rejectUp: () => void): void {
    if (this.ending) { rejectUp(); return; }
    this.client.forwardOut(info.destIP, info.destPort, info.srcIP, info.srcPort, (err, down) => {
      if (err) { rejectUp(); return; }
      const upCh = acceptUp();
      const ch: OpenChannel = { stream: down, upstream: upCh, pty: null, cast: null };
      this.channels.add(ch);
      down.on('close', () => this.channels.delete(ch));
      upCh.pipe(down).pipe(upCh);
      down.on('close', () => { try { upCh.close(); } catch { /* ignore */ } });
      upCh.on('close', () => { try { down.close(); } catch { /* ignore */ } });
    });
  }

  // ---- enforcement ---------------------------------------------------------------------------

  private warn(message: string): void {
    const text = tollgate(printable(message));
    for (const ch of this.channels) {
      try {
        if (ch.pty) { ch.stream.write(`\r\n${text}\r\n`); ch.cast?.output(`\r\n${text}\r\n`); }
        else if (ch.cast) ch.stream.stderr.write(`${text}\n`);
      } catch { /* ignore */ }
    }
  }

  /** The gateway ends the session: tell the person, close both sides, report. */
  private async terminate(reason: EndReason): Promise<void> {
    if (this.ending) return this.finished ?? undefined;
    const message = tollgate(reason.message);
    for (const ch of [...this.channels]) {
      ch.cast?.output(`\r\n${message}\r\n`);
      this.closeChannel(ch, message, 1);
    }
    await this.finish(reason, message);
  }

  /** Close everything once and report the end (leases are revoked by the proxy). */
  finish(reason: EndReason, disconnectMessage?: string): Promise<void> {
    if (this.failureReason) reason = this.failureReason;
    if (!this.finished) this.finished = this.doFinish(reason, disconnectMessage);
    return this.finished;
  }

  private async doFinish(reason: EndReason, disconnectMessage?: string): Promise<void> {
    this.ending = true;
    this.resolveReady(false);
    for (const ch of this.channels) { ch.finish?.(); ch.cast?.close(); ch.cast = null; }
    try { this.upstream?.end(); } catch { /* ignore */ }
    if (disconnectMessage) {
      // Let the channel messages leave first (same socket, in order), then say why on the wire.
      setTimeout(() => disconnectWith(this.client, DISCONNECT.BY_APPLICATION, disconnectMessage), 20).unref();
    } else {
      try { this.client.end(); } catch { /* ignore */ }
    }
    // A lease being created right now must exist (and be stored) before the proxy revokes leases.
    if (this.minting) await this.minting.catch(() => undefined);
    if (this.session && !this.session.ended) {
      try { await this.session.end(reason); } catch (e) { this.ctx.log.error({ err: (e as Error).message }, 'ssh: session end failed'); }
    }
  }

  /** Gateway shutdown: resolves once the session has ended (leases revoked), even one already ending. */
  async close(): Promise<void> {
    await this.terminate({ code: 'gateway_shutdown', message: 'the gateway is shutting down' });
    await this.finished;
  }
}
