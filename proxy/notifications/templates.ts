import type { GrantRecord, RequestRecord } from '../store/types.js';

/**
 * What each topic says, once, in a channel-neutral form (a title, lines of text, links into the
 * portal), and the three renderings of it: email (text and HTML), Slack-compatible JSON, and the
 * generic signed JSON body. Links only open portal pages: deciding still needs the person's own
 * sign-in (and MFA where the policy asks) and a button press there; no link carries a token.
 */

export interface Link { label: string; url: string }

export interface Message {
  topic: string;
  title: string;
  lines: string[];
  links: Link[];
  severity: 'info' | 'warning';
}

/** What the notifier looked up about an event (the request or grant it names). */
export interface Facts {
  request?: RequestRecord | null;
  grant?: GrantRecord | null;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
/** One line of untrusted text (a reason, a command): no control characters, at most n characters. */
export function clip(v: unknown, n = 300): string {
  const s = str(v).replace(/[\u0000-\u001f\u007f\u2028\u2029]+/g, ' ').trim();
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

export function fmtTime(ms: unknown): string {
  return typeof ms === 'number' && Number.isFinite(ms) ? `${new Date(ms).toISOString().slice(0, 16).replace('T', ' ')} UTC` : '';
}

export function fmtDuration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}

const id = (v: unknown) => encodeURIComponent(str(v));

/** A portal path an event asks its link to open: /portal/… only (never another origin, never a script). */
function portalPath(v: unknown): string | null {
  return typeof v === 'string' && /^\/portal\/[\w\-/?=&%.]*$/.test(v) ? v : null;
}

/** The channel-neutral message of an event. `base`: the gateway's public URL. */
export function render(topic: string, e: Record<string, unknown>, f: Facts, base: string): Message {
  const r = f.request ?? null;
  const g = f.grant ?? null;
  const who = clip(e['requester'] ?? r?.requester ?? e['identity'], 100);
  const what = `${clip(e['target'] ?? r?.target ?? g?.target, 100)} as ${clip(e['role'] ?? r?.role ?? g?.role, 100)}`;
  const asked = portalPath(e['path']);
  /** The event's own page when it names one (with its label), else the default. */
  const link = (label: string, fallback: string): Link => ({ label, url: `${base}${asked ?? fallback}` });
  const groups = Array.isArray(e['groups']) ? (e['groups'] as unknown[]).map((x) => clip(x, 50)) : null;
  const requestLines = (): string[] => r ? [
    `Reason: ${clip(r.reason, 500)}`,
    `Duration: ${fmtDuration(r.durationMs)} · risk ${clip(r.risk, 20)}${r.mfaRequired ? ' · needs MFA' : ''}`,
  ] : e['reason'] !== undefined ? [`Reason: ${clip(e['reason'], 500)}`] : [];
  const approveLink = () => link('Open the request to approve or deny', `/portal/approvals?request=${id(e['requestId'])}`);
  const decideInPortal = 'Approve or deny it in the portal (sign-in and MFA as usual); the link alone decides nothing.';
  const m = (title: string, lines: string[], links: Link[], severity: Message['severity'] = 'info'): Message => ({ topic, title: clip(title, 200), lines, links, severity });

  switch (topic) {
    case 'request.pending': {
      const stage = typeof e['stage'] === 'number' ? e['stage'] : 0;
      const stages = r?.stages.length ?? (typeof e['stages'] === 'number' ? e['stages'] : stage + 1);
      return m(`${who} asks for ${what}`, [
        ...requestLines(),
        `Approval stage ${stage + 1} of ${stages}${groups ? ` (${groups.join(', ')})` : ''}.`,
        decideInPortal,
      ], [approveLink()]);
    }
    case 'request.decided': {
      // The engine today reports request.approved / .denied / .expired; the governance workflow reports request.decided with a decision.
      const kind = str(e['kind']);
      const decision = typeof e['decision'] === 'string' ? e['decision'] : kind.replace(/^request\./, '');
      const by = clip(e['decidedBy'] ?? r?.decidedBy, 100);
      const mine = link('Open your request', `/portal/access?request=${id(e['requestId'])}`);
      if (decision === 'approved') {
        return m(`Approved: ${what}`, [
          `Your request for ${what} was approved${by ? ` (last by ${by})` : ''}.`,
          ...(g ? [`The grant lasts until ${fmtTime(g.expiresAt)}.`] : []),
        ], [mine]);
      }
      if (decision === 'queued') {
        return m(`Approved, waiting: ${what}`, [
          `Your request for ${what} was approved; the account is checked out to ${clip(e['holder'], 100)} until ${fmtTime(e['holderEnds'])}. You are next.`,
        ], [mine]);
      }
      if (decision === 'denied') {
        const why = e['comment'] ?? r?.decisionReason;
        return m(`Denied: ${what}`, [
          `Your request for ${what} was denied${by ? ` by ${by}` : ''}.`,
          ...(why ? [`Reason: ${clip(why, 500)}`] : []),
        ], [mine], 'warning');
      }
      return m(`Expired: ${what}`, [`Your request for ${what} expired: nobody decided in time.`], [mine], 'warning');
    }
    case 'request.escalated':
      return m(`Escalated: ${who} asks for ${what}`, [
        ...requestLines(),
        `Nobody decided within the approval timeout; it now waits for ${groups ? groups.join(', ') : 'the escalation groups'}.`,
        decideInPortal,
      ], [approveLink()], 'warning');
    case 'breakglass.used':
      return m(`Break-glass: ${who} opened ${what}`, [
        `Reason: ${clip(e['reason'], 500)}`,
        `Access until ${fmtTime(e['expiresAt'])}, without approval.`,
        'A review is open: someone outside the break-glass groups must close it.',
      ], [{ label: 'Open the review', url: `${base}/portal/approvals?review=${id(e['reviewId'])}` }], 'warning');
    case 'rule.triggered': {
      const kill = e['action'] === 'kill';
      return m(`Forbidden command on ${clip(e['target'], 100)} by ${who}${kill ? ' (session ended)' : ''}`, [
        `Command: ${clip(e['text'], 500)}`,
        kill ? 'The rule ends the session.' : 'The rule only alerts: the session goes on.',
      ], [kill
        ? { label: 'Open the recording', url: `${base}/portal/recordings/${id(e['session'])}` }
        : { label: 'Watch the session', url: `${base}/portal/sessions/${id(e['session'])}` }], 'warning');
    }
    case 'alert': {
      if (e['kind'] === 'throttled') {
        return m(`Alert: ${clip(e['source'], 100)} refused after ${clip(e['failures'], 20)} wrong secrets`, [
          `Refused until ${clip(e['until'], 40)}.`,
        ], [{ label: 'Open the audit log', url: `${base}/portal/audit` }], 'warning');
      }
      return m(`Alert: ${clip(e['action'], 100)}${e['subject'] ? ` (${clip(e['subject'], 100)})` : ''}`, factLines(e, ['kind', 'action', 'subject']),
        [{ label: 'Open the audit log', url: `${base}/portal/audit` }], 'warning');
    }
    case 'grant.expiring':
      return m(`Your access to ${what} ends at ${fmtTime(e['expiresAt'] ?? g?.expiresAt)}`, [
        'Live sessions get a warning and end then. Ask again (or for an extension) in the portal if you need more time.',
      ], [link('Open My access', `/portal/access?grant=${id(e['grantId'])}`)]);
    case 'grant.extended':
      return m(`Extended: ${what} until ${fmtTime(e['expiresAt'] ?? g?.expiresAt)}`, [
        `Your grant for ${what} now ends at ${fmtTime(e['expiresAt'] ?? g?.expiresAt)}${e['previousExpiresAt'] ? ` (it ended at ${fmtTime(e['previousExpiresAt'])})` : ''}; live sessions go on.`,
      ], [link('Open My access', `/portal/access?grant=${id(e['grantId'])}`)]);
    case 'checkout.ready':
      return m(`Your turn: ${what}`, [
        `The account you waited for is yours now, until ${fmtTime(e['expiresAt'] ?? g?.expiresAt)}.`,
      ], [link('Open My access', `/portal/access?grant=${id(e['grantId'])}`)]);
    case 'review.due': {
      const overdue = e['kind'] === 'review.escalated' || e['overdue'] === true;
      const count = typeof e['undecided'] === 'number' ? `${e['undecided']} of ${clip(e['lines'], 10)} lines still open`
        : typeof e['lines'] === 'number' ? `${e['lines']} lines to confirm or revoke` : null;
      return m(`Access review ${overdue ? 'overdue' : 'due'}: ${clip(e['name'] ?? e['policy'] ?? e['reviewId'] ?? e['campaignId'], 100)}`, [
        ...(e['dueAt'] !== undefined ? [`Due ${fmtTime(e['dueAt'])}${overdue ? ' (overdue)' : ''}.`] : []),
        ...(count ? [`${count}.`] : []),
        'Confirm or revoke each line in the portal.',
      ], [link('Open the review', '/portal/approvals')], overdue ? 'warning' : 'info');
    }
    case 'delegation.created':
      return m(`${clip(e['delegator'], 100)} delegated their approvals to you`, [
        `From ${fmtTime(e['startsAt'])} to ${fmtTime(e['endsAt'])}.`,
        ...(e['reason'] ? [`Reason: ${clip(e['reason'], 500)}`] : []),
        'You cannot approve your own requests; decisions you make show both names.',
      ], [link('Open delegations', '/portal/approvals')]);
    default:
      return m(`Tollgate: ${clip(e['kind'], 100)}`, factLines(e, ['kind', 'to', 'path']), asked ? [link('Open in the portal', asked)] : []);
  }
}

/** The other facts of an event as "key: value" lines (generic topics). */
function factLines(e: Record<string, unknown>, skip: string[]): string[] {
  return Object.entries(e).filter(([k, v]) => !skip.includes(k) && k !== 'dedupeKey' && v !== undefined && v !== null).slice(0, 20)
    .map(([k, v]) => `${clip(k, 40)}: ${clip(v, 200)}`);
}

const htmlEscape = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** Email: subject, plain text, and the same as simple HTML. */
export function toEmail(m: Message): { subject: string; text: string; html: string } {
  const text = [m.title, '', ...m.lines, '', ...m.links.map((l) => `${l.label}: ${l.url}`), '', '— Tollgate'].join('\n');
  const html = `<!doctype html><html><body style="font-family:sans-serif">
<p><strong>${htmlEscape(m.title)}</strong></p>
${m.lines.map((l) => `<p>${htmlEscape(l)}</p>`).join('\n')}
${m.links.map((l) => `<p><a href="${htmlEscape(l.url)}">${htmlEscape(l.label)}</a></p>`).join('\n')}
<p style="color:#666">— Tollgate</p>
</body></html>`;
  return { subject: `[Tollgate] ${m.title}`, text, html };
}

/** Slack's mrkdwn: &, < and > are escaped, so no text can turn into a link or a mention (<!channel>). */
const slackEscape = (s: string) => s.replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c]!);

