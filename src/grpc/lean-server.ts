// A lean, unary-only gRPC server that speaks HTTP/2 (RFC 9113) itself on each accepted socket: no
// node:http2, no JS stream layer, no :authority normaliser (our own HPACK decoder accepts any value,
// e.g. the raw socket path older grpc-go clients send). Handlers are plain async
// functions from bytes to bytes.
//
// Per connection: the 24-byte preface, then frames. Header blocks (HEADERS + CONTINUATION, PADDED and
// PRIORITY handled) go through one stateful HpackDecoder that keeps only the values we read; requests
// are validated as RFC 9113 §8 requires. Request DATA is gathered up to maxMessageBytes and never
// beyond; the connection window is credited back only when a call is over (its bytes are no longer
// held), so what a peer can make us hold is bounded by the window we announce. Responses respect the
// peer's windows (queued per stream when they do not fit, for a bounded time). A response is one
// write: HEADERS + DATA + trailers, encoded with constant static-table HPACK blocks.
// Connection errors answer GOAWAY and close that connection; stream errors answer RST_STREAM.
//
// Everything a peer can make us hold is limited (LEAN_LIMITS below, docs/grpc.md "Limits and abuse
// handling"): connections, streams and running handlers, header block bytes, frames and time, buffered
// request and response bytes, call time, send time, idle time, and cheap control frames per second.
// Coarse time limits are checked by one sweep timer per server (not a timer per frame or per stream);
// client deadlines (grpc-timeout) by one timer per connection, armed at the earliest deadline.

import type { Socket } from 'node:net';
import type { Logger } from '../logger.js';
import { silentLogger } from '../logger.js';
import { MESSAGE_PREFIX, parseGrpcTimeout } from './framing.js';
import { HpackDecoder, HpackError, type HpackDecodeOptions, type HpackField } from './hpack.js';
import {
  CANCEL,
  COMPRESSION_ERROR,
  DEFAULT_WINDOW,
  ENHANCE_YOUR_CALM,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLAG_PRIORITY,
  FLOW_CONTROL_ERROR,
  FRAME_HEADER,
  FRAME_SIZE_ERROR,
  INTERNAL_ERROR,
  MAX_MAX_FRAME_SIZE,
  MAX_WINDOW,
  MIN_MAX_FRAME_SIZE,
  NO_ERROR,
  PREFACE,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_FRAME_SIZE,
  SETTINGS_MAX_HEADER_LIST_SIZE,
  STREAM_CLOSED,
  TYPE_CONTINUATION,
  TYPE_DATA,
  TYPE_GOAWAY,
  TYPE_HEADERS,
  TYPE_PING,
  TYPE_PRIORITY,
  TYPE_PUSH_PROMISE,
  TYPE_RST_STREAM,
  TYPE_SETTINGS,
  TYPE_WINDOW_UPDATE,
  controlFrame,
  literalField,
  literalIndexedName,
  u32Frame,
  writeFrameHeader,
} from './h2-wire.js';
import { GRPC_CODE, GrpcStatusError, encodeGrpcMessage, type GrpcCode } from './status.js';
import { CallAbort } from './call-abort.js';
import type { GrpcServer, GrpcServerOptions, UnaryCall, UnaryHandler } from './server.js';

// --- what this server announces and enforces ---

/** Our SETTINGS_HEADER_TABLE_SIZE (the default; not sent) bounds the client's HPACK table. */
const OUR_HEADER_TABLE_SIZE = 4096;
/** Our SETTINGS_MAX_FRAME_SIZE (the default; not sent): the largest frame we buffer. */
const OUR_MAX_FRAME_SIZE = 16_384;
/**
 * SETTINGS_MAX_CONCURRENT_STREAMS, counting streams whose handler still runs after the client reset
 * them (so a reset flood cannot start more handlers than this). kube-apiserver multiplexes all its KMS
 * calls over one connection; its concurrency is bounded by its own request handling, far below this.
 */
export const LEAN_MAX_CONCURRENT_STREAMS = 1000;
/**
 * Announced SETTINGS_MAX_HEADER_LIST_SIZE, enforced on the DECODED list (an HPACK block can expand
 * ~1000x by referencing a large table entry); the compressed block is capped at the same size. A
 * kube-apiserver request's headers are about 300 bytes.
 */
export const LEAN_MAX_HEADER_LIST_SIZE = 16_384;
/**
 * CONTINUATION frames in one header block. A block within the 16 KiB limit fits one HEADERS frame;
 * a client splits it only past the peer's max frame size, so 2 would do: 32 leaves room for odd
 * encoders, while an endless stream of (empty) CONTINUATIONs is cut at once.
 */
export const LEAN_MAX_CONTINUATION_FRAMES = 32;
/**
 * The connection receive window, credited back only when a call is over: the most request bytes
 * (and so, about, response bytes) one connection makes us hold. 16 max-size (64 KiB) requests, or
 * thousands of real ones (a DEK seed, a ~300-byte ciphertext), at once.
 */
export const LEAN_CONNECTION_WINDOW = 1 << 20;
/**
 * Open connections per server. kube-apiserver uses one or two per KMS provider (v1 and v2 clients),
 * plus our own CLI and probes: 64 is generous. At the cap a new connection evicts the connection that
 * has been idle longest (GOAWAY), so idle or half-open connections cannot lock out the API server; if
 * every connection is busy the new one is closed.
 */
export const LEAN_MAX_CONNECTIONS = 64;
/** From accept to the client's preface and SETTINGS. A local client writes them at once. */
export const LEAN_PREFACE_TIMEOUT_MS = 10_000;
/**
 * A connection without a call in flight for this long gets GOAWAY. Longer than kube-apiserver's
 * 1-minute KMS v2 Status poll, so its connection is never churned.
 */
export const LEAN_IDLE_TIMEOUT_MS = 10 * 60_000;
/** An unfinished header block (HEADERS without END_HEADERS) may stay open this long. */
export const LEAN_HEADER_BLOCK_TIMEOUT_MS = 5_000;
/**
 * A call without grpc-timeout must finish within this. kube-apiserver always sends one (its KMS
 * `timeout`, 3 s by default); the default bounds a client that never finishes its request.
 */
