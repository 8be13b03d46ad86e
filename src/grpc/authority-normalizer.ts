// The :authority normaliser: sits between a client's raw socket and Node's HTTP/2 server and makes
// header blocks acceptable to nghttp2, which resets any stream whose :authority (or host) contains a
// character outside the URI authority set -- e.g. the raw socket path '/var/run/kms.sock' that older
// grpc-go clients (kube-apiserver up to ~1.28) send (kms-spec §8b).
//
// Client -> server: frames are parsed after the 24-byte preface; every header block (HEADERS +
// CONTINUATION) is decoded with our own HPACK decoder so its dynamic table stays in step with the
// client's encoder. A block without an offending value is forwarded byte for byte. An offending value
// is replaced by one of the *same length* with each unacceptable octet turned into '_', as a plain
// (non-Huffman) literal of the same representation kind: Node's decoder table then holds entries of
// exactly the sizes the client's encoder assumes, so later indexed references stay valid and resolve
// to the safe value. The original value is remembered per stream for the handler (takeAuthority).
// Any framing or HPACK problem switches the connection to plain pass-through: Node's own HTTP/2 layer
// then sees exactly what the client sent and answers it with the proper connection error.
// Server -> client bytes are never touched.

import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { HpackDecoder, HpackError, encodeHpackInt, type HpackField } from './hpack.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER = 9;
const TYPE_HEADERS = 0x1;
const TYPE_CONTINUATION = 0x9;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;

/** What the server announces (and Node's defaults): the decoder and the frame splitter rely on them. */
export const SERVER_HEADER_TABLE_SIZE = 4096;
export const SERVER_MAX_FRAME_SIZE = 16384;
/** A header block larger than this is not held back; the connection goes to pass-through. */
const MAX_HELD_BYTES = 256 * 1024;
/** Original authorities of streams Node never surfaced (reset early) are forgotten beyond this. */
const MAX_REMEMBERED = 256;

const KEPT_NAMES: ReadonlySet<string> = new Set([':authority', 'host']);

// nghttp2's authority check: unreserved, sub-delims, ':', '@', '[', ']' and '%'.
const AUTHORITY_OK = ((): Uint8Array => {
  const ok = new Uint8Array(256);
  for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@[]%") {
    ok[c.charCodeAt(0)] = 1;
  }
  return ok;
})();

export function isAcceptableAuthority(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    if (AUTHORITY_OK[value.charCodeAt(i) & 0xff] !== 1 || value.charCodeAt(i) > 0xff) return false;
  }
  return true;
}

function sanitize(value: string): Buffer {
  const out = Buffer.from(value, 'latin1');
  for (let i = 0; i < out.length; i++) if (AUTHORITY_OK[out[i]!] !== 1) out[i] = 0x5f; // '_'
  return out;
}

export interface AuthorityNormalizer {
  /** The Duplex to hand to Node's HTTP/2 server in place of the socket. */
  readonly stream: Duplex;
  /** The original (undecoded) :authority of a stream whose value was rewritten; removes it. */
  takeAuthority(streamId: number): string | undefined;
  /** Header blocks rewritten so far (for tests and metrics). */
  readonly rewrites: number;
  /** True once the connection fell back to pass-through. */
  readonly passthrough: boolean;
}

