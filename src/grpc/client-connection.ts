// One HTTP/2 connection of the gRPC client (client.ts), spoken by ourselves on a connected socket as
// the lean server does: no node:http2 and no JS stream layer, so a unary call costs one HEADERS + DATA
// write and a few frame parses, without node:http2's per-request stream object and events.
//
// What it does: the preface and SETTINGS; requests as one HPACK block of static-table entries and
// literals (nothing enters the server's dynamic table) plus DATA, split by the server's frame size and
// windows (a request that does not fit waits for WINDOW_UPDATE); responses decoded with our stateful
// HpackDecoder, keeping only :status, grpc-status and grpc-message; the server's SETTINGS (frame size,
// initial window, concurrent streams: calls past the limit wait for a free stream), PING, GOAWAY,
// RST_STREAM and WINDOW_UPDATE. It decides nothing about gRPC: each stream reports what it saw and how
// it ended, and client.ts turns that into a result or a status.
//
// Limits: a frame is at most 16 KiB (the default we do not raise), a header block at most
// MAX_HEADER_BLOCK bytes, a response body at most the caller's maxMessageBytes (+ the 5-byte prefix);
// the receive windows are credited back as bytes arrive, because every byte is either held by a call
// within that bound or dropped.

import type { Socket } from 'node:net';
import { HpackDecoder, HpackError, type HpackField } from './hpack.js';
import {
  CANCEL,
  COMPRESSION_ERROR,
  DEFAULT_WINDOW,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLAG_PRIORITY,
  FLOW_CONTROL_ERROR,
  FRAME_HEADER,
  FRAME_SIZE_ERROR,
  MAX_MAX_FRAME_SIZE,
  MAX_WINDOW,
  MIN_MAX_FRAME_SIZE,
  NO_ERROR,
  PREFACE,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_FRAME_SIZE,
  SETTINGS_MAX_HEADER_LIST_SIZE,
  TYPE_CONTINUATION,
  TYPE_DATA,
  TYPE_GOAWAY,
  TYPE_HEADERS,
  TYPE_PING,
  TYPE_PUSH_PROMISE,
  TYPE_RST_STREAM,
  TYPE_SETTINGS,
  TYPE_WINDOW_UPDATE,
  goawayFrame,
  literalField,
  literalIndexedName,
  u32Frame,
  writeFrameHeader,
} from './h2-wire.js';

/** Our SETTINGS_HEADER_TABLE_SIZE: the default 4096, not sent. */
const OUR_HEADER_TABLE_SIZE = 4096;
/** Our SETTINGS_MAX_FRAME_SIZE: the default, not sent; a larger frame is a FRAME_SIZE_ERROR. */
const OUR_MAX_FRAME_SIZE = MIN_MAX_FRAME_SIZE;
/** Announced SETTINGS_MAX_HEADER_LIST_SIZE, enforced on the decoded list and on the encoded block. */
const MAX_HEADER_BLOCK = 16_384;
/** Announced SETTINGS_INITIAL_WINDOW_SIZE: a stream's receive window (credited back as bytes arrive). */
const STREAM_WINDOW = 1 << 20;
/** The connection receive window we open at the start. */
const CONNECTION_WINDOW = 1 << 24;

const KEPT_NAMES: ReadonlySet<string> = new Set([':status', 'grpc-status', 'grpc-message']);

/** Where a stream stands; `ended` and later are final. */
export const STREAM_QUEUED = 0; // waiting for a free stream slot: nothing was sent
export const STREAM_OPEN = 1;
export const STREAM_ENDED = 2; // the server ended it (END_STREAM)
export const STREAM_RESET = 3; // the server reset it (rstCode)
export const STREAM_REFUSED = 4; // never processed: REFUSED_STREAM, above a GOAWAY's last id, or never sent
export const STREAM_LOST = 5; // the connection closed under it
export const STREAM_CANCELLED = 6; // our caller gave up (cancel())
export const STREAM_TOO_LARGE = 7; // the response went past maxMessageBytes; we reset it
export const STREAM_FAILED = 8; // the server broke HTTP/2 (a stream or connection error; `error` says how)

