// A unary-only gRPC server on node:http2 for UNIX sockets: framing, status trailers, deadlines and a
// bounded request size. The caller owns the net.Server and hands each accepted socket to
// handleConnection; each goes through the :authority normaliser (authority-normalizer.ts) first.
// Knows nothing about KMS: handlers are plain async functions from request bytes to response bytes.

import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { Logger } from '../logger.js';
import { silentLogger } from '../logger.js';
import {
  createAuthorityNormalizer,
  SERVER_HEADER_TABLE_SIZE,
  SERVER_MAX_FRAME_SIZE,
  type AuthorityNormalizer,
} from './authority-normalizer.js';
import { MESSAGE_PREFIX, frameMessage, parseGrpcTimeout } from './framing.js';
import { createLeanGrpcServer } from './lean-server.js';
import { GRPC_CODE, GrpcStatusError, encodeGrpcMessage, type GrpcCode } from './status.js';
import { CallAbort } from './call-abort.js';

export interface UnaryCall {
  /** '/pkg.Service/Method' */
  readonly method: string;
  readonly message: Buffer;
  /** The client's :authority (percent-decoded), e.g. 'localhost' or '/var/run/kms.sock'. */
  readonly authority: string;
  /** Epoch milliseconds, from grpc-timeout. */
  readonly deadline: number | undefined;
  /** Aborted when the deadline passes, the client cancels, or the server is destroyed. */
  readonly signal: AbortSignal;
  /** Why `signal` was (or would be) aborted, read without creating it; undefined while the call runs. */
  readonly abortReason: GrpcStatusError | undefined;
}

export type UnaryHandler = (call: UnaryCall) => Promise<Uint8Array>;

export interface CallRecord {
  /** The method path, or 'unknown' for a path without a handler (keeps metric labels bounded). */
  readonly method: string;
  readonly code: GrpcCode;
  readonly durationSeconds: number;
}

export interface GrpcServerOptions {
  readonly handlers: ReadonlyMap<string, UnaryHandler>;
  readonly maxMessageBytes: number;
  readonly onCall?: (record: CallRecord) => void;
  readonly logger?: Logger;
  /** Rewrite :authority values Node refuses (default true). false only for measurements. */
  readonly normalizeAuthority?: boolean;
  /**
   * 'lean' (the default): our own unary-only HTTP/2 server (lean-server.ts), which accepts any
   * :authority. 'node-http2': node:http2 behind the :authority normaliser (normalizeAuthority applies).
   */
  readonly transport?: 'lean' | 'node-http2';
}

export interface GrpcServer {
  /** Serves one accepted connection; the caller owns net.Server, bind and the socket file. */
  handleConnection(socket: Socket): void;
  /** Stops new streams (GOAWAY), lets in-flight calls finish for up to graceMs, then destroys sessions. */
  close(graceMs: number): Promise<void>;
}

const UNKNOWN_METHOD = 'unknown';
const OK_HEADERS = { ':status': 200, 'content-type': 'application/grpc' } as const;
const OK_TRAILERS = { 'grpc-status': '0' } as const;
const RESPOND_WITH_TRAILERS = { waitForTrailers: true } as const;
const RESPOND_END = { endStream: true } as const;

