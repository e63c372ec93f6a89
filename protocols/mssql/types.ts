/**
 * TDS data types (MS-TDS 2.2.5.4, 2.2.5.5): TYPE_INFO as it appears in COLMETADATA, RETURNVALUE
 * and RPC parameters, and how a value of each type is laid out on the wire, as resumable readers.
 */
import { ProtocolError } from './packets.js';
import { bVarchar, bytes, skip, u16, u32, u8, usVarchar, type Reader } from './reader.js';

export const TYPE = {
  NULL: 0x1f,
  INT1: 0x30,
  BIT: 0x32,
  INT2: 0x34,
  INT4: 0x38,
  DATETIM4: 0x3a,
  FLT4: 0x3b,
  MONEY: 0x3c,
  DATETIME: 0x3d,
  FLT8: 0x3e,
  MONEY4: 0x7a,
  INT8: 0x7f,
  GUID: 0x24,
  INTN: 0x26,
  DECIMAL: 0x37,
  NUMERIC: 0x3f,
  BITN: 0x68,
  DECIMALN: 0x6a,
  NUMERICN: 0x6c,
  FLTN: 0x6d,
  MONEYN: 0x6e,
  DATETIMN: 0x6f,
  DATEN: 0x28,
  TIMEN: 0x29,
  DATETIME2N: 0x2a,
  DATETIMEOFFSETN: 0x2b,
  CHAR: 0x2f,
  VARCHAR: 0x27,
  BINARY: 0x2d,
  VARBINARY: 0x25,
  BIGVARBIN: 0xa5,
  BIGVARCHR: 0xa7,
  BIGBINARY: 0xad,
  BIGCHAR: 0xaf,
  NVARCHAR: 0xe7,
  NCHAR: 0xef,
  XML: 0xf1,
  UDT: 0xf0,
  TEXT: 0x23,
  IMAGE: 0x22,
  NTEXT: 0x63,
  SSVARIANT: 0x62,
  TVP: 0xf3,
} as const;

const FIXED: Record<number, number> = {
  [TYPE.NULL]: 0, [TYPE.INT1]: 1, [TYPE.BIT]: 1, [TYPE.INT2]: 2, [TYPE.INT4]: 4, [TYPE.DATETIM4]: 4, [TYPE.FLT4]: 4,
  [TYPE.MONEY]: 8, [TYPE.DATETIME]: 8, [TYPE.FLT8]: 8, [TYPE.MONEY4]: 4, [TYPE.INT8]: 8,
};

/** How a value is laid out: fixed size, 1-byte / 2-byte / 4-byte length, PLP chunks, text pointer, TVP rows. */
export type ValueKind = 'fixed' | 'byte' | 'ushort' | 'plp' | 'long' | 'variant' | 'tvp';

export interface TypeInfo {
  id: number;
  kind: ValueKind;
  /** Fixed size, or the declared maximum length. */
  size: number;
  /** TVP columns (kind 'tvp'); a column with fDefault set is not sent in rows. */
  columns?: { type: TypeInfo; isDefault: boolean }[];
}

/** Where a TYPE_INFO appears: the UDT and TEXT forms differ between result metadata and RPC parameters. */
export type TypeContext = 'column' | 'param' | 'tvp-column';

const TVP_ORDER_UNIQUE = 0x10;
const TVP_COLUMN_ORDERING = 0x11;
const TVP_END = 0x00;
const TVP_ROW = 0x01;
const COLUMN_DEFAULT_FLAG = 0x0200;
/** TVPs nested inside TVPs are not valid TDS; a cap keeps a hostile message from recursing. */
const MAX_TVP_COLUMNS = 1024;