export const LEAN_DEFAULT_CALL_TIMEOUT_MS = 30_000;
/** A larger grpc-timeout is cut to this: no KMS call legitimately takes minutes. */
export const LEAN_MAX_CALL_TIMEOUT_MS = 5 * 60_000;
/**
 * A computed response that cannot be sent (the client keeps its flow-control window closed) is
 * dropped with RST_STREAM CANCEL after this, so a reader that never reads cannot pin responses.
 */
export const LEAN_SEND_TIMEOUT_MS = 10_000;
/**
 * Cheap frames that cost us work but carry no call (PING, SETTINGS, PRIORITY, unknown types, empty
 * DATA, tiny WINDOW_UPDATEs, frames on closed streams, refused or malformed streams) per sweep
 * interval (1 s). More is GOAWAY ENHANCE_YOUR_CALM (grpc-go: "too_many_pings"). A real client sends a
 * handful per second at most, except for what answers our responses: grpc-go's BDP estimator sends a
 * small connection WINDOW_UPDATE and a PING after receiving DATA (the API server's KMS client does,
 * once per response at concurrency 1). As in grpc-go's server (a ping after we sent data is no
 * strike), the first PING and the first small WINDOW_UPDATE after each response are free; without
 * this a busy, well-behaved client had its connection torn down every ~100 ms.
 */
export const LEAN_MAX_STRIKES = 1000;
/** Granularity of the coarse time limits above: they fire at most one interval late. */
export const LEAN_SWEEP_INTERVAL_MS = 1000;
/** Stop reading from a client that does not read its responses once this much output is queued. */
const MAX_QUEUED_OUTPUT = 1 << 20;
/** A WINDOW_UPDATE smaller than this is a strike: real clients credit in large steps. */
const SMALL_WINDOW_UPDATE = 1024;
/** Recently closed stream ids remembered, to tell "ignore" (we reset it) from "closed" (RFC 9113 §5.1). */
const CLOSED_RING = 256;
/** How long a closing connection may take to flush before the socket is destroyed. */
const CLOSE_FLUSH_MS = 5_000;

export interface LeanLimits {
  readonly maxConcurrentStreams: number;
  readonly maxConnections: number;
  readonly connectionWindow: number;
  readonly maxContinuationFrames: number;
  readonly prefaceTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly headerBlockTimeoutMs: number;
  readonly defaultCallTimeoutMs: number;
  readonly maxCallTimeoutMs: number;
  readonly sendTimeoutMs: number;
  readonly maxStrikes: number;
  readonly sweepIntervalMs: number;
}

export const LEAN_LIMITS: LeanLimits = {
  maxConcurrentStreams: LEAN_MAX_CONCURRENT_STREAMS,
  maxConnections: LEAN_MAX_CONNECTIONS,
  connectionWindow: LEAN_CONNECTION_WINDOW,
  maxContinuationFrames: LEAN_MAX_CONTINUATION_FRAMES,
  prefaceTimeoutMs: LEAN_PREFACE_TIMEOUT_MS,
  idleTimeoutMs: LEAN_IDLE_TIMEOUT_MS,
  headerBlockTimeoutMs: LEAN_HEADER_BLOCK_TIMEOUT_MS,
  defaultCallTimeoutMs: LEAN_DEFAULT_CALL_TIMEOUT_MS,
  maxCallTimeoutMs: LEAN_MAX_CALL_TIMEOUT_MS,
  sendTimeoutMs: LEAN_SEND_TIMEOUT_MS,
  maxStrikes: LEAN_MAX_STRIKES,
  sweepIntervalMs: LEAN_SWEEP_INTERVAL_MS,
};

const KEPT_NAMES: ReadonlySet<string> = new Set([
  ':method',
  ':path',
  ':authority',
  'host',
  'content-type',
  'grpc-timeout',
  'te',
  'content-length',
]);

/** RFC 9113 §8.2.2: these must not appear in an HTTP/2 request. */
const CONNECTION_SPECIFIC: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
]);
/** A field name: RFC 9110 token characters, lowercase only (RFC 9113 §8.2.1). */
const VALID_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

const PSEUDO_METHOD = 1;
const PSEUDO_SCHEME = 2;
const PSEUDO_PATH = 4;
const PSEUDO_AUTHORITY = 8;

const CLOSED_UNKNOWN = 0;
const CLOSED_NORMALLY = 1;
const CLOSED_RESET_BY_US = 2;
/** The client reset it: anything it sends on it afterwards is an error (RFC 9113 §5.1, "closed"). */
const CLOSED_RESET_BY_PEER = 3;

const UNKNOWN_METHOD = 'unknown';
const EMPTY = Buffer.alloc(0);

// --- constant response header blocks (static table / literals without indexing, no Huffman) ---

/** ':status: 200' (static index 8) and 'content-type: application/grpc' (name = static index 31). */
const RESPONSE_HEADERS_BLOCK = Buffer.concat([Buffer.from([0x88]), literalIndexedName(31, 'application/grpc')]);
const OK_TRAILERS_BLOCK = literalField('grpc-status', '0');
const STATUS_BLOCKS: readonly Buffer[] = Array.from({ length: 17 }, (_, code) => literalField('grpc-status', String(code)));

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
  return Buffer.concat([RESPONSE_HEADERS_BLOCK, STATUS_BLOCKS[code]!, literalField('grpc-message', text)]);
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
  /** The server's sweep tick when the stream opened (for the default call timeout). */
  bornTick = 0;

  /** The call is settled (exactly once); recorded then, or when a queued response is sent or dropped. */
  finished = false;
  /** The client sent END_STREAM. */
  remoteEnded = false;
  /** We sent END_STREAM or RST_STREAM, or the client reset it: nothing more goes out. */
  localEnded = false;
  /** We sent RST_STREAM: frames the client had in flight are then ignored (RFC 9113 §5.1). */
  resetByUs = false;
  /** Response HEADERS are on the wire (a flow-controlled response is still being sent). */
  headersSent = false;
  /** Still in the connection's stream table. */
  open = true;
  /** Its handler is running (it still counts toward the stream limit, and holds its bytes). */
  running = false;
  /** Counted in the connection's active streams until both closed and its handler settled. */
  retired = false;

  // request body
  expected = -1;
  prefix: Buffer | undefined = undefined;
  parts: Buffer[] | undefined = undefined;
  have = 0;
  complete = false;
  /** DATA bytes (padding included) not yet credited back to the connection window. */
  held = 0;
  /** DATA payload bytes (padding excluded), checked against content-length. */
  dataBytes = 0;
  contentLength = -1;

  recvWindow = DEFAULT_WINDOW;
  sendWindow: number;
  /** Response bytes (the framed message) waiting for send window, then the trailers. */
  pending: Buffer | undefined = undefined;
  /** Sweeps during which a queued response made no progress. */
  stallTicks = 0;

  constructor(id: number, conn: Connection, sendWindow: number) {
    super();
    this.id = id;
    this.conn = conn;
    this.sendWindow = sendWindow;
  }
}

