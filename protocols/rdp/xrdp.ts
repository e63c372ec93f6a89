/**
 * Run Debian's xrdp + xrdp-sesman with their own configuration in a directory (loopback, TLS
 * security, no bulk compression, an xterm as the session). Used by `tollgate demo` and the tests.
 * Limitation: xrdp 0.9 reads the sesman port from /etc/xrdp/sesman.ini (compiled-in path), so
 * our sesman listens on that port (3350 by default) and only one such pair runs at a time on a
 * host; callers hold an flock on /tmp/tollgate-xrdp.lock while it runs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

export interface XrdpServer {
  host: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

export function xrdpInstalled(): boolean {
  return existsSync('/usr/sbin/xrdp') && existsSync('/usr/sbin/xrdp-sesman') && existsSync('/usr/lib/xorg/modules/libxorgxrdp.so');
}

function sesmanPort(): number {
  try {
    const m = /^\s*ListenPort\s*=\s*(\d+)/m.exec(readFileSync('/etc/xrdp/sesman.ini', 'utf8'));
    return m ? Number(m[1]) : 3350;
  } catch { return 3350; }
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => res(p)); });
  });
}

async function waitPort(host: string, port: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const c = net.connect({ host, port });
      c.once('connect', () => { c.destroy(); res(true); });
      c.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${host}:${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The lock that serialises xrdp pairs on this host (see the module comment). */
export async function lockXrdp(): Promise<() => void> {
  const p = spawn('flock', ['/tmp/tollgate-xrdp.lock', 'sh', '-c', 'echo locked; exec cat'], { stdio: ['pipe', 'pipe', 'ignore'] });
  await new Promise<void>((res, rej) => {
    p.stdout!.once('data', () => res());
    p.once('error', rej);
    p.once('exit', () => rej(new Error('could not lock /tmp/tollgate-xrdp.lock')));
  });
  return () => { p.stdin!.end(); };
}

export async function startXrdp(dir: string, opts: { session?: string } = {}): Promise<XrdpServer> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const sport = sesmanPort();
  const cert = existsSync('/etc/xrdp/cert.pem') ? '/etc/xrdp/cert.pem' : '';
  const key = existsSync('/etc/xrdp/key.pem') ? '/etc/xrdp/key.pem' : '';
  writeFileSync(join(dir, 'xrdp.ini'), `[Globals]
ini_version=1
fork=true
port=tcp://127.0.0.1:${port}
use_vsock=false
tcp_nodelay=true
security_layer=tls
crypt_level=none
certificate=${cert}
key_file=${key}
ssl_protocols=TLSv1.2, TLSv1.3
allow_channels=true
allow_multimon=false
bitmap_cache=true
bitmap_compression=true
bulk_compression=false
max_bpp=32
new_cursors=true
use_fastpath=both
autorun=Xorg
[Logging]
LogFile=${join(dir, 'xrdp.log')}
LogLevel=INFO
EnableSyslog=false
[Channels]
rdpdr=true
rdpsnd=false
drdynvc=true
cliprdr=true
rail=false
xrdpvr=false
tcutils=false
[Xorg]
name=Xorg
lib=libxup.so
username=ask
password=ask
ip=127.0.0.1
port=-1
code=20
`);
  writeFileSync(join(dir, 'sesman.ini'), `[Globals]
ListenAddress=127.0.0.1
ListenPort=${sport}
EnableUserWindowManager=false
UserWindowManager=startwm.sh
DefaultWindowManager=${join(dir, 'startwm.sh')}
ReconnectScript=${join(dir, 'reconnectwm.sh')}
[Security]
AllowRootLogin=false
MaxLoginRetry=4
AlwaysGroupCheck=false
[Sessions]
X11DisplayOffset=10
MaxSessions=50
KillDisconnected=true
DisconnectedTimeLimit=0
IdleTimeLimit=0
Policy=Default
[Logging]
LogFile=${join(dir, 'sesman.log')}
LogLevel=INFO
EnableSyslog=false
[Xorg]
param=/usr/lib/xorg/Xorg
param=-config
param=xrdp/xorg.conf
param=-noreset
param=-nolisten
param=tcp
param=-logfile
param=.xorgxrdp.%s.log
[Chansrv]
FuseMountName=thinclient_drives
FileUmask=077
EnableFuseMount=false
[ChansrvLogging]
LogLevel=INFO
EnableSyslog=false
`);
  writeFileSync(join(dir, 'startwm.sh'), `#!/bin/sh\nexec ${opts.session ?? 'xterm -geometry 80x24+0+0 -fa Monospace -fs 14'}\n`);
  writeFileSync(join(dir, 'reconnectwm.sh'), '#!/bin/sh\nexit 0\n');
  chmodSync(join(dir, 'startwm.sh'), 0o755);
  chmodSync(join(dir, 'reconnectwm.sh'), 0o755);
  const procs: ChildProcess[] = [];
  const sesman = spawn('xrdp-sesman', ['-n', '-c', join(dir, 'sesman.ini')], { stdio: 'ignore', detached: true });
  procs.push(sesman);
  const xrdp = spawn('xrdp', ['-n', '-c', join(dir, 'xrdp.ini')], { stdio: 'ignore', detached: true });
  procs.push(xrdp);
  const stop = async () => {
    for (const p of procs) {
      if (p.exitCode === null && p.pid) { try { process.kill(-p.pid, 'SIGTERM'); } catch { /* gone */ } }
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const p of procs) {
      if (p.exitCode === null && p.pid) { try { process.kill(-p.pid, 'SIGKILL'); } catch { /* gone */ } }
    }
    // xrdp forks a child per connection and sesman starts Xorg per session in their process groups.
    spawnSync('pkill', ['-KILL', '-f', `-c ${join(dir, 'xrdp.ini')}`]);
    spawnSync('pkill', ['-KILL', '-f', `-c ${join(dir, 'sesman.ini')}`]);
  };
  try {
    await waitPort('127.0.0.1', port, 10_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return { host: '127.0.0.1', port, dir, stop };
}
