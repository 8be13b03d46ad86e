// Unary gRPC calls to etcd over HTTP/2 (node:http2): h2c with prior knowledge for http:// endpoints,
// TLS with ALPN h2 (and an optional client certificate) for https://, as etcdctl dials. One
// connection per endpoint, shared by every call; knows gRPC framing and statuses, not etcd's messages.
//
// Limits by construction: at most `maxStreams` calls in flight (the rest wait their turn), a response
// larger than `maxResponseBytes` is cancelled while it arrives, every call has a deadline (sent as
// grpc-timeout and enforced here, connecting included).

import http2 from 'node:http2';
import { MESSAGE_PREFIX, formatGrpcTimeout, frameMessage } from '../grpc/framing.js';
import { GRPC_CODE, GrpcStatusError, decodeGrpcMessage, isGrpcCode, type GrpcCode } from '../grpc/status.js';

export interface TransportTls {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

export interface TransportOptions {
  readonly tls?: TransportTls | undefined;
  /** Calls in flight at once over all endpoints (HTTP/2 streams); more wait in order. */
  readonly maxStreams: number;
  /** Largest response message accepted. */
  readonly maxResponseBytes: number;
}

/**
 * Receive windows. HTTP/2's default 64 KiB window would cost a round trip per 64 KiB of a page (a
 * 500-value page of Secrets is 0.5-2 MiB); a window the size of a typical page lets etcd send it in
 * one go. Memory stays bounded: each response is capped at maxResponseBytes anyway.
 */
const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024;

/** How long close() lets calls in flight finish before it cuts the connection. */
const CLOSE_GRACE_MS = 5000;

/** setTimeout fires at once for anything longer (about 24.8 days): a longer deadline is clamped. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The endpoint could not be used (refused, reset, TLS failure, closed before answering): try another. */
export class EndpointUnreachableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EndpointUnreachableError';
  }
}

/** No answer within the call's deadline (locally enforced; etcd also gets grpc-timeout). */
export class CallDeadlineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CallDeadlineError';
  }
}

/** The response grew past maxResponseBytes and was cancelled; a smaller request may fit. */
export class ResponseTooLargeError extends GrpcStatusError {
  constructor(limit: number) {
    super(GRPC_CODE.RESOURCE_EXHAUSTED, `response larger than ${limit} bytes (the client's limit)`);
    this.name = 'ResponseTooLargeError';
  }
}

interface Connection {
  readonly session: http2.ClientHttp2Session;
  /** Resolves once the socket (and TLS) is up; rejects if it never comes up. */
  readonly ready: Promise<void>;
  /** Whether the server has said anything (its SETTINGS): a stuck endpoint never does. */
  heard: boolean;
  inFlight: number;
}

/** The gRPC code an HTTP status means when the answer carries no grpc-status (gRPC's HTTP mapping). */
const HTTP_STATUS_CODE: Readonly<Record<number, GrpcCode>> = {
  400: GRPC_CODE.INTERNAL,
  401: GRPC_CODE.UNAUTHENTICATED,
  403: GRPC_CODE.PERMISSION_DENIED,
  404: GRPC_CODE.UNIMPLEMENTED,
  429: GRPC_CODE.UNAVAILABLE,
  502: GRPC_CODE.UNAVAILABLE,
  503: GRPC_CODE.UNAVAILABLE,
  504: GRPC_CODE.UNAVAILABLE,
};

export class UnaryTransport {
  private readonly options: TransportOptions;
  private readonly connections = new Map<string, Connection>();
  private readonly waiting: (() => void)[] = [];
  private active = 0;
  private closed = false;

  constructor(options: TransportOptions) {
    if (!(options.maxStreams >= 1)) throw new RangeError('maxStreams must be at least 1');
    this.options = options;
  }

