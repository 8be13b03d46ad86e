// Test helper: an HTTP/2 client that writes frames and HPACK bytes itself, so the exact :authority
// bytes a real (older) grpc-go client sends reach the server unaltered by Node's client-side checks.
// Responses are decoded with the hpack.js package (an independent HPACK implementation).

import net from 'node:net';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const HUFFMAN = (require('hpack.js/lib/hpack/huffman.js') as { encode: [number, number][] }).encode;
interface Decompressor {
  write(b: Buffer): void;
  execute(): void;
  read(): { name: string; value: string } | null;
}
const hpack = require('hpack.js') as {
  decompressor: { create(o: { table: { size: number } }): Decompressor };
};

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

// --- HPACK encoding by hand ---

export function hpackInt(value: number, prefixBits: number, flags: number): Buffer {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) return Buffer.from([flags | value]);
  const out = [flags | mask];
  let rest = value - mask;
  while (rest >= 128) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

export function huffmanEncode(s: string): Buffer {
  const out: number[] = [];
  let acc = 0n;
  let bits = 0n;
  for (const byte of Buffer.from(s, 'latin1')) {
    const [len, code] = HUFFMAN[byte]!;
    acc = (acc << BigInt(len)) | BigInt(code);
    bits += BigInt(len);
    while (bits >= 8n) {
      bits -= 8n;
      out.push(Number((acc >> bits) & 0xffn));
    }
  }
  if (bits > 0n) out.push(Number(((acc << (8n - bits)) | ((1n << (8n - bits)) - 1n)) & 0xffn));
  return Buffer.from(out);
}

export function hpackString(s: string, huffman = false): Buffer {
  const raw = huffman ? huffmanEncode(s) : Buffer.from(s, 'latin1');
  return Buffer.concat([hpackInt(raw.length, 7, huffman ? 0x80 : 0), raw]);
}

export function hpackIndexed(index: number): Buffer {
  return hpackInt(index, 7, 0x80);
}

export type LiteralMode = 'incremental' | 'without' | 'never';

/** A literal field; `name` is a table index or a literal name. */
export function hpackLiteral(mode: LiteralMode, name: number | string, value: string, huffman = false): Buffer {
  const [prefix, flags] = mode === 'incremental' ? [6, 0x40] : mode === 'never' ? [4, 0x10] : [4, 0x00];
  const head = hpackInt(typeof name === 'number' ? name : 0, prefix, flags);
  const nameBytes = typeof name === 'number' ? Buffer.alloc(0) : hpackString(name, huffman);
  return Buffer.concat([head, nameBytes, hpackString(value, huffman)]);
}

export function hpackSizeUpdate(size: number): Buffer {
  return hpackInt(size, 5, 0x20);
}

/** A gRPC request header block with the authority encoded as given. Static indexes: RFC 7541 App. A. */
export function grpcRequestBlock(path: string, authority: Buffer, extra: Buffer[] = []): Buffer {
  return Buffer.concat([
    hpackIndexed(3), // :method POST
    hpackIndexed(6), // :scheme http
    hpackLiteral('without', 4, path), // :path
    authority,
    hpackLiteral('without', 31, 'application/grpc'), // content-type
    hpackLiteral('without', 'te', 'trailers'),
    ...extra,
  ]);
}

// --- frames ---

export const FRAME = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
}

export function grpcFrame(message: Uint8Array, flag = 0): Buffer {
  const p = Buffer.alloc(5);
  p[0] = flag;
  p.writeUInt32BE(message.length, 1);
  return Buffer.concat([p, message]);
}

export interface RawResponse {
  headers: Record<string, string>[];
  data: Buffer;
  rstCode?: number;
  /** The connection closed (or went away) before the stream ended. */
  connectionLost?: boolean;
}