function onDeadlines(conn: Connection): void {
  conn.checkDeadlines();
}

function uncork(conn: Connection): void {
  conn.corked = false;
  conn.socket.uncork();
}

/** A limit in sweep ticks: fires after more than `ms`, at most one sweep interval late. */
function ticksFor(ms: number, interval: number): number {
  return Math.max(1, Math.ceil(ms / interval));
}

interface Shared {
  readonly handlers: ReadonlyMap<string, UnaryHandler>;
  readonly maxMessageBytes: number;
  readonly onCall: GrpcServerOptions['onCall'];
  readonly logger: Logger;
  readonly connections: Set<Connection>;
  readonly limits: LeanLimits;
  readonly connectionWindow: number;
  readonly settingsFrames: Buffer;
  readonly prefaceTicks: number;
  readonly idleTicks: number;
  readonly blockTicks: number;
  readonly callTicks: number;
  readonly sendTicks: number;
  /** Sweeps so far. */
  tick: number;
}

const SETTINGS_ACK = controlFrame(TYPE_SETTINGS, FLAG_ACK, 0, EMPTY);

function serverSettings(limits: LeanLimits, connectionWindow: number): Buffer {
  const settings = Buffer.alloc(12);
  settings.writeUInt16BE(SETTINGS_MAX_CONCURRENT_STREAMS, 0);
  settings.writeUInt32BE(limits.maxConcurrentStreams, 2);
  settings.writeUInt16BE(SETTINGS_MAX_HEADER_LIST_SIZE, 6);
  settings.writeUInt32BE(LEAN_MAX_HEADER_LIST_SIZE, 8);
  return Buffer.concat([
    controlFrame(TYPE_SETTINGS, 0, 0, settings),
    u32Frame(TYPE_WINDOW_UPDATE, 0, connectionWindow - DEFAULT_WINDOW),
  ]);
}

class Connection {
  readonly socket: Socket;
  readonly shared: Shared;
  readonly decoder = new HpackDecoder(OUR_HEADER_TABLE_SIZE, KEPT_NAMES);
  readonly streams = new Map<number, Stream>();
  readonly closed: Promise<void>;
  corked = false;
  destroyed = false;
  /** Streams that count toward the limit: open, or closed with their handler still running. */
  active = 0;
  /** Sweeps without any active stream. */
  idleTicks = 0;
  settingsSeen = false;

  // reading: whole frames are handled in place in the socket chunk; a frame split across reads is
  // gathered once into a buffer of its exact size (never re-copied on later reads)
  private prefaceMatched = 0;
  private readonly head = Buffer.allocUnsafe(FRAME_HEADER);
  private headFill = 0;
  private partial: Buffer | null = null;
  private partialFill = 0;

  private lastStreamId = 0;
  /** GOAWAY sent (close) or received: no new streams; the socket ends once the streams drain. */
  private draining = false;
  private paused = false;
  private ageTicks = 0;
  private strikes = 0;
  /** A response went out since the client's last PING / small WINDOW_UPDATE (see LEAN_MAX_STRIKES). */
  private pingFree = false;
  private windowUpdateFree = false;
  /**
   * Client deadlines: one timer, armed at the earliest deadline of a call in flight. A timer per call
   * cost a Timeout object and a timer-list insert and removal on every call, although calls finish in
   * microseconds and a deadline almost never fires; kube-apiserver's constant 3 s timeout means later
   * calls never re-arm it. When it fires it ends the expired calls and re-arms for the next deadline.
   */
  private deadlineTimer: NodeJS.Timeout | undefined = undefined;
  private deadlineAt = Infinity;

  // peer settings
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrameSize = MIN_MAX_FRAME_SIZE;
  private connSendWindow = DEFAULT_WINDOW;
  /** What the client may still send on the connection; consumed bytes come back via connUnacked. */
  private connRecvWindow: number;
  private connUnacked = 0;
  /** Streams whose response waits for send window, in arrival order. */
  private readonly blocked = new Set<Stream>();

  // recently closed streams (a ring): id, and whether we reset it
  private readonly closedIds = new Uint32Array(CLOSED_RING);
  private readonly closedHow = new Uint8Array(CLOSED_RING);
  private closedNext = 0;

  // header block being assembled
  private blockStream = 0;
  private blockFlags = 0;
  private blockParts: Buffer[] = [];
  private blockSize = 0;
  private blockFrames = 0;
  private blockAge = 0;

  // fields of the header block being decoded, and what validation found
  private fMethod: string | undefined;
  private fPath: string | undefined;
  private fAuthority: string | undefined;
  private fHost: string | undefined;
  private fContentType: string | undefined;
  private fTimeout: string | undefined;
  private fContentLength = -1;
  private fPseudo = 0;
  private fRegular = false;
  private fTrailers = false;
  private fBad: string | undefined;

  private pseudo(bit: number): void {
    if (this.fTrailers) this.fBad ??= 'pseudo-header field in trailers';
    else if (this.fRegular) this.fBad ??= 'pseudo-header field after a regular field';
    else if ((this.fPseudo & bit) !== 0) this.fBad ??= 'duplicate pseudo-header field';
    this.fPseudo |= bit;
  }

