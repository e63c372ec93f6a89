/**
 * A gateway in a child process, for tests that kill it with SIGKILL (a crash: nothing runs on the
 * way out). TG_CHILD (JSON): startTestGateway's options (targets, listeners, extra, dataDir) and
 * `session`: {user, target, role, duration?} for which it requests a grant and a connection secret. It sends
 * {listeners, secret} over IPC once it serves.
 */
import { startTestGateway } from './gateway.js';

const opts = JSON.parse(process.env['TG_CHILD'] ?? '{}') as Parameters<typeof startTestGateway>[0] & { session: { user: string; target: string; role: string; duration?: string } };
const tg = await startTestGateway(opts);
const grant = await tg.grant(opts.session.user, opts.session.target, opts.session.role, opts.session.duration);
const secret = await tg.secret(opts.session.user, grant.id);
const listeners = Object.fromEntries((opts.listeners ?? []).map((l) => [l, tg.listener(l)]));
process.send!({ listeners, secret, grantId: grant.id });