export class RawH2Client {
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  private readonly decoder = hpack.decompressor.create({ table: { size: 4096 } });
  private readonly streams = new Map<number, RawResponse & { done?: (r: RawResponse) => void }>();
  private pendingBlock: { stream: number; parts: Buffer[]; endStream: boolean } | undefined;
  goaway: { lastStreamId: number; code: number } | undefined;
  closed = false;
  /** Answer SETTINGS and PING on its own (off for tests that write every byte themselves). */
  autoAck = true;
  private readonly pingAcks: (() => void)[] = [];
  private readonly watchers = new Set<() => void>();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      for (const s of this.streams.values()) {
        s.connectionLost = true;
        s.done?.(s);
      }
    });
  }

  /** preface=false: send nothing (and acknowledge nothing) on our own. */
  static connect(address: string, preface = true): Promise<RawH2Client> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(address);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.removeListener('error', reject);
        const c = new RawH2Client(socket);
        c.autoAck = preface;
        if (preface) socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0))]));
        resolve(c);
      });
    });
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Sends a unary request: HEADERS (block) then one DATA frame with END_STREAM. */
  request(streamId: number, block: Buffer, body: Buffer): Promise<RawResponse> {
    const done = this.expect(streamId);
    this.write(Buffer.concat([frame(FRAME.HEADERS, 0x4, streamId, block), frame(FRAME.DATA, 0x1, streamId, body)]));
    return done;
  }

  expect(streamId: number): Promise<RawResponse> {
    return new Promise((resolve) => {
      const s = { headers: [], data: Buffer.alloc(0), done: resolve };
      this.streams.set(streamId, s);
      if (this.closed) {
        (s as RawResponse).connectionLost = true;
        resolve(s);
      }
    });
  }

  close(): void {
    this.socket.destroy();
  }

  /**
   * Sends a PING and resolves at its ACK: whatever the server wrote before it read our PING has
   * arrived by then (a barrier, instead of waiting some time).
   */
  ping(): Promise<void> {
    return new Promise((resolve) => {
      this.pingAcks.push(resolve);
      this.write(frame(FRAME.PING, 0, 0, Buffer.alloc(8)));
    });
  }

  /** Resolves once `check()` holds; checked now and after every frame received. */
  until(check: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      if (check()) return resolve();
      const w = (): void => {
        if (!check()) return;
        this.watchers.delete(w);
        resolve();
      };
      this.watchers.add(w);
    });
  }

  /** The DATA bytes received so far on a stream registered with expect(). */
  received(streamId: number): number {
    return this.streams.get(streamId)?.data.length ?? 0;
  }

  private finish(id: number): void {
    const s = this.streams.get(id);
    if (s === undefined) return;
    this.streams.delete(id);
    s.done?.(s);
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const type = this.buf[3]!;
      const flags = this.buf[4]!;
      const id = this.buf.readUInt32BE(5) & 0x7fffffff;
      const payload = this.buf.subarray(9, 9 + len);
      this.buf = this.buf.subarray(9 + len);
      this.onFrame(type, flags, id, payload);
      for (const w of [...this.watchers]) w();
    }
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    const s = this.streams.get(id);
    switch (type) {
      case FRAME.SETTINGS:
        if ((flags & 1) === 0 && this.autoAck) this.write(frame(FRAME.SETTINGS, 1, 0, Buffer.alloc(0)));
        return;
      case FRAME.PING:
        if ((flags & 1) === 0 && this.autoAck) this.write(frame(FRAME.PING, 1, 0, payload));
        if ((flags & 1) !== 0) this.pingAcks.shift()?.();
        return;
      case FRAME.GOAWAY:
        this.goaway = { lastStreamId: payload.readUInt32BE(0) & 0x7fffffff, code: payload.readUInt32BE(4) };
        for (const [sid, st] of this.streams) {
          if (sid > this.goaway.lastStreamId || this.goaway.code !== 0) {
            st.connectionLost = true;
            this.finish(sid);
          }
        }
        return;
      case FRAME.RST_STREAM:
        if (s !== undefined) s.rstCode = payload.readUInt32BE(0);
        this.finish(id);
        return;
      case FRAME.DATA:
        if (s !== undefined) s.data = Buffer.concat([s.data, payload]);
        if (flags & 1) this.finish(id);
        return;
      case FRAME.HEADERS:
      case FRAME.CONTINUATION: {
        let frag = payload;
        if (type === FRAME.HEADERS) {
          if (flags & 0x8) frag = frag.subarray(1, frag.length - frag[0]!);
          if (flags & 0x20) frag = frag.subarray(5);
          this.pendingBlock = { stream: id, parts: [], endStream: (flags & 1) !== 0 };
        }
        this.pendingBlock!.parts.push(frag);
        if ((flags & 0x4) === 0) return;
        const block = Buffer.concat(this.pendingBlock!.parts);
        const endStream = this.pendingBlock!.endStream;
        this.pendingBlock = undefined;
        this.decoder.write(block);
        this.decoder.execute();
        const fields: Record<string, string> = {};
        for (let f = this.decoder.read(); f !== null; f = this.decoder.read()) fields[f.name] = f.value;
        if (s !== undefined) s.headers.push(fields);
        if (endStream) this.finish(id);
        return;
      }
      default:
        return;
    }
  }
}

/** The gRPC status of a raw response: from the trailers, or trailers-only headers. */
export function statusOf(r: RawResponse): number | undefined {
  const last = r.headers[r.headers.length - 1];
  const st = last?.['grpc-status'];
  return st === undefined ? undefined : Number(st);
}

/** The one message in a raw response body. */
export function messageOf(r: RawResponse): Buffer {
  return r.data.subarray(5, 5 + r.data.readUInt32BE(1));
}