  private readonly onField = (field: HpackField): void => {
    switch (field.name) {
      case ':method':
        this.pseudo(PSEUDO_METHOD);
        this.fMethod = field.value;
        return;
      case ':path':
        this.pseudo(PSEUDO_PATH);
        this.fPath = field.value;
        return;
      case ':authority':
        this.pseudo(PSEUDO_AUTHORITY);
        this.fAuthority = field.value;
        return;
    }
    this.fRegular = true;
    switch (field.name) {
      case 'host':
        this.fHost = field.value;
        return;
      case 'content-type':
        this.fContentType = field.value;
        return;
      case 'grpc-timeout':
        this.fTimeout = field.value;
        return;
      case 'te':
        if (field.value !== 'trailers') this.fBad ??= 'te other than "trailers"';
        return;
      case 'content-length':
        if (!/^[0-9]{1,15}$/.test(field.value)) this.fBad ??= 'malformed content-length';
        else this.fContentLength = Number(field.value);
        return;
    }
  };

  private readonly onOther = (name: string): void => {
    if (name.charCodeAt(0) === 0x3a) {
      if (name === ':scheme') this.pseudo(PSEUDO_SCHEME);
      else this.fBad ??= 'unknown or response pseudo-header field';
      return;
    }
    this.fRegular = true;
    if (!VALID_NAME.test(name)) this.fBad ??= 'invalid header field name (uppercase or not a token)';
    else if (CONNECTION_SPECIFIC.has(name)) this.fBad ??= 'connection-specific header field';
  };

  private readonly decodeOptions: HpackDecodeOptions = {
    maxListSize: LEAN_MAX_HEADER_LIST_SIZE,
    onOther: this.onOther,
  };

  constructor(socket: Socket, shared: Shared) {
    this.socket = socket;
    this.shared = shared;
    this.connRecvWindow = shared.connectionWindow;
    this.closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', (err) => shared.logger.debug('grpc connection error', { error: err.message }));
    socket.on('close', () => this.onClose());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.send(shared.settingsFrames);
  }

  // --- output ---

  send(bytes: Buffer): void {
    if (this.destroyed || this.socket.writableEnded) return;
    if (!this.corked) {
      // Everything sent until the loop's check phase goes out in one write: control frames answered
      // while reading (a PING ACK, WINDOW_UPDATEs) and the responses of handlers that settle in the
      // microtasks after that read. process.nextTick would flush before those microtasks run, so a
      // PING that arrived with the next request cost a write of its own (two writes per call).
      this.corked = true;
      this.socket.cork();
      setImmediate(uncork, this);
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
      stream.resetByUs = true;
      this.send(u32Frame(TYPE_RST_STREAM, stream.id, code));
    }
    this.release(stream);
  }

  /** A stream error: RST_STREAM with the code; the call (if any) ends as INTERNAL. */
  private streamError(stream: Stream, code: number, why: string): void {
    if (!stream.localEnded) {
      stream.localEnded = true;
      stream.resetByUs = true;
      this.send(u32Frame(TYPE_RST_STREAM, stream.id, code));
    }
    this.finish(stream, GRPC_CODE.INTERNAL, why);
    this.release(stream);
  }

  /** A new stream we do not serve: RST_STREAM, remembered so its in-flight frames are ignored. */
  private refuse(id: number, code: number, why: string): void {
    this.send(u32Frame(TYPE_RST_STREAM, id, code));
    this.rememberClosed(id, CLOSED_RESET_BY_US);
    if (code !== REFUSED_STREAM) this.shared.logger.debug('grpc stream refused', { error: why, stream: id });
  }

  private rememberClosed(id: number, how: number): void {
    const i = this.closedNext;
    this.closedIds[i] = id;
    this.closedHow[i] = how;
    this.closedNext = i + 1 === CLOSED_RING ? 0 : i + 1;
  }

  /** Updates what is remembered of a closed stream (or remembers it). */
  private markClosed(id: number, how: number): void {
    for (let i = 0; i < CLOSED_RING; i++) {
      if (this.closedIds[i] === id) {
        this.closedHow[i] = how;
        return;
      }
    }
    this.rememberClosed(id, how);
  }

  /** A PRIORITY frame that is a stream error: RST_STREAM, through the stream if it is open. */
  private priorityError(id: number, code: number, why: string): void {
    const stream = this.streams.get(id);
    if (stream !== undefined) this.streamError(stream, code, why);
    else this.send(u32Frame(TYPE_RST_STREAM, id, code));
  }

  private closedState(id: number): number {
    for (let i = 0; i < CLOSED_RING; i++) if (this.closedIds[i] === id) return this.closedHow[i]!;
    return CLOSED_UNKNOWN;
  }

  /** A cheap frame that carries no call: too many in one sweep interval is GOAWAY ENHANCE_YOUR_CALM. */
  private strike(why: string): void {
    if (++this.strikes > this.shared.limits.maxStrikes) throw new ConnectionError(ENHANCE_YOUR_CALM, why);
  }

  /** The stream leaves the table and drops its queued output; it stops counting once its handler ends. */
  private release(stream: Stream): void {
    if (!stream.open) return;
    stream.open = false;
    if (stream.pending !== undefined) {
      // A response we could not deliver: the call did not succeed for the client.
      stream.pending = undefined;
      this.record(stream, GRPC_CODE.CANCELLED);
    }
    stream.parts = undefined;
    stream.prefix = undefined;
    this.blocked.delete(stream);
    this.streams.delete(stream.id);
    this.rememberClosed(stream.id, stream.resetByUs ? CLOSED_RESET_BY_US : CLOSED_NORMALLY);
    if (!stream.running) this.retire(stream);
    if (this.draining && this.streams.size === 0) this.end();
  }

  /** Closed and its handler is done: its request bytes go back to the client's connection window. */
  private retire(stream: Stream): void {
    if (stream.retired) return;
    stream.retired = true;
    this.active--;
    this.consumed(stream.held);
    stream.held = 0;
  }