export interface StreamSink {
  /** Called once, when the stream reaches a final state. */
  onClose(stream: ClientStream): void;
}

export class ClientStream {
  id = 0;
  state = STREAM_QUEUED;
  /** The first HEADERS frame arrived. */
  gotResponse = false;
  httpStatus = 0;
  grpcStatus: string | undefined = undefined;
  grpcMessage: string | undefined = undefined;
  readonly parts: Buffer[] = [];
  received = 0;
  rstCode = 0;
  /** For STREAM_FAILED: what the server did wrong. */
  error = '';
  /** The framed request while part of it waits for window, and how much of it was sent. */
  pending: Buffer | undefined;
  pendingAt = 0;
  sendWindow = DEFAULT_WINDOW;
  recvUnacked = 0;
  recvWindow = STREAM_WINDOW;

  readonly headerBlock: Buffer;
  readonly body: Buffer;
  readonly sink: StreamSink;
  private readonly conn: ClientConnection;

  constructor(headerBlock: Buffer, body: Buffer, sink: StreamSink, conn: ClientConnection) {
    this.headerBlock = headerBlock;
    this.body = body;
    this.sink = sink;
    this.conn = conn;
  }

  /** Our caller gave up: reset the stream if it was sent, drop it if not. */
  cancel(): void {
    this.conn.cancel(this);
  }
}

export interface ClientConnectionOptions {
  readonly authority: string;
  readonly maxMessageBytes: number;
  /** Called once when the connection can take no more calls (GOAWAY, error, close). */
  readonly onUnusable: (conn: ClientConnection) => void;
}

/** :method POST, :scheme http (static entries 3 and 6). Pseudo-header fields come first (RFC 9113 §8.3). */
const METHOD_SCHEME = Buffer.from([0x83, 0x86]);
/** content-type application/grpc (name: static entry 31), te trailers. */
const GRPC_FIELDS = Buffer.concat([literalIndexedName(31, 'application/grpc'), literalField('te', 'trailers')]);

export class ClientConnection {
  private readonly streams = new Map<number, ClientStream>();
  private readonly queued: ClientStream[] = [];
  private nextId = 1;
  private readonly decoder = new HpackDecoder(OUR_HEADER_TABLE_SIZE, KEPT_NAMES);
  private readonly authorityField: Buffer;
  private readonly pathFields = new Map<string, Buffer>();
  private readonly maxBody: number;
  // What the server announced.
  private peerMaxFrame = MIN_MAX_FRAME_SIZE;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxStreams = Infinity;
  private sendWindow = DEFAULT_WINDOW;
  // What we receive.
  private recvWindow = CONNECTION_WINDOW;
  private recvUnacked = 0;
  private input: Buffer | undefined;
  /** A header block being gathered across CONTINUATION frames. */
  private blockStream = 0;
  private blockEnd = false;
  private blockParts: Buffer[] = [];
  private blockBytes = 0;
  // Output, written once per tick.
  private out: Buffer[] = [];
  private flushScheduled = false;
  private goawayLastId = -1;
  private unusableSaid = false;
  /** Set once the socket is gone or we are failing it: nothing more is read or written. */
  private dead = false;
  private closing = false;

  private readonly socket: Socket;
  private readonly options: ClientConnectionOptions;

  constructor(socket: Socket, options: ClientConnectionOptions) {
    this.socket = socket;
    this.options = options;
    this.maxBody = options.maxMessageBytes + 5;
    this.authorityField = literalIndexedName(1, options.authority);
    const settings = Buffer.allocUnsafe(18);
    [
      [SETTINGS_ENABLE_PUSH, 0],
      [SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW],
      [SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK],
    ].forEach(([id, value], i) => {
      settings.writeUInt16BE(id!, i * 6);
      settings.writeUInt32BE(value!, i * 6 + 2);
    });
    const head = Buffer.allocUnsafe(FRAME_HEADER + settings.length);
    writeFrameHeader(head, 0, settings.length, TYPE_SETTINGS, 0, 0);
    settings.copy(head, FRAME_HEADER);
    this.queue(PREFACE);
    this.queue(head);
    this.queue(u32Frame(TYPE_WINDOW_UPDATE, 0, CONNECTION_WINDOW - DEFAULT_WINDOW));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // An error is followed by 'close'; either way the calls in flight have lost their connection.
    socket.on('error', () => this.lost(STREAM_LOST));
    socket.on('close', () => this.lost(STREAM_LOST));
  }

