// A lean, unary-only gRPC server that speaks HTTP/2 (RFC 9113) itself on each accepted socket: no
// node:http2, no JS stream layer, no :authority normaliser (our own HPACK decoder accepts any value,
// e.g. the raw socket path older grpc-go clients send, kms-spec §8b). Same interface and semantics as
// the node:http2 transport in server.ts; handlers are plain async functions from bytes to bytes.
//
// Per connection: the 24-byte preface, then frames. Header blocks (HEADERS + CONTINUATION, PADDED and
// PRIORITY handled) go through one stateful HpackDecoder that keeps only the values we read. Request
// DATA is gathered up to maxMessageBytes and never beyond; both receive windows are credited back as
// data is consumed, and responses respect the peer's windows (queued per stream when they do not fit).
// A response is one write: HEADERS + DATA + trailers, encoded with constant static-table HPACK blocks.
// Connection errors answer GOAWAY and close that connection; stream errors answer RST_STREAM.

import type { Socket } from 'node:net';
import type { Logger } from '../logger.js';
import { silentLogger } from '../logger.js';
import { MESSAGE_PREFIX, parseGrpcTimeout } from './framing.js';
import { HpackDecoder, HpackError, encodeHpackInt, type HpackField } from './hpack.js';
import { GRPC_CODE, GrpcStatusError, encodeGrpcMessage, type GrpcCode } from './status.js';
import { CallAbort } from './call-abort.js';
import type { GrpcServer, GrpcServerOptions, UnaryCall, UnaryHandler } from './server.js';

// --- HTTP/2 wire constants (RFC 9113 §6, §7, §11) ---

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER = 9;

const TYPE_DATA = 0x0;
const TYPE_HEADERS = 0x1;
const TYPE_PRIORITY = 0x2;
const TYPE_RST_STREAM = 0x3;
const TYPE_SETTINGS = 0x4;
const TYPE_PUSH_PROMISE = 0x5;
const TYPE_PING = 0x6;
const TYPE_GOAWAY = 0x7;
const TYPE_WINDOW_UPDATE = 0x8;
const TYPE_CONTINUATION = 0x9;

const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;

const SETTINGS_HEADER_TABLE_SIZE = 0x1;
const SETTINGS_ENABLE_PUSH = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const SETTINGS_MAX_FRAME_SIZE = 0x5;
const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

const NO_ERROR = 0x0;
const PROTOCOL_ERROR = 0x1;
const INTERNAL_ERROR = 0x2;
const FLOW_CONTROL_ERROR = 0x3;
const STREAM_CLOSED = 0x5;
const FRAME_SIZE_ERROR = 0x6;
const REFUSED_STREAM = 0x7;
const COMPRESSION_ERROR = 0x9;
const ENHANCE_YOUR_CALM = 0xb;

const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 0x7fff_ffff;
const MIN_MAX_FRAME_SIZE = 16_384;
const MAX_MAX_FRAME_SIZE = 16_777_215;

// --- what this server announces and enforces ---

/** Our SETTINGS_HEADER_TABLE_SIZE (the default; not sent) bounds the client's HPACK table. */
const OUR_HEADER_TABLE_SIZE = 4096;
/** Our SETTINGS_MAX_FRAME_SIZE (the default; not sent): the largest frame we buffer. */
const OUR_MAX_FRAME_SIZE = 16_384;
export const LEAN_MAX_CONCURRENT_STREAMS = 1000;
/** Announced SETTINGS_MAX_HEADER_LIST_SIZE; the compressed block is capped at the same size. */
export const LEAN_MAX_HEADER_LIST_SIZE = 16_384;
/** The connection receive window we open at once (the stream windows stay at the 65,535 default). */
const OUR_CONNECTION_WINDOW = 1 << 20;
/** Stop reading from a client that does not read its responses once this much output is queued. */
const MAX_QUEUED_OUTPUT = 1 << 20;

const KEPT_NAMES: ReadonlySet<string> = new Set([
  ':method',
  ':path',
  ':authority',
  'host',
  'content-type',
  'grpc-timeout',
]);

const UNKNOWN_METHOD = 'unknown';
const MAX_TIMER_MS = 0x7fff_ffff;
const EMPTY = Buffer.alloc(0);

function writeFrameHeader(out: Buffer, at: number, length: number, type: number, flags: number, id: number): void {
  out[at] = length >>> 16;
  out[at + 1] = (length >>> 8) & 0xff;
  out[at + 2] = length & 0xff;
  out[at + 3] = type;
  out[at + 4] = flags;
  out.writeUInt32BE(id, at + 5);
}

function controlFrame(type: number, flags: number, id: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  writeFrameHeader(out, 0, payload.length, type, flags, id);
  payload.copy(out, FRAME_HEADER);
  return out;
}

function u32Frame(type: number, id: number, value: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 4);
  writeFrameHeader(out, 0, 4, type, 0, id);
  out.writeUInt32BE(value, FRAME_HEADER);
  return out;
}

// --- constant response header blocks (static table / literals without indexing, no Huffman) ---