  /**
   * Bytes we no longer hold; credited to the client in batches of half the window, or at once when
   * the client has less than half left (much of it held by calls still open).
   */
  private consumed(n: number): void {
    if (n === 0) return;
    this.connUnacked += n;
    const half = this.shared.connectionWindow / 2;
    if (this.connUnacked >= half || this.connRecvWindow <= half) {
      this.send(u32Frame(TYPE_WINDOW_UPDATE, 0, this.connUnacked));
      this.connRecvWindow += this.connUnacked;
      this.connUnacked = 0;
    }
  }

  /** Graceful: GOAWAY NO_ERROR with the last stream we accept; the socket ends once streams drain. */
  goAway(): void {
    if (this.destroyed) return;
    if (!this.draining) {
      this.draining = true;
      this.send(goAwayFrame(this.lastStreamId, NO_ERROR, ''));
    }
    if (this.streams.size === 0) this.end();
  }

  /** Makes room for a new connection: close this idle one (see LEAN_MAX_CONNECTIONS). */
  evict(): void {
    this.shared.connections.delete(this);
    this.shared.logger.debug('grpc connection evicted: the connection limit was reached');
    if (!this.settingsSeen) this.destroy();
    else this.goAway();
  }

  private end(): void {
    if (this.destroyed || this.socket.writableEnded) return;
    this.socket.end(() => this.destroy());
    setTimeout(destroySocket, CLOSE_FLUSH_MS, this.socket).unref();
  }

  /** A connection error: GOAWAY with the code, then close. In-flight calls are cancelled. */
  private fail(code: number, message: string): void {
    if (this.destroyed) return;
    this.shared.logger.debug('grpc connection error', { error: message, code });
    this.send(goAwayFrame(this.lastStreamId, code, message));
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
    setTimeout(destroySocket, 100, this.socket).unref();
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
    this.partial = null;
    this.blockParts = [];
  }

  private cancelAll(message: string): void {
    this.stopDeadlines();
    for (const stream of [...this.streams.values()]) {
      stream.localEnded = true;
      this.finish(stream, GRPC_CODE.CANCELLED, message);
      this.release(stream);
    }
  }

  private watchDeadline(at: number): void {
    if (at >= this.deadlineAt) return;
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    this.deadlineAt = at;
    this.deadlineTimer = setTimeout(onDeadlines, Math.max(1, at - Date.now()), this);
    // The socket keeps the process alive while the connection is open; nothing is due after that.
    this.deadlineTimer.unref();
  }

  private stopDeadlines(): void {
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.deadlineAt = Infinity;
  }

  /** The deadline timer fired: ends every call past its deadline, re-arms for the earliest left. */
  checkDeadlines(): void {
    this.deadlineTimer = undefined;
    this.deadlineAt = Infinity;
    if (this.destroyed) return;
    const now = Date.now();
    let next = Infinity;
    for (const stream of this.streams.values()) {
      const at = stream.deadline;
      if (at === undefined || stream.finished) continue;
      if (at <= now) this.finish(stream, GRPC_CODE.DEADLINE_EXCEEDED, 'deadline exceeded');
      else if (at < next) next = at;
    }
    if (next !== Infinity) this.watchDeadline(next);
  }

  /** Called by the server's sweep timer once per interval: every coarse time limit lives here. */
  sweep(): void {
    if (this.destroyed) return;
    const shared = this.shared;
    this.strikes = 0;
    if (!this.settingsSeen) {
      if (++this.ageTicks > shared.prefaceTicks) {
        shared.logger.debug('grpc connection closed: no HTTP/2 preface in time');
        this.destroy();
        return;
      }
    }
    if (this.blockStream !== 0 && ++this.blockAge > shared.blockTicks) {
      this.fail(ENHANCE_YOUR_CALM, 'header block not finished in time');
      return;
    }
    if (this.active === 0) {
      if (++this.idleTicks > shared.idleTicks && !this.draining) {
        shared.logger.debug('grpc connection idle: GOAWAY');
        this.goAway();
      }
    } else this.idleTicks = 0;
    if (this.streams.size === 0) return;
    for (const stream of this.streams.values()) {
      if (stream.pending !== undefined) {
        if (++stream.stallTicks > shared.sendTicks) {
          shared.logger.debug('grpc response dropped: the client did not open its window in time', { stream: stream.id });
          this.reset(stream, CANCEL);
        }
      } else if (!stream.finished && stream.deadline === undefined && shared.tick - stream.bornTick > shared.callTicks) {
        this.finish(stream, GRPC_CODE.DEADLINE_EXCEEDED, `the call exceeded the server's limit of ${shared.limits.defaultCallTimeoutMs} ms`);
      }
    }
  }

  // --- input ---

  private onData(chunk: Buffer): void {
    if (this.destroyed) return;
    let pos = 0;
    const len = chunk.length;
    try {
      if (this.prefaceMatched < PREFACE.length) {
        const n = Math.min(PREFACE.length - this.prefaceMatched, len);
        if (chunk.compare(PREFACE, this.prefaceMatched, this.prefaceMatched + n, 0, n) !== 0) {
          this.shared.logger.debug('grpc connection without the HTTP/2 preface');
          this.destroyed = true;
          this.socket.destroy();
          return;
        }
        this.prefaceMatched += n;
        pos = n;
        if (this.prefaceMatched < PREFACE.length) return;
      }
      // First finish a frame split across reads.
      if (this.headFill > 0 || this.partial !== null) {
        pos = this.fillPartial(chunk, pos);
        if (this.destroyed || (this.partial !== null || this.headFill > 0)) return;
      }
      while (len - pos >= FRAME_HEADER) {
        const length = (chunk[pos]! << 16) | (chunk[pos + 1]! << 8) | chunk[pos + 2]!;
        if (length > OUR_MAX_FRAME_SIZE) throw new ConnectionError(FRAME_SIZE_ERROR, `frame of ${length} bytes`);
        const end = pos + FRAME_HEADER + length;
        if (end > len) break;
        const id = chunk.readUInt32BE(pos + 5) & 0x7fff_ffff;
        this.onFrame(chunk[pos + 3]!, chunk[pos + 4]!, id, chunk.subarray(pos + FRAME_HEADER, end));
        pos = end;
        if (this.destroyed) return;
      }
      if (pos < len) this.fillPartial(chunk, pos);
    } catch (err) {
      if (err instanceof ConnectionError) return this.fail(err.code, err.message);
      if (err instanceof HpackError) return this.fail(COMPRESSION_ERROR, err.message);
      this.shared.logger.error('grpc connection failed', { error: (err as Error).message });
      return this.fail(INTERNAL_ERROR, 'internal error');
    }
  }

