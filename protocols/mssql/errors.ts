/**
 * The messages the gateway itself sends in TDS: an ERROR token and a DONE with the error bit, as
 * one response message. Numbers: 18456 for a refused login (what SQL Server says), 5000x for
 * Tollgate's own errors (user-defined range).
 */
import { encodeMessage, PKT } from './packets.js';
import { DONE, TOKEN, encodeDone, encodeError, encodeInfo, type ServerMessage } from './tokens.js';

export const ERR = {
  /** Login failed (wrong, used or expired secret; no grant; lock; hours; throttled). */
  LOGIN_FAILED: 18456,
  /** A statement refused by a command rule; the session goes on. */
  DENIED: 50001,
  /** The gateway ends the session (kill, lock, expiry, revoke, forbidden statement). */
  SESSION_ENDED: 50002,
  /** The client did something the gateway does not relay (MARS, integrated auth, bad packets...). */
  UNSUPPORTED: 50003,
  /** The database could not be reached or refused the session login. */
  TARGET: 50004,
} as const;

/** Severity of an error that ends the connection. */
export const FATAL = 20;

export function errorTokens(m: ServerMessage, doneStatus: number = DONE.ERROR): Buffer {
  return Buffer.concat([encodeError(m), encodeDone(doneStatus, 0, TOKEN.DONE)]);
}

/** A whole response message holding one error. */
export function errorMessage(m: ServerMessage, packetSize?: number): Buffer {
  return encodeMessage(PKT.TABULAR_RESULT, errorTokens(m), packetSize);
}

export function loginFailed(user: string, reason: string, packetSize?: number): Buffer {
  const who = user.slice(0, 100).replace(/[\u0000-\u001f]/g, '?');
  return errorMessage({ number: ERR.LOGIN_FAILED, class: 14, state: 1, message: `Login failed for user '${who}'. ${reason}` }, packetSize);
}

export function infoTokens(messages: string[]): Buffer {
  return Buffer.concat(messages.map((message) => encodeInfo({ number: 0, class: 0, state: 1, message })));
}
