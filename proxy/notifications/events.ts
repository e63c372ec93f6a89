/**
 * What a notification can be about (its topic), and which workflow event becomes which topic. The
 * workflow reports through one hook (gateway.notify, JitEngineOptions.notify): an object with a
 * `kind` and the facts of the event, optionally `to: {identities, groups}` (who should hear about
 * it) and `path` (the portal page a link opens). Both the kinds the engine reports today and
 * those of the governance workflow (request.created, request.decided with a `decision`, …) map
 * here. Kinds nobody maps still reach the webhooks that subscribe to every topic ('*'), under
 * their own kind as topic, with a generic text.
 */

export const TOPICS = [
  /** A request waits for approval: to the current stage's approvers (never the requester). */
  'request.pending',
  /** A request was approved, denied or expired: to the requester. */
  'request.decided',
  /** A request escalated: to the escalation groups. */
  'request.escalated',
  /** Someone used break-glass: to the break-glass reviewers and the SOC. */
  'breakglass.used',
  /** A command or statement rule with action alert or kill fired: to the SOC. */
  'rule.triggered',
  /** A gateway alert (a refused host key, a source throttled after failed secrets…): to the SOC. */
  'alert',
  /** A grant ends soon (notifications.grantExpiry before its end): to its holder. */
  'grant.expiring',
  /** A grant was extended (it keeps its id): to its holder. */
  'grant.extended',
  /** A checked-out account a request waited for is now the requester's: to the requester. */
  'checkout.ready',
  /** An access review is due or overdue: to its reviewers. */
  'review.due',
  /** Someone delegated their approvals: to the delegate. */
  'delegation.created',
] as const;
export type Topic = (typeof TOPICS)[number];

/** The topic of a workflow event's kind (its own kind when none of the above). */
export function topicOf(kind: string): string {
  switch (kind) {
    case 'request': case 'request.created': return 'request.pending';
    case 'request.approved': case 'request.denied': case 'request.expired': return 'request.decided';
    case 'escalation': return 'request.escalated';
    case 'breakglass': return 'breakglass.used';
    case 'rule': return 'rule.triggered';
    case 'alert': case 'throttled': return 'alert';
    case 'review.overdue': case 'review.escalated': return 'review.due';
    default: return kind;
  }
}

/** Whether a channel subscribed to `events` gets this topic. */
export function subscribed(events: readonly string[], topic: string): boolean {
  return events.includes('*') || events.includes(topic);
}