export function* typeInfo(ctx: TypeContext): Reader<TypeInfo> {
  const id = yield* u8();
  const fixed = FIXED[id];
  if (fixed !== undefined) return { id, kind: 'fixed', size: fixed };
  switch (id) {
    case TYPE.GUID: case TYPE.INTN: case TYPE.BITN: case TYPE.FLTN: case TYPE.MONEYN: case TYPE.DATETIMN:
    case TYPE.CHAR: case TYPE.VARCHAR: case TYPE.BINARY: case TYPE.VARBINARY:
      return { id, kind: 'byte', size: yield* u8() };
    case TYPE.DECIMAL: case TYPE.NUMERIC: case TYPE.DECIMALN: case TYPE.NUMERICN: {
      const size = yield* u8();
      yield* skip(2); // precision, scale
      return { id, kind: 'byte', size };
    }
    case TYPE.DATEN:
      return { id, kind: 'byte', size: 3 };
    case TYPE.TIMEN: case TYPE.DATETIME2N: case TYPE.DATETIMEOFFSETN:
      yield* skip(1); // scale
      return { id, kind: 'byte', size: 0 };
    case TYPE.BIGVARBIN: case TYPE.BIGBINARY: {
      const size = yield* u16();
      return { id, kind: size === 0xffff && id === TYPE.BIGVARBIN ? 'plp' : 'ushort', size };
    }
    case TYPE.BIGVARCHR: case TYPE.BIGCHAR: case TYPE.NVARCHAR: case TYPE.NCHAR: {
      const size = yield* u16();
      yield* skip(5); // collation
      return { id, kind: size === 0xffff && (id === TYPE.BIGVARCHR || id === TYPE.NVARCHAR) ? 'plp' : 'ushort', size };
    }
    case TYPE.TEXT: case TYPE.NTEXT: case TYPE.IMAGE: {
      const size = yield* u32();
      if (id !== TYPE.IMAGE) yield* skip(5); // collation
      if (ctx === 'column') {
        const parts = yield* u8();
        for (let i = 0; i < parts; i++) yield* usVarchar();
      }
      return { id, kind: 'long', size };
    }
    case TYPE.SSVARIANT:
      return { id, kind: 'variant', size: yield* u32() };
    case TYPE.XML: {
      if ((yield* u8()) !== 0) {
        yield* bVarchar();
        yield* bVarchar();
        yield* usVarchar();
      }
      return { id, kind: 'plp', size: 0xffff };
    }
    case TYPE.UDT: {
      if (ctx === 'column') yield* skip(2); // max byte size
      yield* bVarchar();
      yield* bVarchar();
      yield* bVarchar();
      if (ctx === 'column') yield* usVarchar(); // assembly qualified name
      return { id, kind: 'plp', size: 0xffff };
    }
    case TYPE.TVP: {
      if (ctx !== 'param') throw new ProtocolError('a table-valued type outside an RPC parameter');
      yield* bVarchar();
      yield* bVarchar();
      yield* bVarchar();
      const count = yield* u16();
      const columns: { type: TypeInfo; isDefault: boolean }[] = [];
      if (count !== 0xffff) {
        if (count > MAX_TVP_COLUMNS) throw new ProtocolError('a table-valued parameter with too many columns');
        for (let i = 0; i < count; i++) {
          yield* skip(4); // user type
          const flags = yield* u16();
          const type = yield* typeInfo('tvp-column');
          yield* bVarchar(); // column name (empty)
          columns.push({ type, isDefault: (flags & COLUMN_DEFAULT_FLAG) !== 0 });
        }
      }
      for (;;) {
        const t = yield* u8();
        if (t === TVP_END) break;
        if (t === TVP_ORDER_UNIQUE) yield* skip((yield* u16()) * 3);
        else if (t === TVP_COLUMN_ORDERING) yield* skip((yield* u16()) * 2);
        else throw new ProtocolError(`unknown table-valued parameter token 0x${t.toString(16)}`);
      }
      return { id, kind: 'tvp', size: 0, columns };
    }
    default:
      throw new UnsupportedType(id);
  }
}

/** A data type the gateway does not know how to walk (a newer server type, or garbage). */
export class UnsupportedType extends ProtocolError {
  constructor(readonly typeId: number) {
    super(`unsupported data type 0x${typeId.toString(16)}`);
    this.name = 'UnsupportedType';
  }
}

