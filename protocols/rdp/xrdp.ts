/**
 * Run Debian's xrdp + xrdp-sesman with their own configuration in a directory (loopback, TLS
 * security, no bulk compression, an xterm as the session). Used by `tollgate demo` and the tests.
 * xrdp 0.9 reads the sesman port from /etc/xrdp/sesman.ini (a compiled-in path), so the pair runs
 * in a private mount namespace (unshare, root) where our sesman.ini, with its own free port, is
 * bind-mounted over that path: several pairs run side by side. The pair stops when stop() is
 * called or when this process dies (the wrapper shell watches its stdin).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, waitPort } from '../net.js';

export interface XrdpServer {
  host: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

export function xrdpInstalled(): boolean {
  return existsSync('/usr/sbin/xrdp') && existsSync('/usr/sbin/xrdp-sesman') && existsSync('/usr/lib/xorg/modules/libxorgxrdp.so');
}

export async function startXrdp(dir: string, opts: { session?: string } = {}): Promise<XrdpServer> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const sport = await freePort();
  // Several sesman instances may start sessions at once: spread their X displays apart.
  const displayOffset = 500 + Math.floor(Math.random() * 3000);
  // The session account must be able to run startwm.sh (mkdtemp makes the directory 0700).
  chmodSync(dir, 0o755);
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
X11DisplayOffset=${displayOffset}
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
  const script = [
    'mount --bind "$D/sesman.ini" /etc/xrdp/sesman.ini || exit 1',
    'xrdp-sesman -n -c "$D/sesman.ini" & s=$!',
    'xrdp -n -c "$D/xrdp.ini" & x=$!',
    // Until the parent closes our stdin (stop() or its death), then take the pair down.
    'cat >/dev/null',
    'kill $x $s 2>/dev/null; sleep 0.3',
    'pkill -KILL -f -- "$D/xrdp.ini" 2>/dev/null; pkill -KILL -f -- "$D/sesman.ini" 2>/dev/null',
    'exit 0',
  ].join('\n');
  const wrapper: ChildProcess = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
    stdio: ['pipe', 'ignore', 'ignore'], detached: true, env: { ...process.env, D: dir },
  });
  wrapper.unref();
  wrapper.stdin?.on('error', () => undefined); // the wrapper already gone: nothing to tell it
  const exited = new Promise<void>((res) => wrapper.once('exit', () => res()));
  const stop = async () => {
    wrapper.stdin?.end();
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    if (wrapper.exitCode === null && wrapper.pid) { try { process.kill(-wrapper.pid, 'SIGKILL'); } catch { /* gone */ } }
    spawnSync('pkill', ['-KILL', '-f', '--', join(dir, 'xrdp.ini')]);
    spawnSync('pkill', ['-KILL', '-f', '--', join(dir, 'sesman.ini')]);
  };
  try {
    await waitPort('127.0.0.1', port, 10_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return { host: '127.0.0.1', port, dir, stop };
}
