// A read-only reader for bbolt database files (the format of etcd's data file and of
// `etcdctl snapshot save` backups): enough to walk one bucket's key/value pairs in key order.
// It reads pages on demand from a file descriptor, so a multi-GB snapshot is not loaded at once.
//
// Page layout (all integers little-endian, as bbolt writes them on every platform etcd ships for):
//   page header  [id u64][flags u16][count u16][overflow u32]        then elements at offset 16
//   meta (pages 0 and 1, at offset 16)
//                [magic u32 = 0xED0CDAED][version u32 = 2][pageSize u32][flags u32]
//                [root bucket: root pgid u64, sequence u64][freelist pgid u64][high pgid u64]
//                [txid u64][checksum u64 = FNV-1a 64 of the 56 bytes before it]
//   branch element (16 bytes)  [pos u32][ksize u32][child pgid u64]   key at element + pos
//   leaf element   (16 bytes)  [flags u32][pos u32][ksize u32][vsize u32]  key, then value, at element + pos
//   bucket value (leaf flag 1) [root pgid u64][sequence u64], root 0 = an inline page follows

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { FormatInvalidError } from '../errors.js';

const MAGIC = 0xed0cdaed;
const PAGE_HEADER = 16;
const ELEMENT_SIZE = 16;
const FLAG_BRANCH = 0x01;
const FLAG_LEAF = 0x02;
const FLAG_META = 0x04;
const LEAF_FLAG_BUCKET = 0x01;
const BUCKET_HEADER = 16;
const MAX_DEPTH = 64;

function malformed(message: string): FormatInvalidError {
  return new FormatInvalidError('ERR_FORMAT_MALFORMED', `bbolt file: ${message}`);
}

function fnv1a64(data: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const byte of data) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h;
}

function u64(buf: Buffer, offset: number): number {
  const v = buf.readBigUInt64LE(offset);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed('64-bit value out of range');
  return Number(v);
}

interface Meta {
  readonly pageSize: number;
  readonly root: number;
  readonly txid: number;
}

export interface BboltEntry {
  readonly key: Buffer;
  readonly value: Buffer;
}

export class BboltFile {
  private readonly fd: number;
  private readonly size: number;
  private readonly meta: Meta;

  private constructor(fd: number) {
    this.fd = fd;
    this.size = fstatSync(fd).size;
    this.meta = this.readMeta();
  }

  static open(path: string): BboltFile {
    const fd = openSync(path, 'r');
    try {
      return new BboltFile(fd);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  close(): void {
    closeSync(this.fd);
  }

  get pageSize(): number {
    return this.meta.pageSize;
  }

  private read(offset: number, length: number): Buffer {
    if (offset + length > this.size) throw malformed('page runs past the end of the file');
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, buf, done, length - done, offset + done);
      if (n === 0) throw malformed('unexpected end of file');
      done += n;
    }
    return buf;
  }

  /** Both meta pages are checked; the valid one with the highest txid is the committed state. */
  private readMeta(): Meta {
    const candidates: Meta[] = [];
    const first = this.read(0, Math.min(this.size, 4096));
    if (first.length < PAGE_HEADER + 64) throw malformed('file too small');
    const firstPageSize = first.readUInt32LE(PAGE_HEADER + 8);
    for (const pgid of [0, 1]) {
      let page: Buffer;
      try {
        const ps = pgid === 0 ? 0 : firstPageSize;
        if (pgid === 1 && (ps < 512 || ps > 1 << 20)) continue;
        page = this.read(pgid * ps, PAGE_HEADER + 64);
      } catch {
        continue;
      }
      if ((page.readUInt16LE(8) & FLAG_META) === 0) continue;
      const m = page.subarray(PAGE_HEADER, PAGE_HEADER + 64);
      if (m.readUInt32LE(0) !== MAGIC) continue;
      if (m.readBigUInt64LE(56) !== fnv1a64(m.subarray(0, 56))) continue;
      const pageSize = m.readUInt32LE(8);
      if (pageSize < 512 || pageSize > 1 << 20) continue;
      candidates.push({ pageSize, root: u64(m, 16), txid: u64(m, 48) });
    }
    if (candidates.length === 0) {
      throw malformed('no valid meta page (not a bbolt/etcd snapshot file, or corrupted)');
    }
    return candidates.sort((a, b) => b.txid - a.txid)[0]!;
  }

  /** A whole page including its overflow pages. */
  private page(pgid: number): Buffer {
    const ps = this.meta.pageSize;
    const header = this.read(pgid * ps, PAGE_HEADER);
    const overflow = header.readUInt32LE(12);
    return this.read(pgid * ps, (overflow + 1) * ps);
  }

  /** The [root pgid, inline page] of a top-level bucket, or undefined when it does not exist. */
  private findBucket(name: Uint8Array): { root: number; inline: Buffer | undefined } | undefined {
    const wanted = Buffer.from(name);
    for (const e of this.walk(this.meta.root, undefined, 0, true)) {
      if (e.key.equals(wanted)) {
        if (!e.bucket) throw malformed(`"${wanted.toString()}" is not a bucket`);
        const root = u64(e.value, 0);
        return { root, inline: root === 0 ? e.value.subarray(BUCKET_HEADER) : undefined };
      }
    }
    return undefined;
  }

  /** Every key/value of a top-level bucket in key order; nested buckets are skipped. */
  *entries(bucket: string): Generator<BboltEntry> {
    const found = this.findBucket(Buffer.from(bucket));
    if (!found) throw malformed(`bucket "${bucket}" not found`);
    for (const e of this.walk(found.root, found.inline, 0, false)) {
      if (!e.bucket) yield { key: e.key, value: e.value };
    }
  }

  private *walk(
    pgid: number,
    inline: Buffer | undefined,
    depth: number,
    includeBuckets: boolean,
  ): Generator<{ key: Buffer; value: Buffer; bucket: boolean }> {
    if (depth > MAX_DEPTH) throw malformed('tree too deep (cycle?)');
    const page = inline ?? this.page(pgid);
    if (page.length < PAGE_HEADER) throw malformed('short page');
    const flags = page.readUInt16LE(8);
    const count = page.readUInt16LE(10);
    if (PAGE_HEADER + count * ELEMENT_SIZE > page.length) throw malformed('element table too large');
    if (flags & FLAG_BRANCH) {
      for (let i = 0; i < count; i++) {
        const el = PAGE_HEADER + i * ELEMENT_SIZE;
        const child = u64(page, el + 8);
        if (child < 2) throw malformed('branch points at a meta page');
        yield* this.walk(child, undefined, depth + 1, includeBuckets);
      }
      return;
    }
    if (!(flags & FLAG_LEAF)) throw malformed(`page ${pgid} is neither branch nor leaf`);
    for (let i = 0; i < count; i++) {
      const el = PAGE_HEADER + i * ELEMENT_SIZE;
      const leafFlags = page.readUInt32LE(el);
      const pos = page.readUInt32LE(el + 4);
      const ksize = page.readUInt32LE(el + 8);
      const vsize = page.readUInt32LE(el + 12);
      const start = el + pos;
      if (start + ksize + vsize > page.length) throw malformed('leaf element runs past its page');
      const bucket = (leafFlags & LEAF_FLAG_BUCKET) !== 0;
      if (bucket && !includeBuckets) continue;
      yield {
        key: page.subarray(start, start + ksize),
        value: page.subarray(start + ksize, start + ksize + vsize),
        bucket,
      };
    }
  }
}