export function createAuthorityNormalizer(socket: Socket): AuthorityNormalizer {
  const decoder = new HpackDecoder(SERVER_HEADER_TABLE_SIZE, KEPT_NAMES);
  const originals = new Map<number, string>();
  let prefaceSeen = 0;
  let passthrough = false;
  let passRemaining = 0; // bytes of a non-header frame still to forward
  let carry: Buffer | null = null; // unforwarded bytes: a partial frame header or held header frames
  let rewrites = 0;

  const duplex = new Duplex({
    allowHalfOpen: false,
    read() {
      socket.resume();
    },
    // A write is done as soon as the socket has accepted it (or, when the socket is full, once it
    // drains): waiting for the kernel write to complete would cost HTTP/2 an event-loop turn per write.
    write(chunk: Buffer, _encoding, callback) {
      if (socket.write(chunk)) callback();
      else socket.once('drain', () => callback());
    },
    writev(chunks, callback) {
      socket.cork();
      for (const c of chunks) socket.write(c.chunk as Buffer);
      socket.uncork();
      if (socket.writableNeedDrain) socket.once('drain', () => callback());
      else callback();
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(err, callback) {
      socket.destroy(err ?? undefined);
      callback(err);
    },
  });

  const push = (b: Buffer): void => {
    if (b.length > 0 && !duplex.push(b)) socket.pause();
  };

  // Per-block scratch: rewrites found while decoding the current block.
  const found: HpackField[] = [];
  const collect = (field: HpackField): void => {
    if (!isAcceptableAuthority(field.value)) found.push(field);
  };

  const onData = (chunk: Buffer): void => {
    if (passthrough) return push(chunk);
    const buf = carry === null ? chunk : Buffer.concat([carry, chunk]);
    carry = null;
    let pos = 0;
    if (prefaceSeen < PREFACE.length) {
      const n = Math.min(PREFACE.length - prefaceSeen, buf.length);
      if (buf.compare(PREFACE, prefaceSeen, prefaceSeen + n, 0, n) !== 0) {
        passthrough = true;
        return push(buf);
      }
      prefaceSeen += n;
      pos = n;
    }
    let outStart = 0; // first byte of buf not yet forwarded
    let blockStart = -1; // first byte of an open header block's HEADERS frame
    let blockStream = 0;
    let blockFlags = 0;
    let priority: Buffer | null = null;
    const fragments: Buffer[] = [];
    const len = buf.length;
    for (;;) {
      if (passRemaining > 0) {
        const n = Math.min(passRemaining, len - pos);
        pos += n;
        passRemaining -= n;
        if (passRemaining > 0) break;
      }
      if (len - pos < FRAME_HEADER) break;
      const length = buf.readUIntBE(pos, 3);
      const type = buf[pos + 3]!;
      const flags = buf[pos + 4]!;
      const streamId = buf.readUInt32BE(pos + 5) & 0x7fffffff;
      const isHeaders = type === TYPE_HEADERS;
      if (isHeaders || type === TYPE_CONTINUATION) {
        const valid =
          length <= SERVER_MAX_FRAME_SIZE &&
          (isHeaders ? blockStart < 0 : blockStart >= 0 && streamId === blockStream);
        if (!valid) {
          passthrough = true;
          break;
        }
        if (len - pos < FRAME_HEADER + length) break;
        let fragStart = pos + FRAME_HEADER;
        let fragEnd = fragStart + length;
        if (isHeaders) {
          blockStart = pos;
          blockStream = streamId;
          blockFlags = flags;
          if (flags & FLAG_PADDED) {
            const pad = buf[fragStart]!;
            fragStart++;
            fragEnd -= pad;
          }
          if (flags & FLAG_PRIORITY) {
            priority = buf.subarray(fragStart, fragStart + 5);
            fragStart += 5;
          } else priority = null;
          if (fragEnd < fragStart || length === 0) {
            passthrough = true;
            break;
          }
        }
        fragments.push(buf.subarray(fragStart, fragEnd));
        pos += FRAME_HEADER + length;
        if ((flags & FLAG_END_HEADERS) === 0) continue;

        const block = fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments);
        fragments.length = 0;
        found.length = 0;
        try {
          decoder.decode(block, collect);
        } catch (err) {
          if (!(err instanceof HpackError)) throw err;
          passthrough = true;
          // Forward the block as it came (Node rejects it); nothing after it is rewritten.
          break;
        }
        if (found.length > 0) {
          if (found.some((f) => f.valueStart >= 0)) {
            push(buf.subarray(outStart, blockStart));
            for (const frame of rebuild(block, found, blockStream, blockFlags, priority)) push(frame);
            outStart = pos;
            rewrites++;
          }
          const authority = found.find((f) => f.name === ':authority');
          if (authority !== undefined) {
            originals.set(blockStream, authority.value);
            if (originals.size > MAX_REMEMBERED) originals.delete(originals.keys().next().value!);
          }
        }
        blockStart = -1;
        continue;
      }
      if (blockStart >= 0) {
        // Anything but CONTINUATION inside a header block is a connection error: let Node say so.
        passthrough = true;
        break;
      }
      const frameEnd = pos + FRAME_HEADER + length;
      if (frameEnd <= len) pos = frameEnd;
      else {
        passRemaining = frameEnd - len;
        pos = len;
      }
    }
    if (passthrough) {
      push(buf.subarray(outStart));
      return;
    }
    const held = blockStart >= 0 ? blockStart : pos;
    push(buf.subarray(outStart, held));
    if (held < len) {
      if (len - held > MAX_HELD_BYTES) {
        passthrough = true;
        push(buf.subarray(held));
        return;
      }
      carry = buf.subarray(held);
    }
  };

  socket.on('data', onData);
  socket.on('end', () => {
    if (carry !== null) push(carry);
    carry = null;
    duplex.push(null);
  });
  socket.on('error', (err) => duplex.destroy(err));
  socket.on('close', () => {
    if (!duplex.destroyed) duplex.destroy();
  });

  return {
    stream: duplex,
    takeAuthority(streamId) {
      const value = originals.get(streamId);
      if (value !== undefined) originals.delete(streamId);
      return value;
    },
    get rewrites() {
      return rewrites;
    },
    get passthrough() {
      return passthrough;
    },
  };
}

/**
 * Re-emits a header block with each offending value replaced by a same-length safe value, as one
 * HEADERS frame (without padding) followed by CONTINUATION frames if it outgrew the frame size.
 */
function rebuild(
  block: Buffer,
  found: readonly HpackField[],
  streamId: number,
  flags: number,
  priority: Buffer | null,
): Buffer[] {
  const parts: Buffer[] = [];
  let at = 0;
  for (const field of found) {
    if (field.valueStart < 0) continue; // indexed: Node's table already holds the safe value
    const safe = sanitize(field.value);
    parts.push(block.subarray(at, field.valueStart));
    parts.push(Buffer.from(encodeHpackInt(safe.length, 7, 0x00)), safe);
    at = field.end;
  }
  parts.push(block.subarray(at));
  const newBlock = Buffer.concat(parts);

  const frames: Buffer[] = [];
  const headFlags = (flags & ~(FLAG_PADDED | FLAG_END_HEADERS)) & 0xff;
  const firstRoom = SERVER_MAX_FRAME_SIZE - (priority === null ? 0 : 5);
  let offset = 0;
  let first = true;
  while (first || offset < newBlock.length) {
    const room = first ? firstRoom : SERVER_MAX_FRAME_SIZE;
    const take = Math.min(room, newBlock.length - offset);
    const last = offset + take >= newBlock.length;
    const extra = first && priority !== null ? 5 : 0;
    const frame = Buffer.allocUnsafe(FRAME_HEADER + extra + take);
    frame.writeUIntBE(extra + take, 0, 3);
    frame[3] = first ? TYPE_HEADERS : TYPE_CONTINUATION;
    frame[4] = (first ? headFlags : 0) | (last ? FLAG_END_HEADERS : 0);
    frame.writeUInt32BE(streamId, 5);
    if (extra > 0) priority!.copy(frame, FRAME_HEADER);
    newBlock.copy(frame, FRAME_HEADER + extra, offset, offset + take);
    frames.push(frame);
    offset += take;
    first = false;
  }
  return frames;
}