  /** Takes new calls: not closed, failed, draining after a GOAWAY, or closing. */
  get usable(): boolean {
    return !this.dead && !this.closing && this.goawayLastId < 0;
  }

  ref(): void {
    this.socket.ref();
  }

  unref(): void {
    this.socket.unref();
  }

  /** Starts a call: `message` is the framed gRPC message, `timeout` the grpc-timeout value. */
  request(method: string, timeout: string, message: Buffer, sink: StreamSink): ClientStream {
    let path = this.pathFields.get(method);
    if (path === undefined) {
      path = literalIndexedName(4, method);
      if (this.pathFields.size < 64) this.pathFields.set(method, path);
    }
    const block = Buffer.concat([METHOD_SCHEME, path, this.authorityField, GRPC_FIELDS, literalField('grpc-timeout', timeout)]);
    const stream = new ClientStream(block, message, sink, this);
    if (!this.usable) {
      this.finish(stream, STREAM_REFUSED);
      return stream;
    }
    if (this.streams.size >= this.peerMaxStreams) this.queued.push(stream);
    else this.start(stream);
    return stream;
  }

  /** No new calls; the socket ends once the calls in flight are over (or at once if there are none). */
  close(): void {
    if (this.closing || this.dead) return;
    this.closing = true;
    this.sayUnusable();
    for (const s of this.queued.splice(0)) this.finish(s, STREAM_REFUSED);
    this.endIfIdle();
  }

