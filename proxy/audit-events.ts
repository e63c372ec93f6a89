/**
 * The catalogue of audit event names: every action the gateway writes to the audit log, with what
 * it means. Names are `<what>.<event>`: `.` between the words of the hierarchy, `_` inside a word
 * (session.rule.deny, lease.revoke_failed). Events already written under an older name keep it in
 * the hash-chained log; `aliases` lists those names, and searching for an action finds both.
 * test/proxy/audit-events.test.ts checks that every action the code emits is here, and that
 * every entry here is still emitted.
 */

interface AuditEventSpec {
  /** What happened, in a sentence. */
  meaning: string;
  /** Names earlier versions wrote for the same event. */
  aliases?: readonly string[];
}

export const AUDIT_EVENTS = {
  // ---- the gateway itself
  'gateway.started': { meaning: 'The gateway started: its listeners and targets.' },
  'gateway.stopped': { meaning: 'The gateway stopped cleanly.' },
  'gateway.crashed': { meaning: 'An error no session owned reached the process; it exits (a supervisor restarts it, the reaper cleans up).' },
  'gateway.key.created': { meaning: 'The gateway key file was created on first start.' },
  'gateway.key.moved': { meaning: 'A gateway key an older version kept in the store was moved out of it (its earlier events keyed).' },
  'gateway.draining': { meaning: 'The gateway began draining (SIGTERM): /readyz fails, new sessions are refused, live ones get a warning and end after drainTimeout.' },
  'gateway.lost': { meaning: 'A node stopped heartbeating beyond nodeTimeout: a surviving node claimed it, ended its sessions and revoked their leases.' },
  'gateway.store_lost': { meaning: 'This node cannot reach the store: it refuses new sessions (and ends live ones after storeLossTimeout).' },
  'gateway.store_back': { meaning: 'This node reaches the store again.' },
  'recording.write_failed': { meaning: "A session's recording could not be written (disk full, I/O error); recordings.onFailure decides what follows." },
  'recording.failing': { meaning: 'Recordings cannot be written: new sessions are refused (refuse, terminate) or run unrecorded (continue).' },
  'recording.recovered': { meaning: 'Recordings can be written again (after how long).' },
  'store.failing': { meaning: 'The store cannot take writes: new sessions are refused and live ones end (fail closed); events are held.' },
  'store.recovered': { meaning: 'The store takes writes again: held events, session ends and seals are written, the reaper ran.' },
  'policy.hours_closed': { meaning: "A policy's working hours closed: its live sessions (not break-glass) were warned, then ended." },
  'notify': { meaning: 'An alert was sent to the notify command; data.kind says which (rule, breakglass, alert, standing_privilege).' },

  // ---- people signing in and their credentials
  'signin': { meaning: 'A person signed in through the IdP (browser or device flow).' },
  'signin.failed': { meaning: 'A sign-in through the IdP failed (bad callback, expired flow).' },
  'signin.refused': { meaning: 'A sign-in was refused although the IdP accepted it (a lock on the identity).' },
  'identity.groups_changed': { meaning: 'Re-validation with the IdP found different groups for an identity.' },
  'identity.revalidation_failed': { meaning: 'The IdP no longer vouches for a sign-in: its tokens and sessions stop working.' },
  'token.created': { meaning: 'A personal API token was created.' },
  'token.revoked': { meaning: 'A personal API token was revoked (its secrets stop working, its sessions end).' },
  'key.registered': { meaning: 'An SSH public key was registered for native sign-in, with proof of possession.' },
  'key.removed': { meaning: 'A registered SSH public key was removed.' },
  'key.refused': { meaning: 'An SSH key registration was refused (bad proof, duplicate, bad key).' },
  'api.refused': { meaning: 'An API call was refused because a lock covers the caller or the grant.' },
  'approval.approved': { meaning: 'A person approved, in the browser, the sign-in of a native client (SSH keyboard-interactive).' },
  'approval.denied': { meaning: 'A person denied, in the browser, the sign-in of a native client.' },
  'approval.refused': { meaning: 'A browser approval was refused before anyone decided (cross-site form, unknown or expired approval).' },

  // ---- requests, grants, break-glass (policies/)
  'request.created': { meaning: 'A person asked for access: target, role, duration, reason.' },
  'request.approved': { meaning: 'A request was approved (by an approver, a stage, or automatically).' },
  'request.denied': { meaning: 'A request was denied (by an approver or automatically).' },
  'request.escalated': { meaning: 'A request timed out at its stage and went to the escalation groups.' },
  'request.expired': { meaning: 'A request timed out without a decision.' },
  'request.cancelled': { meaning: 'The requester cancelled a pending request.' },
  'grant.created': { meaning: 'A grant began: one identity, one target and role, until its end.' },
  'grant.expired': { meaning: 'A grant reached its end; its sessions end.' },
  'grant.revoked': { meaning: 'A grant was revoked before its end; its sessions end.' },
  'breakglass.used': { meaning: 'Emergency access was taken: an immediate grant, an alert, a mandatory review.' },
  'breakglass.reviewed': { meaning: 'A break-glass review was closed.' },
  'grant.extended': { meaning: "A grant's end moved later (an approved extension request); its live sessions continue to the new end." },
  'grant.checked_in': { meaning: 'The holder of an exclusive check-out gave the account back before the grant ended (the next in the queue may get it).' },
  'checkout.revealed': { meaning: "The holder of a checked-out account revealed its current password (roles[].reveal, with a fresh MFA); the password itself is never in the event. It rotates at check-in." },
  'checkout.reveal_refused': { meaning: 'A reveal of a checked-out password was refused: no fresh MFA or a wrong code, a lock, or too many reveals.' },
  'request.queued': { meaning: 'A request for an exclusively checked-out account waits until the current holder checks it in.' },
  'delegation.created': { meaning: "An approver handed their approvals to a delegate for a time window." },
  'delegation.revoked': { meaning: 'A delegation was ended before its window closed (by the delegator, the delegate or the SOC).' },
  'review.started': { meaning: 'An access review of a policy began (scheduled or by the SOC), with its lines.' },
  'review.confirmed': { meaning: 'A reviewer confirmed a line of an access review.' },
  'review.revoked': { meaning: "A reviewer revoked a line of an access review: the grant ends, or an exclusion keeps the identity out." },
  'review.escalated': { meaning: 'An access review passed its due date undecided and went to the escalation groups.' },
  'review.completed': { meaning: 'Every line of an access review is decided.' },
  'exclusion.lifted': { meaning: 'An exclusion an access review left was removed: the identity is eligible again.' },
  'secret.issued': { meaning: 'A connection secret was issued for a grant (single-use or reusable).' },

  // ---- connections, sessions, leases (proxy/)
  'secret.refused': { meaning: 'A connection secret was not issued (e.g. the target needs MFA at connect and the code was wrong or missing).' },
  'access.allowed': { meaning: 'A connection attempt was authorized under an active grant.' },
  'access.refused': { meaning: 'A connection attempt was refused (code and reason in the data).' },
  'access.throttled': { meaning: "An address made too many failed attempts: it is refused before any secret is looked at." },
  'session.started': { meaning: 'A session began under a grant.' },
  'session.ended': { meaning: 'A session ended: why, how long, bytes, the seals of its recordings.' },
  'session.extended': { meaning: "A live session's end moved with its grant's extension." },
  'session.warned': { meaning: 'The person was told the grant ends soon.' },
  'session.kill': { meaning: 'The SOC (or the owner) ended a live session.' },
  'session.watch': { meaning: 'Someone started watching a live session.' },
  'session.error': { meaning: 'An internal error in a session ended that session only.' },
  'session.resource_limit': { meaning: 'A session needed more gateway memory than limits.sessionBufferBytes and was ended.' },
  'session.rule.deny': { meaning: 'A command, statement or request was refused by a rule.' },
  'session.rule.kill': { meaning: 'A command, statement or request matched a kill rule: the session was ended.' },
  'session.rule.alert': { meaning: 'A command, statement or request matched an alert rule (let through, alert sent).' },
  'session.rule.uncertain': { meaning: 'A command or statement the rules could not read for sure: let through and audited, or refused with strictRules (data.action).' },
  'lease.created': { meaning: 'A lease was stored, before its credential is minted on the target.' },
  'lease.mint_failed': { meaning: 'Minting the credential of a lease failed; what it left behind is revoked.' },
  'lease.revoked': { meaning: "A lease's credential is gone: its revoke confirmed (what it did, after how many attempts)." },
  'lease.revoke_failed': { meaning: 'Revoking a lease failed: it stays a standing privilege and is tried again (attempt, error, next try).' },
  'lock.created': { meaning: 'A lock on an identity, target or grant was set: matching sessions end, new ones are refused.' },
  'lock.removed': { meaning: 'A lock was lifted.' },
  'target.repinned': { meaning: "The SOC trusted a target's new SSH host key after a legitimate rotation." },
  'target.repin_failed': { meaning: "Trusting a target's new SSH host key was refused (configured fingerprint, wrong key, no login)." },

  // ---- the credential vault (proxy/vault.ts, proxy/vault-rotation.ts): never the credential itself
  'credential.set': { meaning: "A person stored a target's admin credential in the vault (sealed; which field, its version, via which API credential)." },
  'credential.set_refused': { meaning: "Storing a target's admin credential was refused: the target did not take a login with it (nothing stored)." },
  'credential.rotated': { meaning: "A target's vault credential was rotated: the new one set on the target and verified, the old one discarded (recovered: after an interrupted rotation)." },
  'credential.rotation_failed': { meaning: "Rotating a target's vault credential failed: the old one is kept (stillOld: the target still takes it); alerted and retried with backoff." },
  'credential.rotation_recovered': { meaning: 'An interrupted rotation was cleaned up: the target still took the current credential, the pending one was discarded.' },

  // ---- protocol modules
  'ssh.exec': { meaning: 'An SSH exec request (the command and the rule decision).' },
  'ssh.agent_forward': { meaning: 'SSH agent forwarding was allowed for a session.', aliases: ['ssh.agent-forward'] },
  'ssh.agent_forward.refused': { meaning: "SSH agent forwarding was refused (the role does not allow it).", aliases: ['ssh.agent-forward-refused'] },
  'ssh.port_forward': { meaning: 'An SSH local port forward was opened.', aliases: ['ssh.port-forward'] },
  'ssh.port_forward.refused': { meaning: 'An SSH local port forward was refused.', aliases: ['ssh.port-forward-refused'] },
  'ssh.remote_forward': { meaning: 'An SSH remote port forward was opened.', aliases: ['ssh.remote-forward'] },
  'ssh.forward.refused': { meaning: 'An SSH remote forwarding request was refused.', aliases: ['ssh.forward-refused'] },
  'ssh.hostkey.pinned': { meaning: "A target's SSH host key was pinned on first use." },
  'ssh.hostkey.refused': { meaning: "A target presented an SSH host key other than the pinned one: the connection was refused (alert)." },
  'sftp.upload': { meaning: 'A file was uploaded over SFTP (path, size, SHA-256).' },
  'sftp.download': { meaning: 'A file was downloaded over SFTP (path, size, SHA-256).' },
  'sftp.remove': { meaning: 'A file was removed over SFTP.' },
  'sftp.mkdir': { meaning: 'A directory was made over SFTP.' },
  'sftp.rmdir': { meaning: 'A directory was removed over SFTP.' },
  'sftp.rename': { meaning: 'A file was renamed over SFTP.' },
  'scp.upload': { meaning: 'A file was uploaded with scp (path, size, SHA-256).' },
  'scp.download': { meaning: 'A file was downloaded with scp (path, size, SHA-256).' },
  'postgres.connect': { meaning: 'A PostgreSQL session reached the database as its session role.' },
  'postgres.cancel': { meaning: 'A PostgreSQL client cancelled a running statement.' },
  'postgres.function_call': { meaning: 'A PostgreSQL fast-path function call (by oid) went through.' },
  'postgres.enforcement': { meaning: 'How the statement rules are enforced in a PostgreSQL database: by the event trigger (inDatabase), by the gateway only (with the reason), or a warning about grants the server does not stop.' },
  'postgres.refused_in_database': { meaning: "PostgreSQL's event trigger refused DDL a statement ran (a DO block, EXECUTE, a function): the rule held in the server." },
  'mysql.login': { meaning: 'A MySQL session reached the server as its session user.' },
  'mysql.kill': { meaning: "A MySQL client killed one of its own connections' queries (KILL [QUERY])." },
  'mysql.warning': { meaning: 'The grant of a MySQL session ends soon (MySQL cannot tell an idle client).' },
  'mysql.privileges': { meaning: 'Privileges of the kinds the rules deny were withheld from the minted MySQL user.' },
  'mysql.change_user_refused': { meaning: 'A MySQL client asked COM_CHANGE_USER: refused, the connection stays as it was.' },
  'mysql.unfollowable_response': { meaning: 'The MySQL server sent an answer the relay cannot follow: the client got an ERR and the session ended (where in the answer).' },
  'mssql.login': { meaning: 'A SQL Server session reached the server as its session login.' },
  'mssql.warning': { meaning: 'The grant of a SQL Server session ends soon (sent with the next answer).' },
  'mssql.cancel': { meaning: 'A SQL Server client cancelled a running request (ATTENTION), once per request.' },
  'vnc.connect': { meaning: 'A VNC session reached the desktop (size, clipboard, view-only).' },
  'vnc.clipboard_refused': { meaning: "Clipboard text was dropped: the role does not allow that direction." },
  'vnc.protocol_error': { meaning: 'A VNC peer sent something the relay cannot follow: the session ended.' },
  'vnc.resource_limit': { meaning: 'A VNC peer exceeded a limit of the relay: the session ended.' },
  'rdp.connect': { meaning: 'An RDP session reached the target (account, security, channels kept and refused).' },
  // ---- notifications and SIEM push
  'notification.failed': { meaning: 'A notification (webhook, Slack or email) gave up after its retries; data says the channel, topic and last error.' },
  'notification.retried': { meaning: 'A SOC analyst queued a failed notification again.' },
  'siem.failing': { meaning: 'A SIEM sink stopped acknowledging the audit stream (its last error); events wait at its cursor.' },
  'siem.recovered': { meaning: 'A SIEM sink acknowledges the audit stream again after failing.' },
  'rdp.browser': { meaning: 'An RDP session was opened from the portal: the gateway is the RDP client (size, keyboard layout, clipboard).' },
  'rdp.channel_refused': { meaning: "A virtual channel the role does not allow was refused (drive redirection without rdpdr in the role's channels, say)." },
  'rdp.clipboard_refused': { meaning: "Clipboard data was dropped on the cliprdr channel: the role does not allow that direction." },
  'rdp.file_transfer': { meaning: 'A file was copied through the RDP clipboard (fileTransfer: true): direction and name.' },
  'rdp.file_transfer_refused': { meaning: 'A file copy through the RDP clipboard was refused (the role has no fileTransfer).' },
  'rdp.drive_redirection': { meaning: 'The client shares drives with the desktop (rdpdr allowed by the role): which.' },
  'rdp.capabilities_stripped': { meaning: 'Capabilities the recorder cannot follow were removed from the client\'s Confirm Active.' },
} as const satisfies Record<string, AuditEventSpec>;

export type AuditAction = keyof typeof AUDIT_EVENTS;

const SPECS: Record<string, AuditEventSpec> = AUDIT_EVENTS;

/** Whether a name is in the catalogue. */
export function isAuditAction(name: string): name is AuditAction {
  return Object.hasOwn(SPECS, name);
}

/** The names stored for this action: itself and its older aliases (for searching the log). */
export function storedNames(name: string): string[] {
  return isAuditAction(name) ? [name, ...(SPECS[name]!.aliases ?? [])] : [name];
}

/**
 * An action named by code outside proxy/ (policies, auth, protocol modules take plain strings):
 * written as it is. That it is in the catalogue is checked by test/proxy/audit-events.test.ts,
 * which reads every emitter in the sources.
 */
export function fromModule(name: string): AuditAction {
  return name as AuditAction;
}