/** A Slack-compatible message for an incoming webhook: a fallback text, a section and link buttons. */
export function toSlack(m: Message): Record<string, unknown> {
  const body = `*${slackEscape(m.title)}*${m.lines.length ? `\n${m.lines.map(slackEscape).join('\n')}` : ''}`;
  return {
    text: slackEscape(m.title),
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text: body.length > 3000 ? `${body.slice(0, 2999)}…` : body } },
      ...(m.links.length ? [{ type: 'actions', elements: m.links.slice(0, 5).map((l) => ({ type: 'button', text: { type: 'plain_text', text: l.label.slice(0, 75) }, url: l.url })) }] : []),
    ],
  };
}

/** The generic JSON body (signed): the message, whom it is for, and the event's facts. */
export function toJson(m: Message, o: { id: string; at: number; gateway: string; kind: string; recipients: string[]; event: Record<string, unknown>; facts: Facts }): Record<string, unknown> {
  const { dedupeKey: _d, ...event } = o.event;
  return {
    id: o.id, topic: m.topic, kind: o.kind, gateway: o.gateway, at: new Date(o.at).toISOString(), severity: m.severity,
    title: m.title, text: m.lines.join('\n'), links: m.links, recipients: o.recipients, event,
    ...(o.facts.request ? { request: requestView(o.facts.request) } : {}),
    ...(o.facts.grant ? { grant: { id: o.facts.grant.id, identity: o.facts.grant.identity, target: o.facts.grant.target, role: o.facts.grant.role, expiresAt: o.facts.grant.expiresAt } } : {}),
  };
}

function requestView(r: RequestRecord): Record<string, unknown> {
  return {
    id: r.id, requester: r.requester, target: r.target, role: r.role, reason: r.reason, durationMs: r.durationMs, risk: r.risk, state: r.state,
    currentStage: r.currentStage, stages: r.stages, mfaRequired: r.mfaRequired, decidedBy: r.decidedBy, decisionReason: r.decisionReason, grantId: r.grantId,
  };
}