  /** One call to `endpoint` (http://host:port or https://host:port); resolves with the response message. */
  async unary(endpoint: string, path: string, message: Uint8Array, timeoutMs: number): Promise<Buffer> {
    if (this.active >= this.options.maxStreams) {
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.active++;
    }
    try {
      return await this.attempt(endpoint, path, message, timeoutMs);
    } finally {
      // hand the slot to the next waiter, or give it back
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.connections.values()];
    this.connections.clear();
    await Promise.all(
      all.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.session.destroyed) return resolve();
            c.session.once('close', () => resolve());
            // an idle session is unref'd: keep the process alive until it has said goodbye
            c.session.ref();
            if (!c.session.closed) c.session.close();
            // calls still in flight may finish; a peer that never lets go is cut off
            setTimeout(() => c.session.destroy(), CLOSE_GRACE_MS).unref();
          }),
      ),
    );
  }

  private connection(endpoint: string): Connection {
    const existing = this.connections.get(endpoint);
    if (existing && !existing.session.closed && !existing.session.destroyed) return existing;
    const tls = this.options.tls;
    const session = http2.connect(endpoint, {
      settings: { enablePush: false, initialWindowSize: STREAM_WINDOW_BYTES },
      ...(endpoint.startsWith('https:')
        ? {
            ALPNProtocols: ['h2'],
            ...(tls?.ca ? { ca: tls.ca } : {}),
            ...(tls?.cert ? { cert: tls.cert } : {}),
            ...(tls?.key ? { key: tls.key } : {}),
          }
        : {}),
    });
    const conn: Connection = {
      session,
      heard: false,
      inFlight: 0,
      ready: new Promise<void>((resolve, reject) => {
        session.once('connect', () => {
          if (!session.destroyed) session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
          resolve();
        });
        session.once('error', reject);
        session.once('close', () => reject(new Error('connection closed before it was up')));
      }),
    };
    conn.ready.catch(() => undefined);
    session.on('error', () => undefined); // the calls on it report the failure
    session.once('remoteSettings', () => {
      conn.heard = true;
    });
    const forget = (): void => {
      if (this.connections.get(endpoint) === conn) this.connections.delete(endpoint);
    };
    session.once('close', forget);
    session.once('goaway', forget);
    session.unref();
    this.connections.set(endpoint, conn);
    return conn;
  }

  private attempt(endpoint: string, path: string, message: Uint8Array, timeoutMs: number): Promise<Buffer> {
    if (this.closed) return Promise.reject(new EndpointUnreachableError('the etcd client is closed'));
    let conn: Connection;
    try {
      conn = this.connection(endpoint);
    } catch (err) {
      return Promise.reject(new EndpointUnreachableError((err as Error).message, { cause: err }));
    }
    const { maxResponseBytes } = this.options;
    return new Promise<Buffer>((resolve, reject) => {
      let settled = false;
      let stream: http2.ClientHttp2Stream | undefined;
      conn.inFlight++;
      if (conn.inFlight === 1) conn.session.ref();
      const settle = (err: Error | undefined, value?: Buffer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        conn.inFlight--;
        if (conn.inFlight === 0 && !conn.session.destroyed) conn.session.unref();
        if (err) reject(err);
        else resolve(value!);
      };
      const timer = setTimeout(() => {
        settle(new CallDeadlineError(`no answer within ${timeoutMs} ms`));
        if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        // an endpoint that never said a word (stopped, black-holed) is not worth keeping
        if (!conn.heard) conn.session.destroy();
      }, Math.min(timeoutMs, MAX_TIMER_MS));

      conn.ready.then(
        () => {
          if (settled) return;
          try {
            stream = conn.session.request(
              {
                ':method': 'POST',
                ':path': path,
                'content-type': 'application/grpc',
                te: 'trailers',
                'grpc-timeout': formatGrpcTimeout(timeoutMs),
                'user-agent': 'atrest',
              },
              { endStream: false },
            );
          } catch (err) {
            settle(new EndpointUnreachableError((err as Error).message, { cause: err }));
            return;
          }
          const s = stream;
          let httpStatus: number | undefined;
          let statusHeaders: http2.IncomingHttpHeaders | undefined;
          const chunks: Buffer[] = [];
          let received = 0;
          s.on('response', (headers) => {
            httpStatus = Number(headers[':status']);
            if (headers['grpc-status'] !== undefined) statusHeaders = headers;
          });
          s.on('trailers', (trailers) => {
            statusHeaders = trailers;
          });
          s.on('data', (chunk: Buffer) => {
            if (settled) return;
            received += chunk.length;
            if (received > maxResponseBytes + MESSAGE_PREFIX) {
              settle(new ResponseTooLargeError(maxResponseBytes));
              s.close(http2.constants.NGHTTP2_CANCEL);
              return;
            }
            chunks.push(chunk);
          });
          s.on('error', (err: Error) => {
            if (httpStatus === undefined) settle(new EndpointUnreachableError(err.message, { cause: err }));
            else settle(new GrpcStatusError(GRPC_CODE.UNAVAILABLE, err.message, { cause: err }));
          });
          s.on('close', () => {
            if (settled) return;
            if (httpStatus === undefined) {
              // closed before any answer: the connection went away (or refused the stream)
              settle(new EndpointUnreachableError(`stream closed before a response (code ${s.rstCode ?? 0})`));
              return;
            }
            const status = statusHeaders?.['grpc-status'];
            if (status === undefined) {
              const code = httpStatus === 200 ? GRPC_CODE.INTERNAL : (HTTP_STATUS_CODE[httpStatus] ?? GRPC_CODE.UNKNOWN);
              settle(new GrpcStatusError(code, `HTTP ${httpStatus} without a gRPC status`));
              return;
            }
            const n = Number(status);
            if (n !== GRPC_CODE.OK) {
              const raw = statusHeaders?.['grpc-message'];
              const text = typeof raw === 'string' ? decodeGrpcMessage(raw) : '';
              settle(new GrpcStatusError(isGrpcCode(n) ? n : GRPC_CODE.UNKNOWN, text));
              return;
            }
            const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received);
            if (body.length < MESSAGE_PREFIX || body[0] !== 0 || body.readUInt32BE(1) !== body.length - MESSAGE_PREFIX) {
              settle(new GrpcStatusError(GRPC_CODE.INTERNAL, 'malformed response framing (expected one uncompressed message)'));
              return;
            }
            settle(undefined, body.subarray(MESSAGE_PREFIX));
          });
          s.end(frameMessage(message));
        },
        (err: Error) => settle(new EndpointUnreachableError(err.message, { cause: err })),
      );
    });
  }
}