function sendOkTrailers(this: http2.ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

function ignore(): void {}

/** Lenient percent-decoding of an authority; a malformed escape leaves the value as it came. */
function decodeAuthority(value: string): string {
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

class Call extends CallAbort implements UnaryCall {
  readonly method: string;
  message: Buffer = EMPTY;
  readonly authority: string;
  readonly deadline: number | undefined;

  constructor(method: string, authority: string, deadline: number | undefined) {
    super();
    this.method = method;
    this.authority = authority;
    this.deadline = deadline;
  }
}

const EMPTY = Buffer.alloc(0);
const DEFAULT_TRANSPORT: 'lean' | 'node-http2' = 'lean';

export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  if ((options.transport ?? DEFAULT_TRANSPORT) === 'lean') return createLeanGrpcServer(options);
  const { handlers, maxMessageBytes, onCall } = options;
  const logger = options.logger ?? silentLogger;
  const normalize = options.normalizeAuthority ?? true;
  const h2 = http2.createServer({
    settings: { headerTableSize: SERVER_HEADER_TABLE_SIZE, maxFrameSize: SERVER_MAX_FRAME_SIZE },
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  const normalizers = new WeakMap<http2.Http2Session, AuthorityNormalizer>();
  let pending: AuthorityNormalizer | undefined;
  let closing = false;

  h2.on('session', (session) => {
    sessions.add(session);
    if (pending !== undefined) normalizers.set(session, pending);
    pending = undefined;
    session.on('error', (err) => logger.debug('grpc session error', { error: err.message }));
    session.on('close', () => sessions.delete(session));
  });
  h2.on('sessionError', (err) => logger.debug('grpc session error', { error: err.message }));
  h2.on('stream', onStream);

  function record(method: string, code: GrpcCode, started: number): void {
    if (onCall !== undefined) {
      onCall({ method, code, durationSeconds: (performance.now() - started) / 1000 });
    }
  }

  // A stream can be closed by the peer at any moment; answering it must never throw out of here.
  function respondError(stream: http2.ServerHttp2Stream, code: GrpcCode, message: string): void {
    if (stream.destroyed || stream.closed) return;
    try {
      if (stream.headersSent) {
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
      stream.respond(
        {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': String(code),
          'grpc-message': encodeGrpcMessage(message),
        },
        RESPOND_END,
      );
      // The client may still be sending: reset its half so nothing more is read.
      if (!stream.readableEnded) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    } catch (err) {
      logger.debug('grpc stream gone before its status was sent', { error: (err as Error).message });
    }
  }

  function onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const started = performance.now();
    stream.on('error', ignore);
    const path = headers[':path'] ?? '';
    const handler = handlers.get(path);
    const method = handler === undefined ? UNKNOWN_METHOD : path;
    const contentType = headers['content-type'];

    const reject = (code: GrpcCode, message: string): void => {
      respondError(stream, code, message);
      record(method, code, started);
    };
    if (headers[':method'] !== 'POST') {
      return reject(GRPC_CODE.UNIMPLEMENTED, `gRPC requires POST, got ${String(headers[':method']).slice(0, 16)}`);
    }
    if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) {
      return reject(GRPC_CODE.INVALID_ARGUMENT, 'content-type must be application/grpc');
    }
    if (handler === undefined) {
      return reject(GRPC_CODE.UNIMPLEMENTED, `unknown method ${path.slice(0, 200)}`);
    }
    let deadline: number | undefined;
    const timeoutHeader = headers['grpc-timeout'];
    if (timeoutHeader !== undefined) {
      const ms = parseGrpcTimeout(timeoutHeader as string);
      if (ms === undefined) return reject(GRPC_CODE.INVALID_ARGUMENT, 'malformed grpc-timeout');
      deadline = Date.now() + ms;
    }

    const normalizer = normalizers.get(stream.session!);
    const raw = normalizer?.takeAuthority(stream.id ?? 0) ?? headers[':authority'] ?? headers.host ?? '';
    const call = new Call(path, decodeAuthority(raw), deadline);

    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (code: GrpcCode, message: string): void => {
      if (finished) return;
      finished = true;
      if (timer !== undefined) clearTimeout(timer);
      stream.removeListener('data', onData);
      stream.removeListener('end', onEnd);
      if (code !== GRPC_CODE.OK) {
        call.abort(new GrpcStatusError(code, message));
        respondError(stream, code, message);
      }
      record(method, code, started);
    };

    if (deadline !== undefined) {
      const ms = deadline - Date.now();
      timer = setTimeout(finish, Math.max(0, ms), GRPC_CODE.DEADLINE_EXCEEDED, 'deadline exceeded');
    }

    // Request body: exactly one message. Usually it arrives in one chunk; otherwise gather parts,
    // never more than the declared (and capped) length.
    let expected = -1; // message length once the prefix is known
    let prefix: Buffer | undefined; // a prefix split across chunks
    const parts: Buffer[] = [];
    let have = 0;
    let complete = false;

    function onData(chunk: Buffer): void {
      let off = 0;
      if (complete) return finish(GRPC_CODE.UNIMPLEMENTED, 'unary method received more than one request message');
      if (expected < 0) {
        let head = chunk;
        if (prefix !== undefined || chunk.length < MESSAGE_PREFIX) {
          prefix = prefix === undefined ? chunk : Buffer.concat([prefix, chunk]);
          if (prefix.length < MESSAGE_PREFIX) return;
          head = prefix;
          chunk = prefix;
          prefix = undefined;
        }
        const flag = head[0]!;
        if (flag !== 0) {
          return finish(
            flag === 1 ? GRPC_CODE.UNIMPLEMENTED : GRPC_CODE.INTERNAL,
            flag === 1
              ? 'compressed messages are not supported (use identity encoding)'
              : `invalid message flag ${flag}`,
          );
        }
        expected = head.readUInt32BE(1);
        if (expected > maxMessageBytes) {
          return finish(
            GRPC_CODE.RESOURCE_EXHAUSTED,
            `request message is ${expected} bytes, larger than the limit of ${maxMessageBytes}`,
          );
        }
        off = MESSAGE_PREFIX;
      }
      const take = Math.min(expected - have, chunk.length - off);
      if (off === 0 && take === chunk.length) parts.push(chunk);
      else if (take > 0) parts.push(chunk.subarray(off, off + take));
      have += take;
      if (have === expected) complete = true;
      if (off + take < chunk.length) {
        return finish(GRPC_CODE.UNIMPLEMENTED, 'unary method received more than one request message');
      }
    }

    function onEnd(): void {
      if (finished) return;
      if (!complete) {
        const why = expected < 0 && prefix === undefined ? 'no request message' : 'truncated request message';
        return finish(GRPC_CODE.INTERNAL, why);
      }
      call.message = parts.length === 1 ? parts[0]! : Buffer.concat(parts, have);
      invoke();
    }

    function invoke(): void {
      let result: Promise<Uint8Array>;
      try {
        result = handler!(call);
      } catch (err) {
        return failed(err);
      }
      result.then(succeeded, failed);
    }

    function succeeded(response: Uint8Array): void {
      if (finished) return;
      if (stream.destroyed || stream.closed) return finish(GRPC_CODE.CANCELLED, 'stream closed');
      finished = true;
      if (timer !== undefined) clearTimeout(timer);
      try {
        stream.respond(OK_HEADERS, RESPOND_WITH_TRAILERS);
        stream.on('wantTrailers', sendOkTrailers);
        stream.end(frameMessage(response));
      } catch (err) {
        logger.debug('grpc stream gone before its response was sent', { error: (err as Error).message });
        return record(method, GRPC_CODE.CANCELLED, started);
      }
      record(method, GRPC_CODE.OK, started);
    }

    function failed(err: unknown): void {
      if (err instanceof GrpcStatusError && err.code !== GRPC_CODE.OK) return finish(err.code, err.message);
      logger.error('grpc handler failed', {
        method,
        error: err instanceof Error ? `${err.name}: ${err.message}` : typeof err,
        code: (err as { code?: unknown } | null)?.code as string | undefined,
      });
      finish(GRPC_CODE.UNKNOWN, 'internal error');
    }

    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('aborted', () => finish(GRPC_CODE.CANCELLED, 'the client cancelled the call'));
    stream.on('close', () => finish(GRPC_CODE.CANCELLED, 'the stream closed before the call completed'));
  }

  return {
    handleConnection(socket) {
      if (closing) {
        socket.destroy();
        return;
      }
      socket.on('error', ignore);
      if (!normalize) {
        h2.emit('connection', socket);
        return;
      }
      const normalizer = createAuthorityNormalizer(socket);
      pending = normalizer;
      h2.emit('connection', normalizer.stream);
      pending = undefined;
    },

    async close(graceMs) {
      closing = true;
      if (sessions.size === 0) return;
      const allClosed = Promise.all(
        [...sessions].map(
          (s) =>
            new Promise<void>((resolve) => {
              if (s.closed || s.destroyed) return resolve();
              s.once('close', () => resolve());
              s.close();
            }),
        ),
      );
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
      });
      await Promise.race([allClosed, expired]);
      clearTimeout(timer);
      for (const s of sessions) s.destroy();
      await allClosed;
    },
  };
}