  /** close(), then resolves once the socket has closed; it is destroyed after graceMs if calls still run. */
  shutdown(graceMs: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.once('close', () => resolve());
      // An idle connection is unref'd; a caller awaiting this must keep the process alive until it
      // is done, or Node exits mid-await and whatever the caller does next never happens.
      this.socket.ref();
      this.close();
      setTimeout(() => this.socket.destroy(), graceMs).unref();
    });
  }

  cancel(stream: ClientStream): void {
    if (stream.state === STREAM_QUEUED) {
      const i = this.queued.indexOf(stream);
      if (i >= 0) this.queued.splice(i, 1);
      stream.state = STREAM_CANCELLED;
      return;
    }
    if (stream.state !== STREAM_OPEN) return;
    this.streams.delete(stream.id);
    stream.state = STREAM_CANCELLED;
    if (!this.dead) this.queue(u32Frame(TYPE_RST_STREAM, stream.id, CANCEL));
    this.afterStreamGone();
  }

  // --- sending ---

  private start(stream: ClientStream): void {
    if (this.nextId > MAX_WINDOW) {
      // Stream ids are spent: this connection takes no more calls.
      this.goawayLastId = this.nextId;
      this.sayUnusable();
      this.finish(stream, STREAM_REFUSED);
      return;
    }
    const block = stream.headerBlock;
    if (block.length > this.peerMaxFrame) {
      // Our blocks are a few hundred bytes; a method or authority this long is a caller's bug.
      stream.error = `request headers of ${block.length} bytes exceed the server's frame size`;
      this.finish(stream, STREAM_FAILED);
      return;
    }
    stream.id = this.nextId;
    this.nextId += 2;
    stream.state = STREAM_OPEN;
    stream.sendWindow = this.peerInitialWindow;
    this.streams.set(stream.id, stream);
    const head = Buffer.allocUnsafe(FRAME_HEADER + block.length);
    writeFrameHeader(head, 0, block.length, TYPE_HEADERS, FLAG_END_HEADERS, stream.id);
    block.copy(head, FRAME_HEADER);
    this.queue(head);
    stream.pending = stream.body;
    stream.pendingAt = 0;
    this.sendData(stream);
  }

  /** Writes as much of the stream's body as the windows allow; the last frame carries END_STREAM. */
  private sendData(stream: ClientStream): void {
    const body = stream.pending;
    if (body === undefined) return;
    for (;;) {
      const left = body.length - stream.pendingAt;
      const n = Math.min(left, this.peerMaxFrame, stream.sendWindow, this.sendWindow);
      if (n <= 0 && left > 0) return; // wait for WINDOW_UPDATE
      const last = n === left;
      const frame = Buffer.allocUnsafe(FRAME_HEADER + n);
      writeFrameHeader(frame, 0, n, TYPE_DATA, last ? FLAG_END_STREAM : 0, stream.id);
      body.copy(frame, FRAME_HEADER, stream.pendingAt, stream.pendingAt + n);
      this.queue(frame);
      stream.pendingAt += n;
      stream.sendWindow -= n;
      this.sendWindow -= n;
      if (last) {
        stream.pending = undefined;
        return;
      }
    }
  }

  private resumeSends(): void {
    for (const s of this.streams.values()) {
      if (this.sendWindow <= 0) return;
      if (s.pending !== undefined) this.sendData(s);
    }
  }

  private queue(frame: Buffer): void {
    if (this.dead) return;
    this.out.push(frame);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // After the current microtasks: calls started together leave in one write.
      process.nextTick(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const out = this.out;
    if (out.length === 0 || this.dead) return;
    this.out = [];
    this.socket.write(out.length === 1 ? out[0]! : Buffer.concat(out));
  };

  // --- receiving ---

  private onData(chunk: Buffer): void {
    if (this.dead) return;
    const buf = this.input === undefined ? chunk : Buffer.concat([this.input, chunk]);
    let pos = 0;
    while (!this.dead && buf.length - pos >= FRAME_HEADER) {
      const length = (buf[pos]! << 16) | (buf[pos + 1]! << 8) | buf[pos + 2]!;
      if (length > OUR_MAX_FRAME_SIZE) return this.fail(FRAME_SIZE_ERROR, `a frame of ${length} bytes`);
      if (buf.length - pos < FRAME_HEADER + length) break;
      const type = buf[pos + 3]!;
      const flags = buf[pos + 4]!;
      const id = buf.readUInt32BE(pos + 5) & MAX_WINDOW;
      const payload = buf.subarray(pos + FRAME_HEADER, pos + FRAME_HEADER + length);
      pos += FRAME_HEADER + length;
      this.onFrame(type, flags, id, payload);
    }
    this.input = pos === buf.length ? undefined : buf.subarray(pos);
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.blockStream !== 0 && type !== TYPE_CONTINUATION) {
      return this.fail(PROTOCOL_ERROR, 'a header block was interrupted');
    }
    switch (type) {
      case TYPE_DATA:
        return this.onDataFrame(flags, id, payload);
      case TYPE_HEADERS:
        return this.onHeadersFrame(flags, id, payload);
      case TYPE_CONTINUATION:
        if (this.blockStream === 0 || id !== this.blockStream) return this.fail(PROTOCOL_ERROR, 'CONTINUATION out of place');
        return this.gatherBlock(payload, (flags & FLAG_END_HEADERS) !== 0);
      case TYPE_RST_STREAM: {
        if (id === 0 || payload.length !== 4) return this.fail(PROTOCOL_ERROR, 'malformed RST_STREAM');
        const s = this.streams.get(id);
        if (s !== undefined) {
          this.streams.delete(id);
          s.rstCode = payload.readUInt32BE(0);
          // REFUSED_STREAM before any answer: the server did not process it (RFC 9113 §8.7).
          this.finish(s, s.rstCode === REFUSED_STREAM && !s.gotResponse ? STREAM_REFUSED : STREAM_RESET);
          this.afterStreamGone();
        }
        return;
      }
      case TYPE_SETTINGS:
        return this.onSettings(flags, id, payload);
      case TYPE_PING:
        if (id !== 0 || payload.length !== 8) return this.fail(PROTOCOL_ERROR, 'malformed PING');
        if ((flags & FLAG_ACK) === 0) {
          const ack = Buffer.allocUnsafe(FRAME_HEADER + 8);
          writeFrameHeader(ack, 0, 8, TYPE_PING, FLAG_ACK, 0);
          payload.copy(ack, FRAME_HEADER);
          this.queue(ack);
        }
        return;
      case TYPE_GOAWAY:
        if (id !== 0 || payload.length < 8) return this.fail(PROTOCOL_ERROR, 'malformed GOAWAY');
        return this.onGoaway(payload.readUInt32BE(0) & MAX_WINDOW);
      case TYPE_WINDOW_UPDATE:
        return this.onWindowUpdate(id, payload);
      case TYPE_PUSH_PROMISE:
        return this.fail(PROTOCOL_ERROR, 'PUSH_PROMISE although push is disabled');
      default:
        return; // PRIORITY and unknown frame types are ignored (RFC 9113 §5.5)
    }
  }

  /** Strips padding (and priority, for HEADERS); undefined if malformed. */
  private static unpad(flags: number, payload: Buffer, priority: boolean): Buffer | undefined {
    let start = 0;
    let end = payload.length;
    if ((flags & FLAG_PADDED) !== 0) {
      if (payload.length < 1) return undefined;
      end -= payload[0]!;
      start = 1;
    }
    if (priority && (flags & FLAG_PRIORITY) !== 0) start += 5;
    return start > end ? undefined : payload.subarray(start, end);
  }

  private onDataFrame(flags: number, id: number, payload: Buffer): void {
    if (id === 0) return this.fail(PROTOCOL_ERROR, 'DATA on stream 0');
    if (id >= this.nextId || (id & 1) === 0) return this.fail(PROTOCOL_ERROR, `DATA on stream ${id}, never opened`);
    // Flow control counts the whole payload, padding included, whatever the stream's state.
    const size = payload.length;
    this.recvWindow -= size;
    if (this.recvWindow < 0) return this.fail(FLOW_CONTROL_ERROR, 'the connection window was overrun');
    this.recvUnacked += size;
    if (this.recvUnacked >= CONNECTION_WINDOW / 4) {
      this.queue(u32Frame(TYPE_WINDOW_UPDATE, 0, this.recvUnacked));
      this.recvWindow += this.recvUnacked;
      this.recvUnacked = 0;
    }
    const s = this.streams.get(id);
    if (s === undefined) return; // a stream we reset or that ended: dropped
    const data = ClientConnection.unpad(flags, payload, false);
    if (data === undefined) return this.fail(PROTOCOL_ERROR, 'malformed DATA padding');
    s.recvWindow -= size;
    if (s.recvWindow < 0) return this.resetStream(s, FLOW_CONTROL_ERROR, 'the stream window was overrun');
    if (!s.gotResponse) return this.resetStream(s, PROTOCOL_ERROR, 'DATA before the response headers');
    s.received += data.length;
    if (s.received > this.maxBody) {
      this.streams.delete(id);
      this.queue(u32Frame(TYPE_RST_STREAM, id, CANCEL));
      this.finish(s, STREAM_TOO_LARGE);
      this.afterStreamGone();
      return;
    }
    if (data.length > 0) s.parts.push(data);
    if ((flags & FLAG_END_STREAM) !== 0) return this.endStream(s);
    s.recvUnacked += size;
    if (s.recvUnacked >= STREAM_WINDOW / 2) {
      this.queue(u32Frame(TYPE_WINDOW_UPDATE, id, s.recvUnacked));
      s.recvWindow += s.recvUnacked;
      s.recvUnacked = 0;
    }
  }

  private onHeadersFrame(flags: number, id: number, payload: Buffer): void {
    if (id === 0) return this.fail(PROTOCOL_ERROR, 'HEADERS on stream 0');
    if (id >= this.nextId || (id & 1) === 0) return this.fail(PROTOCOL_ERROR, `HEADERS on stream ${id}, never opened`);
    const fragment = ClientConnection.unpad(flags, payload, true);
    if (fragment === undefined) return this.fail(PROTOCOL_ERROR, 'malformed HEADERS padding');
    this.blockStream = id;
    this.blockEnd = (flags & FLAG_END_STREAM) !== 0;
    this.blockParts = [];
    this.blockBytes = 0;
    this.gatherBlock(fragment, (flags & FLAG_END_HEADERS) !== 0);
  }

  private gatherBlock(fragment: Buffer, last: boolean): void {
    this.blockBytes += fragment.length;
    if (this.blockBytes > MAX_HEADER_BLOCK) return this.fail(PROTOCOL_ERROR, 'a header block over the announced limit');
    this.blockParts.push(fragment);
    if (!last) return;
    const id = this.blockStream;
    this.blockStream = 0;
    const block = this.blockParts.length === 1 ? this.blockParts[0]! : Buffer.concat(this.blockParts);
    this.blockParts = [];
    const s = this.streams.get(id);
    const fields = new Map<string, string>();
    let withinLimit: boolean;
    try {
      // Every block is decoded, even for a stream we dropped, to keep the HPACK table in step.
      withinLimit = this.decoder.decode(block, (f: HpackField) => fields.set(f.name, f.value), {
        maxListSize: MAX_HEADER_BLOCK,
      });
    } catch (err) {
      return this.fail(COMPRESSION_ERROR, err instanceof HpackError ? err.message : 'bad header block');
    }
    if (s === undefined) return;
    if (!withinLimit) return this.resetStream(s, PROTOCOL_ERROR, 'response headers over the announced limit');
    if (!s.gotResponse) {
      s.gotResponse = true;
      const status = fields.get(':status');
      s.httpStatus = status === undefined ? 0 : Number(status);
    } else if (!this.blockEnd) {
      return this.resetStream(s, PROTOCOL_ERROR, 'trailers without END_STREAM');
    }
    const grpcStatus = fields.get('grpc-status');
    if (grpcStatus !== undefined) {
      s.grpcStatus = grpcStatus;
      s.grpcMessage = fields.get('grpc-message') ?? '';
    }
    if (this.blockEnd) this.endStream(s);
  }

  private onSettings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) return this.fail(PROTOCOL_ERROR, 'SETTINGS on a stream');
    if ((flags & FLAG_ACK) !== 0) {
      if (payload.length !== 0) return this.fail(FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      return;
    }
    if (payload.length % 6 !== 0) return this.fail(FRAME_SIZE_ERROR, 'SETTINGS of a bad length');
    for (let at = 0; at < payload.length; at += 6) {
      const key = payload.readUInt16BE(at);
      const value = payload.readUInt32BE(at + 2);
      if (key === SETTINGS_INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) return this.fail(FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE too large');
        const delta = value - this.peerInitialWindow;
        this.peerInitialWindow = value;
        for (const s of this.streams.values()) {
          s.sendWindow += delta;
          if (s.sendWindow > MAX_WINDOW) return this.fail(FLOW_CONTROL_ERROR, 'a stream window overflowed');
        }
      } else if (key === SETTINGS_MAX_FRAME_SIZE) {
        if (value < MIN_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE) {
          return this.fail(PROTOCOL_ERROR, 'SETTINGS_MAX_FRAME_SIZE out of range');
        }
        this.peerMaxFrame = value;
      } else if (key === SETTINGS_MAX_CONCURRENT_STREAMS) {
        this.peerMaxStreams = value;
      } else if (key === SETTINGS_ENABLE_PUSH && value > 1) {
        return this.fail(PROTOCOL_ERROR, 'SETTINGS_ENABLE_PUSH out of range');
      }
      // Header table size: our encoder never uses the dynamic table, so any size is fine.
    }
    const ack = Buffer.allocUnsafe(FRAME_HEADER);
    writeFrameHeader(ack, 0, 0, TYPE_SETTINGS, FLAG_ACK, 0);
    this.queue(ack);
    this.resumeSends();
    this.startQueued();
  }

  private onWindowUpdate(id: number, payload: Buffer): void {
    if (payload.length !== 4) return this.fail(FRAME_SIZE_ERROR, 'WINDOW_UPDATE of a bad length');
    const inc = payload.readUInt32BE(0) & MAX_WINDOW;
    if (id === 0) {
      if (inc === 0) return this.fail(PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.sendWindow += inc;
      if (this.sendWindow > MAX_WINDOW) return this.fail(FLOW_CONTROL_ERROR, 'the connection window overflowed');
      return this.resumeSends();
    }
    const s = this.streams.get(id);
    if (s === undefined) return;
    if (inc === 0) return this.resetStream(s, PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
    s.sendWindow += inc;
    if (s.sendWindow > MAX_WINDOW) return this.resetStream(s, FLOW_CONTROL_ERROR, 'the stream window overflowed');
    if (s.pending !== undefined) this.sendData(s);
  }

  private onGoaway(lastId: number): void {
    this.goawayLastId = this.goawayLastId < 0 ? lastId : Math.min(this.goawayLastId, lastId);
    this.sayUnusable();
    // Streams above the last id were never processed: their calls may be sent again elsewhere.
    for (const [id, s] of this.streams) {
      if (id > this.goawayLastId) {
        this.streams.delete(id);
        this.finish(s, STREAM_REFUSED);
      }
    }
    for (const s of this.queued.splice(0)) this.finish(s, STREAM_REFUSED);
    this.endIfIdle();
  }

  // --- stream and connection ends ---

  private endStream(s: ClientStream): void {
    this.streams.delete(s.id);
    this.finish(s, STREAM_ENDED);
    this.afterStreamGone();
  }

  /** A stream error (RFC 9113 §5.4.2): reset that stream; the call fails as a protocol error. */
  private resetStream(s: ClientStream, code: number, why: string): void {
    this.streams.delete(s.id);
    this.queue(u32Frame(TYPE_RST_STREAM, s.id, code));
    s.error = `HTTP/2 stream error from the server: ${why}`;
    this.finish(s, STREAM_FAILED);
    this.afterStreamGone();
  }

  private finish(s: ClientStream, state: number): void {
    s.state = state;
    s.pending = undefined;
    s.sink.onClose(s);
  }

  private afterStreamGone(): void {
    this.startQueued();
    this.endIfIdle();
  }

  private startQueued(): void {
    while (this.queued.length > 0 && this.streams.size < this.peerMaxStreams && this.usable) {
      this.start(this.queued.shift()!);
    }
  }

  private endIfIdle(): void {
    if (this.streams.size > 0 || this.queued.length > 0 || this.dead) return;
    if (this.closing || this.goawayLastId >= 0) {
      this.queue(goawayFrame(0, NO_ERROR));
      this.flush();
      this.dead = true;
      // Then close the socket whole once the GOAWAY is written: a server may keep a half-closed
      // connection open (node:http2 does), which would hold its close() up.
      this.socket.end(() => this.socket.destroy());
    }
  }

  private sayUnusable(): void {
    if (this.unusableSaid) return;
    this.unusableSaid = true;
    this.options.onUnusable(this);
  }

  /** A connection error (RFC 9113 §5.4.1): GOAWAY, close, fail every call in flight. */
  private fail(code: number, why: string): void {
    if (this.dead) return;
    this.queue(goawayFrame(0, code)); // we accept no streams from the server: last id 0
    this.flush();
    this.lost(STREAM_FAILED, `HTTP/2 connection error from the server: ${why}`);
  }

  /** The connection is gone: calls sent end as `state` (lost or failed), calls never sent as refused. */
  private lost(state: number, why = ''): void {
    if (this.dead && this.streams.size === 0 && this.queued.length === 0) return;
    this.dead = true;
    this.sayUnusable();
    const open = [...this.streams.values()];
    this.streams.clear();
    const waiting = this.queued.splice(0);
    for (const s of open) {
      s.error = why;
      this.finish(s, state);
    }
    for (const s of waiting) this.finish(s, STREAM_REFUSED);
    if (!this.socket.destroyed) this.socket.destroy();
  }
}
