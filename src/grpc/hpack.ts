// A minimal HPACK (RFC 7541) decoder for the lean HTTP/2 server: it follows the client's encoder state
// exactly (static table, dynamic table with eviction, size updates, Huffman) and reports each field
// representation with its byte range. Values are kept only for the names the caller asks about; for every
// other entry only the name and the size are kept -- enough to stay in step with the peer's table.
// The Huffman code table is our own copy of RFC 7541 Appendix B (hpack-huffman.ts).

import { HUFFMAN_CODE, HUFFMAN_EOS } from './hpack-huffman.js';

// RFC 7541 Appendix A, index 1..61.
const STATIC_TABLE: readonly (readonly [string, string])[] = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''],
  ['cache-control', ''], ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''],
  ['content-length', ''], ['content-location', ''], ['content-range', ''], ['content-type', ''],
  ['cookie', ''], ['date', ''], ['etag', ''], ['expect', ''], ['expires', ''], ['from', ''], ['host', ''],
  ['if-match', ''], ['if-modified-since', ''], ['if-none-match', ''], ['if-range', ''],
  ['if-unmodified-since', ''], ['last-modified', ''], ['link', ''], ['location', ''], ['max-forwards', ''],
  ['proxy-authenticate', ''], ['proxy-authorization', ''], ['range', ''], ['referer', ''], ['refresh', ''],
  ['retry-after', ''], ['server', ''], ['set-cookie', ''], ['strict-transport-security', ''],
  ['transfer-encoding', ''], ['user-agent', ''], ['vary', ''], ['via', ''], ['www-authenticate', ''],
];
const STATIC_COUNT = STATIC_TABLE.length;

/** Every entry costs its octet lengths plus 32 (RFC 7541 §4.1). */
const ENTRY_OVERHEAD = 32;

export class HpackError extends Error {
  override readonly name = 'HpackError';
}

// Huffman decoding tree: node n has children at tree[2n] (bit 0) and tree[2n+1] (bit 1); a child > 0
// is a node, < 0 is a leaf holding -(symbol + 1), 0 is unassigned.
const HUFFMAN_TREE = ((): Int32Array => {
  const tree = new Int32Array(2 * 512);
  let nodes = 1;
  HUFFMAN_CODE.forEach(([code, bits], symbol) => {
    let node = 0;
    for (let b = bits - 1; b >= 0; b--) {
      const slot = 2 * node + ((code >>> b) & 1);
      if (b === 0) tree[slot] = -(symbol + 1);
      else {
        if (tree[slot] === 0) tree[slot] = nodes++;
        node = tree[slot]!;
      }
    }
  });
  return tree;
})();

/**
 * Decodes a Huffman string. Returns the decoded octet length; when `out` is given, writes the octets
 * there (it must hold at least 8/5 of the encoded length).
 */
function huffmanDecode(src: Buffer, start: number, end: number, out: Buffer | null): number {
  let node = 0;
  let n = 0;
  let pendingBits = 0; // bits since the last complete symbol
  let pendingOnes = true;
  for (let i = start; i < end; i++) {
    const byte = src[i]!;
    for (let b = 7; b >= 0; b--) {
      const bit = (byte >>> b) & 1;
      const next = HUFFMAN_TREE[2 * node + bit]!;
      pendingBits++;
      if (bit === 0) pendingOnes = false;
      if (next < 0) {
        const symbol = -next - 1;
        if (symbol === HUFFMAN_EOS) throw new HpackError('Huffman string contains EOS');
        if (out !== null) out[n] = symbol;
        n++;
        node = 0;
        pendingBits = 0;
        pendingOnes = true;
      } else if (next === 0) {
        throw new HpackError('invalid Huffman code');
      } else {
        node = next;
      }
    }
  }
  if (pendingBits > 7 || !pendingOnes) throw new HpackError('invalid Huffman padding');
  return n;
}

interface Entry {
  readonly name: string;
  /** Only for names the decoder was asked to keep; null otherwise. */
  readonly value: string | null;
  readonly size: number;
}

/** What kind of representation a field came in (RFC 7541 §6). */
export const FIELD_INDEXED = 0;
export const FIELD_LITERAL_INCREMENTAL = 1;
export const FIELD_LITERAL_WITHOUT_INDEXING = 2;
export const FIELD_LITERAL_NEVER_INDEXED = 3;