  /** Copies bytes of a split frame into head/partial; handles the frame once complete. Returns the new pos. */
  private fillPartial(chunk: Buffer, pos: number): number {
    const len = chunk.length;
    if (this.partial === null) {
      const n = Math.min(FRAME_HEADER - this.headFill, len - pos);
      chunk.copy(this.head, this.headFill, pos, pos + n);
      this.headFill += n;
      pos += n;
      if (this.headFill < FRAME_HEADER) return pos;
      const length = (this.head[0]! << 16) | (this.head[1]! << 8) | this.head[2]!;
      if (length > OUR_MAX_FRAME_SIZE) throw new ConnectionError(FRAME_SIZE_ERROR, `frame of ${length} bytes`);
      this.partial = Buffer.allocUnsafe(FRAME_HEADER + length);
      this.head.copy(this.partial, 0);
      this.partialFill = FRAME_HEADER;
      this.headFill = 0;
    }
    const frame = this.partial;
    const n = Math.min(frame.length - this.partialFill, len - pos);
    chunk.copy(frame, this.partialFill, pos, pos + n);
    this.partialFill += n;
    pos += n;
    if (this.partialFill < frame.length) return pos;
    this.partial = null;
    this.partialFill = 0;
    const id = frame.readUInt32BE(5) & 0x7fff_ffff;
    this.onFrame(frame[3]!, frame[4]!, id, frame.subarray(FRAME_HEADER));
    return pos;
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
        if (this.pingFree && (flags & FLAG_ACK) === 0) this.pingFree = false;
        else this.strike('too_many_pings');
        if ((flags & FLAG_ACK) === 0) this.send(controlFrame(TYPE_PING, FLAG_ACK, 0, payload));
        return;
      case TYPE_WINDOW_UPDATE:
        return this.onWindowUpdate(id, payload);
      case TYPE_RST_STREAM: {
        if (id === 0) throw new ConnectionError(PROTOCOL_ERROR, 'RST_STREAM on stream 0');
        if (payload.length !== 4) throw new ConnectionError(FRAME_SIZE_ERROR, 'RST_STREAM of the wrong size');
        if (id > this.lastStreamId) throw new ConnectionError(PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
        const stream = this.streams.get(id);
        if (stream === undefined) {
          if (this.closedState(id) !== CLOSED_RESET_BY_US) this.strike('too many frames on closed streams');
        } else {
          stream.localEnded = true;
          this.finish(stream, GRPC_CODE.CANCELLED, 'the client cancelled the call');
          this.release(stream);
        }
        this.markClosed(id, CLOSED_RESET_BY_PEER);
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
        this.strike('too many PRIORITY frames');
        if (payload.length !== 5) return this.priorityError(id, FRAME_SIZE_ERROR, 'malformed PRIORITY frame');
        // A stream cannot depend on itself (RFC 9113 §5.3.1): a stream error.
        if ((payload.readUInt32BE(0) & 0x7fffffff) === id) {
          return this.priorityError(id, PROTOCOL_ERROR, 'a stream that depends on itself');
        }
        return;
      case TYPE_PUSH_PROMISE:
        throw new ConnectionError(PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      default:
        // Unknown frame types are ignored (RFC 9113 §5.5), but they are not free.
        return this.strike('too many frames of unknown types');
    }
  }

  private onSettings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(PROTOCOL_ERROR, 'SETTINGS on a stream');
    this.strike('too many SETTINGS frames');
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
    if (increment < SMALL_WINDOW_UPDATE) {
      if (this.windowUpdateFree) this.windowUpdateFree = false;
      else this.strike('too many small WINDOW_UPDATE frames');
    }
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
      return; // a closed stream: allowed in flight (RFC 9113 §5.1)
    }
    if (increment === 0) return this.streamError(stream, PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) return this.streamError(stream, FLOW_CONTROL_ERROR, 'stream window overflow');
    if (stream.pending !== undefined) this.flushStream(stream);
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
    if (fragment.length > LEAN_MAX_HEADER_LIST_SIZE) throw new ConnectionError(ENHANCE_YOUR_CALM, 'header block too large');
    this.blockStream = id;
    this.blockFlags = flags;
    this.blockParts = [Buffer.from(fragment)];
    this.blockSize = fragment.length;
    this.blockFrames = 0;
    this.blockAge = 0;
  }

  private onContinuation(flags: number, id: number, payload: Buffer): void {
    if (this.blockStream === 0 || id !== this.blockStream) {
      throw new ConnectionError(PROTOCOL_ERROR, 'unexpected CONTINUATION');
    }
    if (++this.blockFrames > this.shared.limits.maxContinuationFrames) {
      throw new ConnectionError(ENHANCE_YOUR_CALM, 'too many CONTINUATION frames');
    }
    this.blockSize += payload.length;
    if (this.blockSize > LEAN_MAX_HEADER_LIST_SIZE) {
      throw new ConnectionError(ENHANCE_YOUR_CALM, 'header block too large');
    }
    if (payload.length > 0) this.blockParts.push(Buffer.from(payload));
    if ((flags & FLAG_END_HEADERS) === 0) return;
    const block = this.blockParts.length === 1 ? this.blockParts[0]! : Buffer.concat(this.blockParts, this.blockSize);
    const streamFlags = this.blockFlags;
    this.blockStream = 0;
    this.blockParts = [];
    this.blockSize = 0;
    this.onHeaderBlock(id, streamFlags, block);
  }