const PLP_NULL_LOW = 0xffffffff;

/**
 * Skip one value. inRow: a ROW/NBCROW column (TEXT/NTEXT/IMAGE carry a text pointer and a
 * timestamp there); otherwise an RPC parameter or RETURNVALUE.
 */
export function* skipValue(t: TypeInfo, inRow: boolean): Reader<void> {
  switch (t.kind) {
    case 'fixed': yield* skip(t.size); return;
    case 'byte': yield* skip(yield* u8()); return;
    case 'ushort': {
      const n = yield* u16();
      if (n !== 0xffff) yield* skip(n);
      return;
    }
    case 'long': {
      if (inRow) {
        const ptr = yield* u8();
        if (ptr === 0) return; // NULL
        yield* skip(ptr + 8); // text pointer, timestamp
      }
      const n = yield* u32();
      if (n !== 0xffffffff) yield* skip(n);
      return;
    }
    case 'variant': yield* skip(yield* u32()); return;
    case 'plp': {
      const lo = yield* u32();
      const hi = yield* u32();
      if (lo === PLP_NULL_LOW && hi === 0xffffffff) return;
      for (;;) {
        const chunk = yield* u32();
        if (chunk === 0) return;
        yield* skip(chunk);
      }
    }
    case 'tvp': {
      for (;;) {
        const t2 = yield* u8();
        if (t2 === TVP_END) return;
        if (t2 !== TVP_ROW) throw new ProtocolError(`unexpected table-valued parameter row token 0x${t2.toString(16)}`);
        for (const c of t.columns ?? []) if (!c.isDefault) yield* skipValue(c.type, false);
      }
    }
  }
}

/** Read a value as bytes (null for NULL). Used on complete buffers only (RPC parameters). */
export function* readValue(t: TypeInfo): Reader<Buffer | null> {
  switch (t.kind) {
    case 'fixed': return yield* bytes(t.size);
    case 'byte': {
      const n = yield* u8();
      return n === 0 ? null : yield* bytes(n);
    }
    case 'ushort': {
      const n = yield* u16();
      return n === 0xffff ? null : yield* bytes(n);
    }
    case 'long': {
      const n = yield* u32();
      return n === 0xffffffff ? null : yield* bytes(n);
    }
    case 'plp': {
      const lo = yield* u32();
      const hi = yield* u32();
      if (lo === PLP_NULL_LOW && hi === 0xffffffff) return null;
      const parts: Buffer[] = [];
      for (;;) {
        const chunk = yield* u32();
        if (chunk === 0) break;
        parts.push(yield* bytes(chunk));
      }
      return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    }
    default:
      yield* skipValue(t, false);
      return null;
  }
}

/** Text of a character value of this type (UTF-16 for N types, else single-byte as Latin-1). */
export function textOf(t: TypeInfo, v: Buffer | null): string | null {
  if (!v) return null;
  const wide = t.id === TYPE.NVARCHAR || t.id === TYPE.NCHAR || t.id === TYPE.NTEXT;
  const narrow = t.id === TYPE.BIGVARCHR || t.id === TYPE.BIGCHAR || t.id === TYPE.TEXT || t.id === TYPE.VARCHAR || t.id === TYPE.CHAR;
  if (wide) return v.toString('utf16le');
  if (narrow) return v.toString('latin1');
  return null;
}

/** An integer value (INTN, INT1/2/4/8) or null. */
export function intOf(t: TypeInfo, v: Buffer | null): number | null {
  if (!v || !(t.id === TYPE.INTN || t.id === TYPE.INT4 || t.id === TYPE.INT2 || t.id === TYPE.INT1 || t.id === TYPE.INT8)) return null;
  switch (v.length) {
    case 1: return v[0]!;
    case 2: return v.readInt16LE(0);
    case 4: return v.readInt32LE(0);
    case 8: return Number(v.readBigInt64LE(0));
    default: return null;
  }
}