function literal(name: string, value: string): Buffer {
  // Literal header field without indexing, new name (RFC 7541 §6.2.2).
  return Buffer.concat([
    Buffer.from([0x00]),
    Buffer.from(encodeHpackInt(name.length, 7, 0)),
    Buffer.from(name, 'latin1'),
    Buffer.from(encodeHpackInt(Buffer.byteLength(value, 'latin1'), 7, 0)),
    Buffer.from(value, 'latin1'),
  ]);
}

/** ':status: 200' (static index 8) and 'content-type: application/grpc' (name = static index 31). */
const RESPONSE_HEADERS_BLOCK = Buffer.concat([
  Buffer.from([0x88]),
  Buffer.from(encodeHpackInt(31, 4, 0x00)),
  Buffer.from(encodeHpackInt(16, 7, 0)),
  Buffer.from('application/grpc', 'latin1'),
]);
const OK_TRAILERS_BLOCK = literal('grpc-status', '0');
const STATUS_BLOCKS: readonly Buffer[] = Array.from({ length: 17 }, (_, code) => literal('grpc-status', String(code)));

/** The precomputed frames of an OK response around the DATA payload; patched with the stream id. */
const OK_HEAD_LENGTH = FRAME_HEADER + RESPONSE_HEADERS_BLOCK.length + FRAME_HEADER + MESSAGE_PREFIX;
const OK_TAIL_LENGTH = FRAME_HEADER + OK_TRAILERS_BLOCK.length;
const OK_HEAD = ((): Buffer => {
  const out = Buffer.alloc(OK_HEAD_LENGTH);
  writeFrameHeader(out, 0, RESPONSE_HEADERS_BLOCK.length, TYPE_HEADERS, FLAG_END_HEADERS, 0);
  RESPONSE_HEADERS_BLOCK.copy(out, FRAME_HEADER);
  return out;
})();
const OK_TAIL = ((): Buffer => {
  const out = Buffer.alloc(OK_TAIL_LENGTH);
  writeFrameHeader(out, 0, OK_TRAILERS_BLOCK.length, TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 0);
  OK_TRAILERS_BLOCK.copy(out, FRAME_HEADER);
  return out;
})();

/** The trailers-only header block of a non-OK status. */
function errorBlock(code: GrpcCode, message: string): Buffer {
  const text = encodeGrpcMessage(message);
  return Buffer.concat([RESPONSE_HEADERS_BLOCK, STATUS_BLOCKS[code]!, literal('grpc-message', text)]);
}