  private onHeaderBlock(id: number, flags: number, block: Buffer): void {
    if (block.length > LEAN_MAX_HEADER_LIST_SIZE) throw new ConnectionError(ENHANCE_YOUR_CALM, 'header block too large');
    this.fMethod = this.fPath = this.fAuthority = this.fHost = this.fContentType = this.fTimeout = undefined;
    this.fContentLength = -1;
    this.fPseudo = 0;
    this.fRegular = false;
    this.fBad = undefined;
    const existing = this.streams.get(id);
    this.fTrailers = existing !== undefined;
    // Always decoded, even for a stream we refuse: the HPACK table must stay in step with the client.
    const withinLimit = this.decoder.decode(block, this.onField, this.decodeOptions);
    const endStream = (flags & FLAG_END_STREAM) !== 0;

    if (existing !== undefined) {
      // Trailers from the client (unary clients send none, but they are legal): they end the stream.
      if (existing.remoteEnded) return this.streamError(existing, STREAM_CLOSED, 'HEADERS after END_STREAM');
      if (!endStream) return this.streamError(existing, PROTOCOL_ERROR, 'trailers without END_STREAM');
      if (!withinLimit) return this.streamError(existing, PROTOCOL_ERROR, 'trailers over the header list limit');
      if (this.fBad !== undefined) return this.streamError(existing, PROTOCOL_ERROR, this.fBad);
      return this.onEnd(existing);
    }
    if (id <= this.lastStreamId) {
      // RFC 9113 §5.1: frames the client sent before seeing our RST_STREAM are ignored; HEADERS on
      // any other closed stream (or a lower, skipped id: implicitly closed, §5.1.1) is an error.
      const how = this.closedState(id);
      if (how === CLOSED_RESET_BY_US) return;
      const closed = how === CLOSED_NORMALLY || how === CLOSED_RESET_BY_PEER;
      throw new ConnectionError(closed ? STREAM_CLOSED : PROTOCOL_ERROR, 'HEADERS on a closed stream');
    }
    if ((id & 1) === 0) throw new ConnectionError(PROTOCOL_ERROR, 'a client stream with an even id');
    this.lastStreamId = id;
    if (!withinLimit) {
      this.strike('too many refused streams');
      return this.refuse(id, PROTOCOL_ERROR, 'decoded header list over the limit');
    }
    if (this.fBad !== undefined) {
      this.strike('too many refused streams');
      return this.refuse(id, PROTOCOL_ERROR, this.fBad);
    }
    const required = PSEUDO_METHOD | PSEUDO_SCHEME | PSEUDO_PATH;
    if ((this.fPseudo & required) !== required || this.fPath === '') {
      this.strike('too many refused streams');
      return this.refuse(id, PROTOCOL_ERROR, 'a required pseudo-header field is missing or empty');
    }
    // Not a strike: the client cannot see handlers still running for streams it reset, which count.
    if (this.draining || this.active >= this.shared.limits.maxConcurrentStreams) {
      return this.refuse(id, REFUSED_STREAM, 'refused');
    }
    this.openStream(id, endStream);
  }

  private openStream(id: number, endStream: boolean): void {
    const { handlers, limits } = this.shared;
    const stream = new Stream(id, this, this.peerInitialWindow);
    stream.started = performance.now();
    stream.bornTick = this.shared.tick;
    stream.remoteEnded = endStream;
    stream.contentLength = this.fContentLength;
    this.streams.set(id, stream);
    this.active++;
    this.idleTicks = 0;
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
      const asked = parseGrpcTimeout(this.fTimeout);
      if (asked === undefined) return this.finish(stream, GRPC_CODE.INVALID_ARGUMENT, 'malformed grpc-timeout');
      const ms = Math.min(asked, limits.maxCallTimeoutMs);
      stream.deadline = Date.now() + ms;
      this.watchDeadline(stream.deadline);
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
      this.consumed(flowLength);
      // In flight before our RST_STREAM: ignored. Otherwise the client writes to a closed stream.
      if (this.closedState(id) === CLOSED_RESET_BY_US) return;
      this.strike('too many frames on closed streams');
      this.send(u32Frame(TYPE_RST_STREAM, id, STREAM_CLOSED));
      return;
    }
    if (stream.remoteEnded) {
      this.consumed(flowLength);
      return this.streamError(stream, STREAM_CLOSED, 'DATA after END_STREAM');
    }
    stream.held += flowLength;
    stream.recvWindow -= flowLength;
    if (stream.recvWindow < 0) return this.streamError(stream, FLOW_CONTROL_ERROR, 'stream flow-control window exceeded');
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if (end === start && !endStream) this.strike('too many empty DATA frames');
    stream.dataBytes += end - start;
    if (!stream.finished) {
      if (end > start) this.onBody(stream, payload, start, end);
      if (!stream.finished && !stream.complete && stream.recvWindow <= DEFAULT_WINDOW / 2) {
        this.send(u32Frame(TYPE_WINDOW_UPDATE, id, DEFAULT_WINDOW - stream.recvWindow));
        stream.recvWindow = DEFAULT_WINDOW;
      }
    }
    if (endStream) this.onEnd(stream);
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
      if (stream.parts === undefined && take === stream.expected) {
        // The common case: the whole message in one frame. Kept as a view of the socket chunk, unless
        // that would pin a read buffer much larger than the message.
        stream.message = part.buffer.byteLength > 2 * take + 4096 ? Buffer.from(part) : part;
      } else if (stream.parts === undefined) stream.parts = [Buffer.from(part)];
      else stream.parts.push(Buffer.from(part));
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
    if (stream.contentLength >= 0 && stream.dataBytes !== stream.contentLength) {
      return this.streamError(stream, PROTOCOL_ERROR, 'DATA length differs from content-length');
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
    stream.running = true;
    result.then(
      (response) => this.succeeded(stream, response),
      (err: unknown) => this.failed(stream, err),
    );
  }

  /** The handler has settled: if the stream already closed, it stops counting now. */
  private settled(stream: Stream): void {
    if (!stream.running) return;
    stream.running = false;
    if (!stream.open) this.retire(stream);
  }

