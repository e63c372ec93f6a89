/**
 * What the workflow tells people: one notice per event, handed to the engine's `notify` option
 * (proxy/ delivers it: the notify command today, webhooks and mail with proxy/notifications).
 * Every notice names its recipients and the portal page a link should open; a link only opens
 * the page (sign-in and step-up MFA as usual), it never decides anything by itself. The README
 * ("Notifications from the workflow") lists each kind and its fields.
 */

export type NoticeKind =
  | 'request.created' | 'request.decided' | 'request.escalated' | 'breakglass'
  | 'grant.expiring' | 'grant.extended' | 'checkout.ready'
  | 'review.due' | 'review.escalated' | 'delegation.created';

/** Who should hear about it: identities (subs) and groups (every member, as the IdP reports them). */
export interface Recipients { identities: string[]; groups: string[] }

export interface Notice {
  kind: NoticeKind;
  to: Recipients;
  /** The portal page (path on the gateway's public URL) a link in the message opens; null: none. */
  path: string | null;
  [field: string]: unknown;
}

export function recipients(identities: string[] = [], groups: string[] = []): Recipients {
  return { identities: [...new Set(identities)].sort(), groups: [...new Set(groups)].sort() };
}

export const portalPath = {
  approvals: (requestId: string) => `/portal/approvals?request=${encodeURIComponent(requestId)}`,
  access: () => '/portal/access',
  accessReview: (id: string) => `/portal/access-reviews?review=${encodeURIComponent(id)}`,
  delegations: () => '/portal/delegations',
  breakGlassReviews: () => '/portal/approvals',
} as const;