/** Lenient percent-decoding of an authority; a malformed escape leaves the value as it came. */
function decodeAuthority(value: string): string {
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

class ConnectionError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

// --- one stream = one call ---

class Stream extends CallAbort implements UnaryCall {
  readonly id: number;
  readonly conn: Connection;
  method = '';
  label = UNKNOWN_METHOD;
  message: Buffer = EMPTY;
  authority = '';
  deadline: number | undefined = undefined;
  handler: UnaryHandler | undefined = undefined;
  started = 0;
  timer: NodeJS.Timeout | undefined = undefined;

  /** The call is settled and recorded (exactly once). */
  finished = false;
  /** The client sent END_STREAM. */
  remoteEnded = false;
  /** We sent END_STREAM or RST_STREAM, or the client reset it: nothing more goes out. */
  localEnded = false;
  /** Response HEADERS are on the wire (a flow-controlled response is still being sent). */
  headersSent = false;
  /** Still counted in the connection's streams. */
  open = true;

  // request body
  expected = -1;
  prefix: Buffer | undefined = undefined;
  parts: Buffer[] | undefined = undefined;
  have = 0;
  complete = false;

  recvWindow = DEFAULT_WINDOW;
  sendWindow: number;
  /** Response bytes (the framed message) waiting for send window, then the trailers. */
  pending: Buffer | undefined = undefined;

  constructor(id: number, conn: Connection, sendWindow: number) {
    super();
    this.id = id;
    this.conn = conn;
    this.sendWindow = sendWindow;
  }
}

function onDeadline(stream: Stream): void {
  stream.timer = undefined;
  stream.conn.finish(stream, GRPC_CODE.DEADLINE_EXCEEDED, 'deadline exceeded');
}

function uncork(conn: Connection): void {
  conn.corked = false;
  conn.socket.uncork();
}

interface Shared {
  readonly handlers: ReadonlyMap<string, UnaryHandler>;
  readonly maxMessageBytes: number;
  readonly onCall: GrpcServerOptions['onCall'];
  readonly logger: Logger;
  readonly connections: Set<Connection>;
}

const SERVER_SETTINGS = ((): Buffer => {
  const settings = Buffer.alloc(12);
  settings.writeUInt16BE(SETTINGS_MAX_CONCURRENT_STREAMS, 0);
  settings.writeUInt32BE(LEAN_MAX_CONCURRENT_STREAMS, 2);
  settings.writeUInt16BE(SETTINGS_MAX_HEADER_LIST_SIZE, 6);
  settings.writeUInt32BE(LEAN_MAX_HEADER_LIST_SIZE, 8);
  return Buffer.concat([
    controlFrame(TYPE_SETTINGS, 0, 0, settings),
    u32Frame(TYPE_WINDOW_UPDATE, 0, OUR_CONNECTION_WINDOW - DEFAULT_WINDOW),
  ]);
})();
const SETTINGS_ACK = controlFrame(TYPE_SETTINGS, FLAG_ACK, 0, EMPTY);

class Connection {
  readonly socket: Socket;
  readonly shared: Shared;
  readonly decoder = new HpackDecoder(OUR_HEADER_TABLE_SIZE, KEPT_NAMES);
  readonly streams = new Map<number, Stream>();
  readonly closed: Promise<void>;
  corked = false;
  destroyed = false;

  private carry: Buffer | null = null;
  private prefaceDone = false;
  private settingsSeen = false;
  private lastStreamId = 0;
  /** GOAWAY sent (close) or received: no new streams; the socket ends once the streams drain. */
  private draining = false;
  private paused = false;

  // peer settings
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrameSize = MIN_MAX_FRAME_SIZE;
  private connSendWindow = DEFAULT_WINDOW;
  private connRecvWindow = OUR_CONNECTION_WINDOW;
  /** Streams whose response waits for send window, in arrival order. */
  private readonly blocked = new Set<Stream>();

  // header block being assembled
  private blockStream = 0;
  private blockFlags = 0;
  private blockParts: Buffer[] = [];
  private blockSize = 0;

  // fields of the header block being decoded
  private fMethod: string | undefined;
  private fPath: string | undefined;
  private fAuthority: string | undefined;
  private fHost: string | undefined;
  private fContentType: string | undefined;
  private fTimeout: string | undefined;
  private readonly onField = (field: HpackField): void => {
    switch (field.name) {
      case ':method':
        this.fMethod = field.value;
        return;
      case ':path':
        this.fPath = field.value;
        return;
      case ':authority':
        this.fAuthority = field.value;
        return;
      case 'host':
        this.fHost = field.value;
        return;
      case 'content-type':
        this.fContentType = field.value;
        return;
      case 'grpc-timeout':
        this.fTimeout = field.value;
        return;
    }
  };

  constructor(socket: Socket, shared: Shared) {
    this.socket = socket;
    this.shared = shared;
    this.closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', (err) => shared.logger.debug('grpc connection error', { error: err.message }));
    socket.on('close', () => this.onClose());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.send(SERVER_SETTINGS);
  }

  // --- output ---

  send(bytes: Buffer): void {
    if (this.destroyed || this.socket.writableEnded) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(uncork, this);
    }
    this.socket.write(bytes);
    if (!this.paused && this.socket.writableLength > MAX_QUEUED_OUTPUT) {
      this.paused = true;
      this.socket.pause();
      this.socket.once('drain', () => {
        this.paused = false;
        if (!this.destroyed) this.socket.resume();
      });
    }
  }

  private reset(stream: Stream, code: number): void {
    if (!stream.localEnded) {
      stream.localEnded = true;
      this.send(u32Frame(TYPE_RST_STREAM, stream.id, code));
    }
    this.release(stream);
  }

  /** The stream no longer counts; drop its queued output. */
  private release(stream: Stream): void {
    if (!stream.open) return;
    stream.open = false;
    stream.pending = undefined;
    stream.parts = undefined;
    this.blocked.delete(stream);
    this.streams.delete(stream.id);
    if (this.draining && this.streams.size === 0) this.end();
  }

  /** Graceful: GOAWAY NO_ERROR with the last stream we accept; the socket ends once streams drain. */
  goAway(): void {
    if (this.destroyed) return;
    if (!this.draining) {
      this.draining = true;
      const payload = Buffer.alloc(8);
      payload.writeUInt32BE(this.lastStreamId, 0);
      payload.writeUInt32BE(NO_ERROR, 4);
      this.send(controlFrame(TYPE_GOAWAY, 0, 0, payload));
    }
    if (this.streams.size === 0) this.end();
  }

  private end(): void {
    if (this.destroyed || this.socket.writableEnded) return;
    this.socket.end(() => this.destroy());
  }

  /** A connection error: GOAWAY with the code, then close. In-flight calls are cancelled. */
  private fail(code: number, message: string): void {
    if (this.destroyed) return;
    this.shared.logger.debug('grpc connection error', { error: message, code });
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(this.lastStreamId, 0);
    payload.writeUInt32BE(code, 4);
    this.send(controlFrame(TYPE_GOAWAY, 0, 0, payload));
    this.draining = true;
    this.destroy();
  }

  destroy(): void {
    if (this.destroyed) return;
    if (this.corked) {
      this.corked = false;
      this.socket.uncork();
    }
    this.destroyed = true;
    // end() may still be flushing a GOAWAY: let it go out, then close.
    if (!this.socket.writableEnded) this.socket.end();
    setTimeout(() => this.socket.destroy(), 100).unref();
    this.cancelAll('the connection closed before the call completed');
  }

  /** Immediate: the grace period ran out. */
  kill(): void {
    this.destroyed = true;
    this.socket.destroy();
    this.cancelAll('the server shut down before the call completed');
  }

  private onClose(): void {
    this.destroyed = true;
    this.shared.connections.delete(this);
    this.cancelAll('the connection closed before the call completed');
  }

  private cancelAll(message: string): void {
    for (const stream of [...this.streams.values()]) {
      stream.localEnded = true;
      this.finish(stream, GRPC_CODE.CANCELLED, message);
      this.release(stream);
    }
  }

  // --- input ---

  private onData(chunk: Buffer): void {
    if (this.destroyed) return;
    let buf = chunk;
    if (this.carry !== null) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = null;
    }
    let pos = 0;
    try {
      if (!this.prefaceDone) {
        const n = Math.min(PREFACE.length, buf.length);
        if (buf.compare(PREFACE, 0, n, 0, n) !== 0) {
          this.shared.logger.debug('grpc connection without the HTTP/2 preface');
          this.destroyed = true;
          this.socket.destroy();
          return;
        }
        if (buf.length < PREFACE.length) {
          this.carry = buf;
          return;
        }
        this.prefaceDone = true;
        pos = PREFACE.length;
      }
      const len = buf.length;
      while (len - pos >= FRAME_HEADER) {
        const length = (buf[pos]! << 16) | (buf[pos + 1]! << 8) | buf[pos + 2]!;
        if (length > OUR_MAX_FRAME_SIZE) throw new ConnectionError(FRAME_SIZE_ERROR, `frame of ${length} bytes`);
        const end = pos + FRAME_HEADER + length;
        if (end > len) break;
        const type = buf[pos + 3]!;
        const flags = buf[pos + 4]!;
        const id = buf.readUInt32BE(pos + 5) & 0x7fff_ffff;
        this.onFrame(type, flags, id, buf.subarray(pos + FRAME_HEADER, end));
        pos = end;
        if (this.destroyed) return;
      }
    } catch (err) {
      if (err instanceof ConnectionError) return this.fail(err.code, err.message);
      if (err instanceof HpackError) return this.fail(COMPRESSION_ERROR, err.message);
      this.shared.logger.error('grpc connection failed', { error: (err as Error).message });
      return this.fail(INTERNAL_ERROR, 'internal error');
    }
    if (pos < buf.length) this.carry = pos === 0 ? buf : Buffer.from(buf.subarray(pos));
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.blockStream !== 0 && type !== TYPE_CONTINUATION) {
      throw new ConnectionError(PROTOCOL_ERROR, 'expected CONTINUATION');
    }
    if (!this.settingsSeen) {
      if (type !== TYPE_SETTINGS || (flags & FLAG_ACK) !== 0) {
        throw new ConnectionError(PROTOCOL_ERROR, 'the first frame must be SETTINGS');
      }
      this.settingsSeen = true;
    }
    switch (type) {
      case TYPE_DATA:
        return this.onDataFrame(flags, id, payload);
      case TYPE_HEADERS:
        return this.onHeaders(flags, id, payload);
      case TYPE_CONTINUATION:
        return this.onContinuation(flags, id, payload);
      case TYPE_SETTINGS:
        return this.onSettings(flags, id, payload);
      case TYPE_PING:
        if (id !== 0) throw new ConnectionError(PROTOCOL_ERROR, 'PING on a stream');
        if (payload.length !== 8) throw new ConnectionError(FRAME_SIZE_ERROR, 'PING of the wrong size');
        if ((flags & FLAG_ACK) === 0) this.send(controlFrame(TYPE_PING, FLAG_ACK, 0, payload));
        return;
      case TYPE_WINDOW_UPDATE:
        return this.onWindowUpdate(id, payload);
      case TYPE_RST_STREAM: {
        if (id === 0) throw new ConnectionError(PROTOCOL_ERROR, 'RST_STREAM on stream 0');
        if (payload.length !== 4) throw new ConnectionError(FRAME_SIZE_ERROR, 'RST_STREAM of the wrong size');
        if (id > this.lastStreamId) throw new ConnectionError(PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
        const stream = this.streams.get(id);
        if (stream !== undefined) {
          stream.localEnded = true;
          this.finish(stream, GRPC_CODE.CANCELLED, 'the client cancelled the call');
          this.release(stream);
        }
        return;
      }
      case TYPE_GOAWAY:
        if (id !== 0) throw new ConnectionError(PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (payload.length < 8) throw new ConnectionError(FRAME_SIZE_ERROR, 'GOAWAY too short');
        // The client opens no more streams; answer the ones it has, then close.
        this.goAway();
        return;
      case TYPE_PRIORITY:
        if (id === 0) throw new ConnectionError(PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (payload.length !== 5) {
          const stream = this.streams.get(id);
          if (stream !== undefined) {
            this.finish(stream, GRPC_CODE.INTERNAL, 'malformed PRIORITY frame');
            this.reset(stream, FRAME_SIZE_ERROR);
          } else this.send(u32Frame(TYPE_RST_STREAM, id, FRAME_SIZE_ERROR));
        }
        return;
      case TYPE_PUSH_PROMISE:
        throw new ConnectionError(PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      default:
        return; // unknown frame types are ignored
    }
  }

  private onSettings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(PROTOCOL_ERROR, 'SETTINGS on a stream');
    if ((flags & FLAG_ACK) !== 0) {
      if (payload.length !== 0) throw new ConnectionError(FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      return;
    }
    if (payload.length % 6 !== 0) throw new ConnectionError(FRAME_SIZE_ERROR, 'SETTINGS of the wrong size');
    for (let i = 0; i < payload.length; i += 6) {
      const key = payload.readUInt16BE(i);
      const value = payload.readUInt32BE(i + 2);
      switch (key) {
        case SETTINGS_HEADER_TABLE_SIZE:
          break; // our encoder never uses the dynamic table
        case SETTINGS_ENABLE_PUSH:
          if (value > 1) throw new ConnectionError(PROTOCOL_ERROR, 'invalid ENABLE_PUSH');
          break;
        case SETTINGS_INITIAL_WINDOW_SIZE: {
          if (value > MAX_WINDOW) throw new ConnectionError(FLOW_CONTROL_ERROR, 'INITIAL_WINDOW_SIZE too large');
          const delta = value - this.peerInitialWindow;
          this.peerInitialWindow = value;
          for (const stream of this.streams.values()) {
            stream.sendWindow += delta;
            if (stream.sendWindow > MAX_WINDOW) throw new ConnectionError(FLOW_CONTROL_ERROR, 'stream window overflow');
          }
          break;
        }
        case SETTINGS_MAX_FRAME_SIZE:
          if (value < MIN_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE) {
            throw new ConnectionError(PROTOCOL_ERROR, 'invalid MAX_FRAME_SIZE');
          }
          this.peerMaxFrameSize = value;
          break;
        default:
          break; // MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE, unknown: nothing to do for a server
      }
    }
    this.send(SETTINGS_ACK);
    this.flushBlocked();
  }

  private onWindowUpdate(id: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(FRAME_SIZE_ERROR, 'WINDOW_UPDATE of the wrong size');
    const increment = payload.readUInt32BE(0) & 0x7fff_ffff;
    if (id === 0) {
      if (increment === 0) throw new ConnectionError(PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.connSendWindow += increment;
      if (this.connSendWindow > MAX_WINDOW) throw new ConnectionError(FLOW_CONTROL_ERROR, 'connection window overflow');
      this.flushBlocked();
      return;
    }
    const stream = this.streams.get(id);
    if (stream === undefined) {
      if (id > this.lastStreamId) throw new ConnectionError(PROTOCOL_ERROR, 'WINDOW_UPDATE on an idle stream');
      return;
    }
    if (increment === 0) {
      this.finish(stream, GRPC_CODE.INTERNAL, 'WINDOW_UPDATE of 0');
      return this.reset(stream, PROTOCOL_ERROR);
    }
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) {
      this.finish(stream, GRPC_CODE.INTERNAL, 'stream window overflow');
      return this.reset(stream, FLOW_CONTROL_ERROR);
    }
    if (stream.pending !== undefined) this.flushBlocked();
  }

  private onHeaders(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(PROTOCOL_ERROR, 'HEADERS on stream 0');
    let start = 0;
    let end = payload.length;
    if ((flags & FLAG_PADDED) !== 0) {
      if (end < 1) throw new ConnectionError(FRAME_SIZE_ERROR, 'PADDED HEADERS without a pad length');
      const pad = payload[0]!;
      start = 1;
      if (pad > end - start) throw new ConnectionError(PROTOCOL_ERROR, 'padding longer than the frame');
      end -= pad;
    }
    if ((flags & FLAG_PRIORITY) !== 0) {
      if (end - start < 5) throw new ConnectionError(FRAME_SIZE_ERROR, 'HEADERS too short for PRIORITY');
      if ((payload.readUInt32BE(start) & 0x7fff_ffff) === id) {
        throw new ConnectionError(PROTOCOL_ERROR, 'a stream depends on itself');
      }
      start += 5;
    }
    const fragment = payload.subarray(start, end);
    if ((flags & FLAG_END_HEADERS) !== 0) return this.onHeaderBlock(id, flags, fragment);
    this.blockStream = id;
    this.blockFlags = flags;
    this.blockParts = [Buffer.from(fragment)];
    this.blockSize = fragment.length;
  }

  private onContinuation(flags: number, id: number, payload: Buffer): void {
    if (this.blockStream === 0 || id !== this.blockStream) {
      throw new ConnectionError(PROTOCOL_ERROR, 'unexpected CONTINUATION');
    }
    this.blockSize += payload.length;
    if (this.blockSize > LEAN_MAX_HEADER_LIST_SIZE) {
      throw new ConnectionError(ENHANCE_YOUR_CALM, 'header block too large');
    }
    this.blockParts.push(Buffer.from(payload));
    if ((flags & FLAG_END_HEADERS) === 0) return;
    const block = Buffer.concat(this.blockParts, this.blockSize);
    const streamFlags = this.blockFlags;
    this.blockStream = 0;
    this.blockParts = [];
    this.blockSize = 0;
    this.onHeaderBlock(id, streamFlags, block);
  }

  private onHeaderBlock(id: number, flags: number, block: Buffer): void {
    if (block.length > LEAN_MAX_HEADER_LIST_SIZE) throw new ConnectionError(ENHANCE_YOUR_CALM, 'header block too large');
    this.fMethod = this.fPath = this.fAuthority = this.fHost = this.fContentType = this.fTimeout = undefined;
    // Always decoded, even for a stream we refuse: the HPACK table must stay in step with the client.
    this.decoder.decode(block, this.onField);
    const endStream = (flags & FLAG_END_STREAM) !== 0;

    const existing = this.streams.get(id);
    if (existing !== undefined || id <= this.lastStreamId) {
      // Trailers from the client (unary clients send none, but they are legal): they end the stream.
      if (existing === undefined) {
        if (endStream) return; // a stream we already answered or reset
        throw new ConnectionError(STREAM_CLOSED, 'HEADERS on a closed stream');
      }
      if (existing.remoteEnded) throw new ConnectionError(STREAM_CLOSED, 'HEADERS after END_STREAM');
      if (!endStream) {
        this.finish(existing, GRPC_CODE.INTERNAL, 'trailers without END_STREAM');
        return this.reset(existing, PROTOCOL_ERROR);
      }
      return this.onEnd(existing);
    }
    if ((id & 1) === 0) throw new ConnectionError(PROTOCOL_ERROR, 'a client stream with an even id');
    this.lastStreamId = id;
    if (this.draining) {
      this.send(u32Frame(TYPE_RST_STREAM, id, REFUSED_STREAM));
      return;
    }
    if (this.streams.size >= LEAN_MAX_CONCURRENT_STREAMS) {
      this.send(u32Frame(TYPE_RST_STREAM, id, REFUSED_STREAM));
      return;
    }
    if (this.fMethod === undefined || this.fPath === undefined) {
      this.send(u32Frame(TYPE_RST_STREAM, id, PROTOCOL_ERROR));
      return;
    }
    this.openStream(id, endStream);
  }

  private openStream(id: number, endStream: boolean): void {
    const { handlers } = this.shared;
    const stream = new Stream(id, this, this.peerInitialWindow);
    stream.started = performance.now();
    stream.remoteEnded = endStream;
    this.streams.set(id, stream);
    const path = this.fPath!;
    const handler = handlers.get(path);
    stream.method = path;
    stream.handler = handler;
    if (handler !== undefined) stream.label = path;
    const contentType = this.fContentType;

    if (this.fMethod !== 'POST') {
      return this.finish(stream, GRPC_CODE.UNIMPLEMENTED, `gRPC requires POST, got ${this.fMethod!.slice(0, 16)}`);
    }
    if (contentType === undefined || !contentType.startsWith('application/grpc')) {
      return this.finish(stream, GRPC_CODE.INVALID_ARGUMENT, 'content-type must be application/grpc');
    }
    if (handler === undefined) {
      return this.finish(stream, GRPC_CODE.UNIMPLEMENTED, `unknown method ${path.slice(0, 200)}`);
    }
    if (this.fTimeout !== undefined) {
      const ms = parseGrpcTimeout(this.fTimeout);
      if (ms === undefined) return this.finish(stream, GRPC_CODE.INVALID_ARGUMENT, 'malformed grpc-timeout');
      stream.deadline = Date.now() + ms;
      // Beyond setTimeout's range (~24.8 days) Node would fire at once; such a deadline never matters.
      if (ms <= MAX_TIMER_MS) stream.timer = setTimeout(onDeadline, ms, stream);
    }
    stream.authority = decodeAuthority(this.fAuthority ?? this.fHost ?? '');
    if (endStream) this.onEnd(stream);
  }

  private onDataFrame(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(PROTOCOL_ERROR, 'DATA on stream 0');
    const flowLength = payload.length;
    // Connection flow control counts every DATA byte, including padding and frames for dead streams.
    this.connRecvWindow -= flowLength;
    if (this.connRecvWindow < 0) throw new ConnectionError(FLOW_CONTROL_ERROR, 'connection window exceeded');
    if (this.connRecvWindow <= OUR_CONNECTION_WINDOW / 2) {
      this.send(u32Frame(TYPE_WINDOW_UPDATE, 0, OUR_CONNECTION_WINDOW - this.connRecvWindow));
      this.connRecvWindow = OUR_CONNECTION_WINDOW;
    }
    let start = 0;
    let end = flowLength;
    if ((flags & FLAG_PADDED) !== 0) {
      if (end < 1) throw new ConnectionError(FRAME_SIZE_ERROR, 'PADDED DATA without a pad length');
      const pad = payload[0]!;
      start = 1;
      if (pad > end - start) throw new ConnectionError(PROTOCOL_ERROR, 'padding longer than the frame');
      end -= pad;
    }
    const stream = this.streams.get(id);
    if (stream === undefined) {
      if (id > this.lastStreamId) throw new ConnectionError(PROTOCOL_ERROR, 'DATA on an idle stream');
      return; // a stream we already answered or reset
    }
    if (stream.remoteEnded) {
      this.finish(stream, GRPC_CODE.INTERNAL, 'DATA after END_STREAM');
      return this.reset(stream, STREAM_CLOSED);
    }
    stream.recvWindow -= flowLength;
    if (stream.recvWindow < 0) {
      this.finish(stream, GRPC_CODE.INTERNAL, 'stream flow-control window exceeded');
      return this.reset(stream, FLOW_CONTROL_ERROR);
    }
    if (!stream.finished) {
      if (end > start) this.onBody(stream, payload, start, end);
      if (!stream.finished && !stream.complete && stream.recvWindow <= DEFAULT_WINDOW / 2) {
        this.send(u32Frame(TYPE_WINDOW_UPDATE, id, DEFAULT_WINDOW - stream.recvWindow));
        stream.recvWindow = DEFAULT_WINDOW;
      }
    }
    if ((flags & FLAG_END_STREAM) !== 0) this.onEnd(stream);
  }

  /** Request body: exactly one message, never more than the declared (and capped) length. */
  private onBody(stream: Stream, chunk: Buffer, off: number, end: number): void {
    if (stream.complete) {
      return this.finish(stream, GRPC_CODE.UNIMPLEMENTED, 'unary method received more than one request message');
    }
    if (stream.expected < 0) {
      let head = chunk;
      if (stream.prefix !== undefined || end - off < MESSAGE_PREFIX) {
        const part = chunk.subarray(off, end);
        stream.prefix = stream.prefix === undefined ? Buffer.from(part) : Buffer.concat([stream.prefix, part]);
        if (stream.prefix.length < MESSAGE_PREFIX) return;
        head = stream.prefix;
        chunk = stream.prefix;
        off = 0;
        end = head.length;
        stream.prefix = undefined;
      }
      const flag = head[off]!;
      if (flag !== 0) {
        return this.finish(
          stream,
          flag === 1 ? GRPC_CODE.UNIMPLEMENTED : GRPC_CODE.INTERNAL,
          flag === 1 ? 'compressed messages are not supported (use identity encoding)' : `invalid message flag ${flag}`,
        );
      }
      stream.expected = head.readUInt32BE(off + 1);
      if (stream.expected > this.shared.maxMessageBytes) {
        return this.finish(
          stream,
          GRPC_CODE.RESOURCE_EXHAUSTED,
          `request message is ${stream.expected} bytes, larger than the limit of ${this.shared.maxMessageBytes}`,
        );
      }
      off += MESSAGE_PREFIX;
    }
    const take = Math.min(stream.expected - stream.have, end - off);
    if (take > 0) {
      const part = chunk.subarray(off, off + take);
      if (stream.parts === undefined) {
        // The common case: the whole message in one frame, kept as a view of the socket chunk.
        if (take === stream.expected) stream.message = part;
        else stream.parts = [Buffer.from(part)];
      } else stream.parts.push(Buffer.from(part));
    }
    stream.have += take;
    if (stream.have === stream.expected) stream.complete = true;
    if (off + take < end) {
      return this.finish(stream, GRPC_CODE.UNIMPLEMENTED, 'unary method received more than one request message');
    }
  }

  private onEnd(stream: Stream): void {
    stream.remoteEnded = true;
    if (stream.finished) {
      if (stream.localEnded) this.release(stream);
      return;
    }
    if (!stream.complete) {
      const why = stream.expected < 0 && stream.prefix === undefined ? 'no request message' : 'truncated request message';
      return this.finish(stream, GRPC_CODE.INTERNAL, why);
    }
    if (stream.parts !== undefined) {
      stream.message = stream.parts.length === 1 ? stream.parts[0]! : Buffer.concat(stream.parts, stream.have);
      stream.parts = undefined;
    }
    this.invoke(stream);
  }

  private invoke(stream: Stream): void {
    let result: Promise<Uint8Array>;
    try {
      result = stream.handler!(stream);
    } catch (err) {
      return this.failed(stream, err);
    }
    result.then(
      (response) => this.succeeded(stream, response),
      (err: unknown) => this.failed(stream, err),
    );
  }

  private succeeded(stream: Stream, response: Uint8Array): void {
    if (stream.finished) return;
    if (!(response instanceof Uint8Array)) {
      return this.failed(stream, new TypeError('the handler did not return bytes'));
    }
    if (stream.localEnded || this.destroyed) {
      return this.finish(stream, GRPC_CODE.CANCELLED, 'stream closed');
    }
    stream.finished = true;
    if (stream.timer !== undefined) clearTimeout(stream.timer);
    const size = MESSAGE_PREFIX + response.length;
    if (size <= this.peerMaxFrameSize && size <= stream.sendWindow && size <= this.connSendWindow) {
      // The hot path: HEADERS + DATA + trailers in one buffer, one write.
      const out = Buffer.allocUnsafe(OK_HEAD_LENGTH + response.length + OK_TAIL_LENGTH);
      OK_HEAD.copy(out, 0);
      out.writeUInt32BE(stream.id, 5);
      const data = OK_HEAD_LENGTH - FRAME_HEADER - MESSAGE_PREFIX;
      writeFrameHeader(out, data, size, TYPE_DATA, 0, stream.id);
      out[data + FRAME_HEADER] = 0;
      out.writeUInt32BE(response.length, data + FRAME_HEADER + 1);
      out.set(response, OK_HEAD_LENGTH);
      const tail = OK_HEAD_LENGTH + response.length;
      OK_TAIL.copy(out, tail);
      out.writeUInt32BE(stream.id, tail + 5);
      stream.sendWindow -= size;
      this.connSendWindow -= size;
      stream.localEnded = true;
      this.send(out);
      this.release(stream);
    } else {
      const head = Buffer.allocUnsafe(FRAME_HEADER + RESPONSE_HEADERS_BLOCK.length);
      writeFrameHeader(head, 0, RESPONSE_HEADERS_BLOCK.length, TYPE_HEADERS, FLAG_END_HEADERS, stream.id);
      RESPONSE_HEADERS_BLOCK.copy(head, FRAME_HEADER);
      this.send(head);
      stream.headersSent = true;
      const body = Buffer.allocUnsafe(size);
      body[0] = 0;
      body.writeUInt32BE(response.length, 1);
      body.set(response, MESSAGE_PREFIX);
      stream.pending = body;
      this.blocked.add(stream);
      this.flushBlocked();
    }
    this.record(stream, GRPC_CODE.OK);
  }

  /** Sends as much queued response data as the windows allow; trailers once a body is complete. */
  private flushBlocked(): void {
    for (const stream of this.blocked) {
      if (this.connSendWindow <= 0) return;
      let body = stream.pending!;
      while (body.length > 0 && stream.sendWindow > 0 && this.connSendWindow > 0) {
        const n = Math.min(body.length, stream.sendWindow, this.connSendWindow, this.peerMaxFrameSize);
        const out = Buffer.allocUnsafe(FRAME_HEADER + n);
        writeFrameHeader(out, 0, n, TYPE_DATA, 0, stream.id);
        body.copy(out, FRAME_HEADER, 0, n);
        this.send(out);
        body = body.subarray(n);
        stream.sendWindow -= n;
        this.connSendWindow -= n;
      }
      stream.pending = body;
      if (body.length === 0) {
        const tail = Buffer.from(OK_TAIL);
        tail.writeUInt32BE(stream.id, 5);
        stream.localEnded = true;
        this.send(tail);
        this.release(stream);
      }
    }
  }

  private failed(stream: Stream, err: unknown): void {
    if (err instanceof GrpcStatusError && err.code !== GRPC_CODE.OK) {
      return this.finish(stream, err.code, err.message);
    }
    this.shared.logger.error('grpc handler failed', {
      method: stream.label,
      error: err instanceof Error ? `${err.name}: ${err.message}` : typeof err,
      code: (err as { code?: unknown } | null)?.code as string | undefined,
    });
    this.finish(stream, GRPC_CODE.UNKNOWN, 'internal error');
  }

  /** Settles a call with a non-OK status (or cancels it): answers it if still possible, records it. */
  finish(stream: Stream, code: GrpcCode, message: string): void {
    if (stream.finished) return;
    stream.finished = true;
    if (stream.timer !== undefined) clearTimeout(stream.timer);
    stream.parts = undefined;
    stream.prefix = undefined;
    if (code !== GRPC_CODE.OK) {
      stream.abort(new GrpcStatusError(code, message));
      if (!stream.localEnded && !this.destroyed) {
        if (stream.headersSent) {
          this.reset(stream, INTERNAL_ERROR);
        } else {
          this.sendHeaderBlock(stream.id, errorBlock(code, message), FLAG_END_STREAM);
          stream.localEnded = true;
          // The client may still be sending: reset its half so nothing more is read.
          if (!stream.remoteEnded) this.send(u32Frame(TYPE_RST_STREAM, stream.id, NO_ERROR));
          this.release(stream);
        }
      }
    }
    this.record(stream, code);
  }

  private sendHeaderBlock(id: number, block: Buffer, flags: number): void {
    const max = this.peerMaxFrameSize;
    if (block.length <= max) {
      const out = Buffer.allocUnsafe(FRAME_HEADER + block.length);
      writeFrameHeader(out, 0, block.length, TYPE_HEADERS, flags | FLAG_END_HEADERS, id);
      block.copy(out, FRAME_HEADER);
      this.send(out);
      return;
    }
    for (let off = 0; off < block.length; off += max) {
      const part = block.subarray(off, Math.min(block.length, off + max));
      const last = off + max >= block.length;
      const type = off === 0 ? TYPE_HEADERS : TYPE_CONTINUATION;
      const f = (off === 0 ? flags : 0) | (last ? FLAG_END_HEADERS : 0);
      this.send(controlFrame(type, f, id, part));
    }
  }

  private record(stream: Stream, code: GrpcCode): void {
    const { onCall } = this.shared;
    if (onCall !== undefined) {
      onCall({ method: stream.label, code, durationSeconds: (performance.now() - stream.started) / 1000 });
    }
  }
}

export function createLeanGrpcServer(options: GrpcServerOptions): GrpcServer {
  const connections = new Set<Connection>();
  const shared: Shared = {
    handlers: options.handlers,
    maxMessageBytes: options.maxMessageBytes,
    onCall: options.onCall,
    logger: options.logger ?? silentLogger,
    connections,
  };
  let closing = false;

  return {
    handleConnection(socket) {
      if (closing) {
        socket.on('error', () => {});
        socket.destroy();
        return;
      }
      connections.add(new Connection(socket, shared));
    },

    async close(graceMs) {
      closing = true;
      if (connections.size === 0) return;
      const all = [...connections];
      const allClosed = Promise.all(all.map((c) => c.closed));
      for (const c of all) c.goAway();
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
      });
      await Promise.race([allClosed, expired]);
      clearTimeout(timer);
      for (const c of all) c.kill();
      await allClosed;
    },
  };
}