  private succeeded(stream: Stream, response: Uint8Array): void {
    this.settled(stream);
    if (stream.finished) return;
    if (!(response instanceof Uint8Array)) {
      return this.failed(stream, new TypeError('the handler did not return bytes'));
    }
    if (stream.localEnded || this.destroyed) {
      return this.finish(stream, GRPC_CODE.CANCELLED, 'stream closed');
    }
    stream.finished = true;
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
      this.pingFree = this.windowUpdateFree = true;
      this.record(stream, GRPC_CODE.OK);
      this.release(stream);
      return;
    }
    const head = Buffer.allocUnsafe(FRAME_HEADER + RESPONSE_HEADERS_BLOCK.length);
    writeFrameHeader(head, 0, RESPONSE_HEADERS_BLOCK.length, TYPE_HEADERS, FLAG_END_HEADERS, stream.id);
    RESPONSE_HEADERS_BLOCK.copy(head, FRAME_HEADER);
    this.send(head);
    stream.headersSent = true;
    const body = Buffer.allocUnsafe(size);
    body[0] = 0;
    body.writeUInt32BE(response.length, 1);
    body.set(response, MESSAGE_PREFIX);
    // Recorded once the trailers go out (or as CANCELLED if the response is dropped). The request
    // is not needed any more while the response waits.
    stream.message = EMPTY;
    stream.pending = body;
    this.blocked.add(stream);
    this.flushStream(stream);
  }

  /** Sends as much of every queued response as the windows allow. */
  private flushBlocked(): void {
    for (const stream of this.blocked) {
      if (this.connSendWindow <= 0) return;
      this.flushStream(stream);
    }
  }

  /** Sends as much of one queued response as the windows allow; the trailers once the body is out. */
  private flushStream(stream: Stream): void {
    let body = stream.pending!;
    const before = body.length;
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
    if (body.length < before) stream.stallTicks = 0;
    stream.pending = body;
    if (body.length === 0) {
      const tail = Buffer.from(OK_TAIL);
      tail.writeUInt32BE(stream.id, 5);
      stream.localEnded = true;
      stream.pending = undefined;
      this.send(tail);
      this.pingFree = this.windowUpdateFree = true;
      this.record(stream, GRPC_CODE.OK);
      this.release(stream);
    }
  }

  private failed(stream: Stream, err: unknown): void {
    this.settled(stream);
    if (stream.finished) return;
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
          if (!stream.remoteEnded) {
            stream.resetByUs = true;
            this.send(u32Frame(TYPE_RST_STREAM, stream.id, NO_ERROR));
          }
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

function destroySocket(socket: Socket): void {
  socket.destroy();
}

/** GOAWAY with the last stream id, the code and (for errors) a short ASCII reason as debug data. */
function goAwayFrame(lastStreamId: number, code: number, debug: string): Buffer {
  const text = Buffer.from(debug.slice(0, 64), 'latin1');
  const out = Buffer.allocUnsafe(FRAME_HEADER + 8 + text.length);
  writeFrameHeader(out, 0, 8 + text.length, TYPE_GOAWAY, 0, 0);
  out.writeUInt32BE(lastStreamId, FRAME_HEADER);
  out.writeUInt32BE(code, FRAME_HEADER + 4);
  text.copy(out, FRAME_HEADER + 8);
  return out;
}

/**
 * The lean transport. `limits` overrides LEAN_LIMITS (tests use short timeouts; production uses the
 * defaults, which docs/grpc.md explains).
 */
export function createLeanGrpcServer(options: GrpcServerOptions, limitsOverride: Partial<LeanLimits> = {}): GrpcServer {
  const limits: LeanLimits = { ...LEAN_LIMITS, ...limitsOverride };
  const connections = new Set<Connection>();
  // The window must fit a few messages of the largest size, or a max-size request could never finish.
  const connectionWindow = Math.min(
    MAX_WINDOW,
    Math.max(limits.connectionWindow, 4 * (options.maxMessageBytes + MESSAGE_PREFIX), DEFAULT_WINDOW),
  );
  const every = limits.sweepIntervalMs;
  const shared: Shared = {
    handlers: options.handlers,
    maxMessageBytes: options.maxMessageBytes,
    onCall: options.onCall,
    logger: options.logger ?? silentLogger,
    connections,
    limits,
    connectionWindow,
    settingsFrames: serverSettings(limits, connectionWindow),
    prefaceTicks: ticksFor(limits.prefaceTimeoutMs, every),
    idleTicks: ticksFor(limits.idleTimeoutMs, every),
    blockTicks: ticksFor(limits.headerBlockTimeoutMs, every),
    callTicks: ticksFor(limits.defaultCallTimeoutMs, every),
    sendTicks: ticksFor(limits.sendTimeoutMs, every),
    tick: 0,
  };
  let closing = false;
  let sweeper: NodeJS.Timeout | undefined;

  function sweep(): void {
    shared.tick++;
    for (const c of connections) c.sweep();
    if (connections.size === 0) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  }

  /** At the cap: the connection idle longest makes room; none idle means the newcomer is refused. */
  function makeRoom(): boolean {
    // Half-open connections (no preface yet) go first, then the one idle longest.
    let victim: Connection | undefined;
    let worst = -1;
    for (const c of connections) {
      if (c.active > 0) continue;
      const score = (c.settingsSeen ? 0 : 1e9) + c.idleTicks;
      if (score > worst) {
        worst = score;
        victim = c;
      }
    }
    if (victim === undefined) return false;
    victim.evict();
    return true;
  }

  return {
    handleConnection(socket) {
      if (closing || (connections.size >= limits.maxConnections && !makeRoom())) {
        if (!closing) shared.logger.warn('grpc connection refused: every connection is busy', { limit: limits.maxConnections });
        socket.on('error', () => {});
        socket.destroy();
        return;
      }
      connections.add(new Connection(socket, shared));
      if (sweeper === undefined) {
        sweeper = setInterval(sweep, every);
        sweeper.unref();
      }
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