/** One decoded field of interest. Byte offsets are into the block passed to decode(). */
export interface HpackField {
  name: string;
  value: string;
  kind: number;
  /** Start of the field's representation. */
  start: number;
  /** Start of the value string (its length prefix) for literals; -1 for an indexed field. */
  valueStart: number;
  end: number;
}

/**
 * Per-call options of decode(), used by the lean server (lean-server.ts) for HTTP/2 request limits
 * and validation. Pass one long-lived object: decode() allocates nothing for it.
 */
export interface HpackDecodeOptions {
  /**
   * SETTINGS_MAX_HEADER_LIST_SIZE on the DECODED list (RFC 7541 §4.1 sizes: name + value + 32 per
   * field): once it is exceeded no more fields are reported, but the block is still decoded to the
   * end so the dynamic table stays in step with the peer. decode() then returns false.
   */
  readonly maxListSize?: number;
  /** Called, in block order, with the name of every field NOT in `keep` (values are not decoded). */
  readonly onOther?: (name: string) => void;
}

/** The RFC 7541 §4.1 size of each static table entry. */
const STATIC_SIZES: readonly number[] = STATIC_TABLE.map(
  ([name, value]) => name.length + value.length + ENTRY_OVERHEAD,
);

export class HpackDecoder {
  private readonly entries: Entry[] = []; // oldest first; dynamic index 1 = the last element
  private size = 0;
  private maxSize: number;
  private readonly protocolMax: number;
  private readonly keep: ReadonlySet<string>;
  private scratch = Buffer.allocUnsafe(256);

  /**
   * @param protocolMax SETTINGS_HEADER_TABLE_SIZE the decoding side announced (the client's encoder
   *   may use any size up to it).
   * @param keep header names whose values are decoded, stored and reported.
   */
  constructor(protocolMax: number, keep: ReadonlySet<string>) {
    this.protocolMax = protocolMax;
    this.maxSize = protocolMax;
    this.keep = keep;
  }

  /** Current dynamic table usage in octets (for tests). */
  get tableSize(): number {
    return this.size;
  }

  /**
   * Decodes one complete header block, updating the dynamic table, and calls onField for every field
   * whose name is in `keep` (see HpackDecodeOptions for limits). Returns false when the decoded list
   * exceeded options.maxListSize. Throws HpackError on a malformed block (a connection error for HTTP/2).
   */
  decode(block: Buffer, onField: (field: HpackField) => void, options?: HpackDecodeOptions): boolean {
    let pos = 0;
    let sawField = false;
    const maxListSize = options?.maxListSize ?? Infinity;
    const onOther = options?.onOther;
    let listSize = 0;
    const len = block.length;
    while (pos < len) {
      const start = pos;
      const first = block[pos]!;
      if (first & 0x80) {
        // Indexed field.
        const r = this.readInt(block, pos, 7);
        pos = r;
        const index = this.lastInt;
        if (index === 0) throw new HpackError('index 0');
        const name = this.nameAt(index);
        listSize += index <= STATIC_COUNT ? STATIC_SIZES[index - 1]! : this.dynamicAt(index).size;
        if (listSize <= maxListSize) {
          if (this.keep.has(name)) {
            onField({ name, value: this.valueAt(index), kind: FIELD_INDEXED, start, valueStart: -1, end: pos });
          } else onOther?.(name);
        }
        sawField = true;
        continue;
      }
      if ((first & 0xe0) === 0x20) {
        // Dynamic table size update: only at the start of a block, within the announced limit.
        if (sawField) throw new HpackError('table size update after a field');
        pos = this.readInt(block, pos, 5);
        if (this.lastInt > this.protocolMax) throw new HpackError('table size update above the limit');
        this.maxSize = this.lastInt;
        this.evict(0);
        continue;
      }
      let kind: number;
      let prefix: number;
      if (first & 0x40) {
        kind = FIELD_LITERAL_INCREMENTAL;
        prefix = 6;
      } else if (first & 0x10) {
        kind = FIELD_LITERAL_NEVER_INDEXED;
        prefix = 4;
      } else {
        kind = FIELD_LITERAL_WITHOUT_INDEXING;
        prefix = 4;
      }
      pos = this.readInt(block, pos, prefix);
      const nameIndex = this.lastInt;
      let name: string;
      let nameOctets: number;
      if (nameIndex === 0) {
        pos = this.readString(block, pos, true);
        name = this.lastString!;
        nameOctets = this.lastLength;
      } else {
        name = this.nameAt(nameIndex);
        nameOctets = Buffer.byteLength(name, 'latin1');
      }
      const valueStart = pos;
      const wanted = this.keep.has(name);
      pos = this.readString(block, pos, wanted);
      const value = wanted ? this.lastString! : null;
      const valueOctets = this.lastLength;
      if (kind === FIELD_LITERAL_INCREMENTAL) this.add(name, value, nameOctets + valueOctets + ENTRY_OVERHEAD);
      listSize += nameOctets + valueOctets + ENTRY_OVERHEAD;
      if (listSize <= maxListSize) {
        if (wanted) onField({ name, value: value!, kind, start, valueStart, end: pos });
        else onOther?.(name);
      }
      sawField = true;
    }
    return listSize <= maxListSize;
  }

