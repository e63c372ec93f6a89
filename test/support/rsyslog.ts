/**
 * Debian's rsyslog as a SIEM's receiver for tests: rsyslogd in the foreground with a generated
 * config in a temp dir, imtcp on a free loopback port with TLS (the gtls driver, a test CA), and
 * every message written to a file as rsyslog parsed it (RFC 5424 fields, then the message).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitPort } from '../../protocols/net.js';
import { ensureTlsMaterial } from '../../proxy/tls.js';

export const haveRsyslog = spawnSync('rsyslogd', ['-v'], { stdio: 'ignore' }).status === 0
  && existsSync('/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so');

/** One message as rsyslog parsed it. */
export interface SyslogLine {
  version: string; facility: number; severity: number; hostname: string; appName: string; procId: string; msgId: string;
  structuredData: string; msg: string;
  /** The message parsed as JSON (null when it is not JSON). */
  event: { seq: number; at: number; actor: string; action: string; subject: string | null; data: Record<string, unknown>; prevHash: string; hash: string; mac: string | null } | null;
}

export interface TestRsyslog {
  port: number;
  /** The CA that signed rsyslog's certificate (what the gateway must trust). */
  ca: string;
  dir: string;
  lines(): SyslogLine[];
  /** What rsyslogd printed (errors). */
  stderr(): string;
  waitFor(pred: (lines: SyslogLine[]) => boolean, ms?: number, what?: string): Promise<SyslogLine[]>;
  stop(): Promise<void>;
}

/** Between the fields of a line (none of them holds it: the message is JSON, the rest printable ASCII without it). */
const SEP = '|~|';

export async function startRsyslog(): Promise<TestRsyslog> {
  const dir = mkdtempSync(join(tmpdir(), 'tg-rsyslog-'));
  const tls = ensureTlsMaterial(dir, ['127.0.0.1']);
  const port = await freePort();
  const out = join(dir, 'received.log');
  const fields = ['protocol-version', 'syslogfacility', 'syslogseverity', 'hostname', 'app-name', 'procid', 'msgid', 'structured-data', 'msg'];
  writeFileSync(join(dir, 'rsyslog.conf'), `
global(workDirectory="${dir}" maxMessageSize="64k"
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="${join(dir, 'tls', 'ca.pem')}"
  DefaultNetstreamDriverCertFile="${join(dir, 'tls', 'server.pem')}"
  DefaultNetstreamDriverKeyFile="${join(dir, 'tls', 'server.key')}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="${port}" address="127.0.0.1")
template(name="fields" type="list") {
${fields.map((f, i) => `  property(name="${f}")${i < fields.length - 1 ? ` constant(value="|~|")` : ' constant(value="\\n")'}`).join('\n')}
}
action(type="omfile" file="${out}" template="fields" flushOnTXEnd="on" asyncWriting="off")
`);
  let err = '';
  const proc: ChildProcess = spawn('rsyslogd', ['-n', '-f', join(dir, 'rsyslog.conf'), '-i', join(dir, 'rsyslogd.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => { err += d; });
  proc.stderr!.on('data', (d) => { err += d; });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    await waitPort('127.0.0.1', port, 10_000);
  } catch (e) {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`rsyslogd did not listen: ${(e as Error).message}\n${err}`);
  }
  const lines = (): SyslogLine[] => {
    if (!existsSync(out)) return [];
    return readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => {
      const [version, facility, severity, hostname, appName, procId, msgId, structuredData, ...rest] = l.split(SEP);
      const msg = rest.join(SEP);
      let event: SyslogLine['event'] = null;
      try { event = JSON.parse(msg); } catch { /* not JSON */ }
      return { version: version!, facility: Number(facility), severity: Number(severity), hostname: hostname!, appName: appName!, procId: procId!, msgId: msgId!, structuredData: structuredData!, msg, event };
    });
  };
  return {
    port, ca: tls.ca, dir, lines, stderr: () => err,
    async waitFor(pred, ms = 20_000, what = 'syslog lines') {
      const deadline = Date.now() + ms;
      for (;;) {
        const l = lines();
        if (pred(l)) return l;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (have ${l.length} lines)`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
