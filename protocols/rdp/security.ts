/**
 * The basic security header (flags, flagsHi) that precedes the Client Info PDU, licensing PDUs and
 * (with RDP standard security only) every PDU; under TLS it is present only for those two.
 */
import { need } from './errors.js';

export const SEC_EXCHANGE_PKT = 0x0001;
export const SEC_ENCRYPT = 0x0008;
export const SEC_INFO_PKT = 0x0040;
export const SEC_LICENSE_PKT = 0x0080;
export const SEC_REDIRECTION_PKT = 0x0400;

export interface SecurityHeader { flags: number; flagsHi: number; body: Buffer }

export function parseSecurityHeader(p: Buffer): SecurityHeader {
  need(p, 0, 4, 'security header');
  return { flags: p.readUInt16LE(0), flagsHi: p.readUInt16LE(2), body: p.subarray(4) };
}

export function encodeSecurityHeader(flags: number, body: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(flags, 0);
  return Buffer.concat([h, body]);
}

// ---- licensing (MS-RDPELE preamble) ----
export const LICENSE_ERROR_ALERT = 0xff;
export const LICENSE_NEW_LICENSE = 0x03;
export const STATUS_VALID_CLIENT = 0x00000007;

export interface LicensePreamble { msgType: number; flags: number; size: number }

export function parseLicensePreamble(body: Buffer): LicensePreamble {
  need(body, 0, 4, 'licensing preamble');
  return { msgType: body[0]!, flags: body[1]!, size: body.readUInt16LE(2) };
}

/** "Valid client": the licensing PDU a server sends when it does not license (xrdp, FreeRDP). */
export function encodeLicenseValidClient(): Buffer {
  const b = Buffer.alloc(16);
  b[0] = LICENSE_ERROR_ALERT;
  b[1] = 0x03; // PREAMBLE_VERSION_3_0
  b.writeUInt16LE(16, 2);
  b.writeUInt32LE(STATUS_VALID_CLIENT, 4);
  b.writeUInt32LE(2, 8); // ST_NO_TRANSITION
  b.writeUInt16LE(0x0004, 12); // BB_ERROR_BLOB
  b.writeUInt16LE(0, 14);
  return encodeSecurityHeader(SEC_LICENSE_PKT, b);
}