  // --- integers and strings (results in lastInt / lastString / lastLength to avoid allocations) ---

  private lastInt = 0;
  private lastString: string | null = null;
  private lastLength = 0;

  private readInt(block: Buffer, pos: number, prefixBits: number): number {
    const mask = (1 << prefixBits) - 1;
    let value = block[pos]! & mask;
    pos++;
    if (value === mask) {
      let shift = 0;
      for (;;) {
        if (pos >= block.length) throw new HpackError('truncated integer');
        const b = block[pos++]!;
        value += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if ((b & 0x80) === 0) break;
        if (shift > 28) throw new HpackError('integer too large');
      }
    }
    this.lastInt = value;
    return pos;
  }

  private readString(block: Buffer, pos: number, materialize: boolean): number {
    if (pos >= block.length) throw new HpackError('truncated string');
    const huffman = (block[pos]! & 0x80) !== 0;
    pos = this.readInt(block, pos, 7);
    const length = this.lastInt;
    const end = pos + length;
    if (end > block.length) throw new HpackError('truncated string');
    if (!huffman) {
      this.lastLength = length;
      this.lastString = materialize ? block.toString('latin1', pos, end) : null;
      return end;
    }
    if (!materialize) {
      this.lastLength = huffmanDecode(block, pos, end, null);
      this.lastString = null;
      return end;
    }
    const need = Math.ceil((length * 8) / 5);
    if (this.scratch.length < need) this.scratch = Buffer.allocUnsafe(need);
    this.lastLength = huffmanDecode(block, pos, end, this.scratch);
    this.lastString = this.scratch.toString('latin1', 0, this.lastLength);
    return end;
  }

  // --- the tables ---

  private nameAt(index: number): string {
    if (index <= STATIC_COUNT) return STATIC_TABLE[index - 1]![0];
    return this.dynamicAt(index).name;
  }

  private valueAt(index: number): string {
    if (index <= STATIC_COUNT) return STATIC_TABLE[index - 1]![1];
    const value = this.dynamicAt(index).value;
    if (value === null) throw new Error('unreachable: value of an unkept entry');
    return value;
  }

  private dynamicAt(index: number): Entry {
    const i = this.entries.length - (index - STATIC_COUNT);
    if (i < 0) throw new HpackError(`index ${index} beyond the dynamic table`);
    return this.entries[i]!;
  }

  private add(name: string, value: string | null, size: number): void {
    if (size > this.maxSize) {
      // An entry larger than the table empties it and is not added (RFC 7541 §4.4).
      this.entries.length = 0;
      this.size = 0;
      return;
    }
    this.evict(size);
    this.entries.push({ name, value, size });
    this.size += size;
  }

  private evict(incoming: number): void {
    while (this.size + incoming > this.maxSize && this.entries.length > 0) {
      this.size -= this.entries.shift()!.size;
    }
  }
}

/** Encodes an HPACK integer with the given prefix bits and first-byte flags. */
export function encodeHpackInt(value: number, prefixBits: number, flags: number): number[] {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) return [flags | value];
  const out = [flags | mask];
  let rest = value - mask;
  while (rest >= 128) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}
