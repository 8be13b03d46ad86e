// A unary gRPC client over a UNIX socket that behaves like grpc-go with wait-for-ready, as
// kube-apiserver dials its KMS plugin: a missing or refusing socket is retried with short backoff
// until the call's deadline, and a lost connection (plugin restart) is re-dialled by the next call.

import http2 from 'node:http2';
import net from 'node:net';
import { MESSAGE_PREFIX, formatGrpcTimeout, frameMessage } from './framing.js';
import { GRPC_CODE, GrpcStatusError, decodeGrpcMessage, isGrpcCode, type GrpcCode } from './status.js';
import { REAL_CLOCK, withRetry, type RetryOptions } from '../retry.js';

export interface GrpcClientOptions {
  /** A net address as in UnixEndpoint.address: a path, or '\0name' for an abstract socket. */
  readonly address: string;
  /** :authority to send (default 'localhost', as kube-apiserver ≥ 1.32 does). */
  readonly authority?: string;
  /** Largest response accepted (default 4 MiB, grpc-go's default receive limit). */
  readonly maxMessageBytes?: number;
  /** Time and the wait between dial attempts (default: real time; tests inject their own). */
  readonly clock?: GrpcClientClock;
}

export interface GrpcClientClock {
  now(): number;
  /** Waits `ms` (a dial backoff); rejects with the signal's reason if it aborts first. */
  sleep(ms: number, signal: AbortSignal | undefined): Promise<void>;
}

export interface GrpcClient {
  unary(
    method: string,
    message: Uint8Array,
    options: { readonly timeoutMs: number; readonly signal?: AbortSignal },
  ): Promise<Buffer>;
  close(): Promise<void>;
}

const DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024;
const BACKOFF_FIRST_MS = 10;
const BACKOFF_MAX_MS = 500;

/** An attempt that never reached the server's handler: safe to retry on a new connection. */
class Retryable extends Error {}

type Backoff = Pick<RetryOptions, 'attempts' | 'baseDelayMs' | 'maxDelayMs' | 'atBudget' | 'isRetryable'>;

/** Wait-for-ready: dial with exponential backoff, the last wait cut to end at the deadline. */
const DIAL_BACKOFF: Backoff = {
  attempts: Infinity,
  baseDelayMs: BACKOFF_FIRST_MS,
  maxDelayMs: BACKOFF_MAX_MS,
  atBudget: 'last-attempt',
  isRetryable: (err) => !(err instanceof GrpcStatusError),
};

/** A stream that never reached the handler is sent again, on a new connection if need be. */
const REFUSED_BACKOFF: Backoff = {
  attempts: Infinity,
  baseDelayMs: BACKOFF_FIRST_MS,
  maxDelayMs: BACKOFF_FIRST_MS,
  isRetryable: (err) => err instanceof Retryable,
};

function httpStatusToCode(status: number): GrpcCode {
  switch (status) {
    case 400:
      return GRPC_CODE.INTERNAL;
    case 401:
      return GRPC_CODE.UNAUTHENTICATED;
    case 403:
      return GRPC_CODE.PERMISSION_DENIED;
    case 404:
      return GRPC_CODE.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GRPC_CODE.UNAVAILABLE;
    default:
      return GRPC_CODE.UNKNOWN;
  }
}

export function createGrpcClient(options: GrpcClientOptions): GrpcClient {
  const { address } = options;
  const authority = options.authority ?? 'localhost';
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE;
  const clock = options.clock ?? REAL_CLOCK;
  let session: http2.ClientHttp2Session | undefined;
  let dialing: Promise<http2.ClientHttp2Session> | undefined;
  let inFlight = 0;
  let closed = false;

  function usable(s: http2.ClientHttp2Session | undefined): s is http2.ClientHttp2Session {
    return s !== undefined && !s.closed && !s.destroyed;
  }

  /** One dial attempt: resolves with a session on a connected socket, rejects on a socket error. */
  function dialOnce(): Promise<http2.ClientHttp2Session> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(address);
      const onError = (err: Error): void => reject(err);
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.removeListener('error', onError);
        const s = http2.connect('http://localhost', { createConnection: () => socket });
        s.on('error', () => {});
        const forget = (): void => {
          if (session === s) session = undefined;
        };
        s.on('close', forget);
        s.on('goaway', forget);
        if (inFlight === 0) s.unref();
        resolve(s);
      });
    });
  }

  /** Retries end at the call's deadline, or when its caller gives up. */
  function untilDeadline(deadline: number, signal: AbortSignal | undefined): Partial<RetryOptions> {
    return { budgetMs: deadline - clock.now(), clock, ...(signal === undefined ? {} : { signal }) };
  }

  /** The open session, or a new one; a failed dial is what wait-for-ready retries. */
  async function sessionOrDial(): Promise<http2.ClientHttp2Session> {
    for (;;) {
      if (closed) throw new GrpcStatusError(GRPC_CODE.CANCELLED, 'the client is closed');
      if (usable(session)) return session;
      dialing ??= dialOnce().finally(() => {
        dialing = undefined;
      });
      const s = await dialing;
      if (closed) {
        s.destroy();
        continue;
      }
      if (!usable(session)) session = s;
      else if (session !== s) s.destroy();
    }
  }

  async function getSession(deadline: number, signal: AbortSignal | undefined): Promise<http2.ClientHttp2Session> {
    try {
      return await withRetry(sessionOrDial, { ...DIAL_BACKOFF, ...untilDeadline(deadline, signal) });
    } catch (err) {
      if (err instanceof GrpcStatusError || signal?.aborted === true) throw err;
      throw new GrpcStatusError(
        GRPC_CODE.DEADLINE_EXCEEDED,
        `deadline exceeded while connecting: ${(err as Error)?.message ?? 'no connection'}`,
        { cause: err },
      );
    }
  }

  function attempt(
    s: http2.ClientHttp2Session,
    method: string,
    message: Uint8Array,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      let req: http2.ClientHttp2Stream;
      try {
        req = s.request(
          {
            ':method': 'POST',
            ':scheme': 'http',
            ':path': method,
            ':authority': authority,
            'content-type': 'application/grpc',
            te: 'trailers',
            'grpc-timeout': formatGrpcTimeout(deadline - clock.now()),
          },
          { endStream: false },
        );
      } catch (err) {
        return reject(new Retryable('session unusable', { cause: err }));
      }
      let settled = false;
      let gotResponse = false;
      let httpStatus = 0;
      let grpcStatus: string | undefined;
      let grpcMessage: string | undefined;
      const parts: Buffer[] = [];
      let received = 0;

      const settle = (err: Error | undefined, value?: Buffer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (!req.closed && !req.destroyed) req.close(http2.constants.NGHTTP2_CANCEL);
        if (err !== undefined) reject(err);
        else resolve(value!);
      };
      const timer = setTimeout(
        () => settle(new GrpcStatusError(GRPC_CODE.DEADLINE_EXCEEDED, `deadline exceeded calling ${method}`)),
        Math.max(0, deadline - clock.now()),
      );
      const onAbort = (): void =>
        settle(new GrpcStatusError(GRPC_CODE.CANCELLED, `call to ${method} cancelled`, { cause: signal?.reason }));
      signal?.addEventListener('abort', onAbort, { once: true });

      const takeStatus = (headers: http2.IncomingHttpHeaders): void => {
        const st = headers['grpc-status'];
        if (typeof st === 'string') {
          grpcStatus = st;
          const msg = headers['grpc-message'];
          grpcMessage = typeof msg === 'string' ? decodeGrpcMessage(msg) : '';
        }
      };
      req.on('response', (headers) => {
        gotResponse = true;
        httpStatus = Number(headers[':status']);
        takeStatus(headers);
      });
      req.on('trailers', takeStatus);
      req.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > maxMessageBytes + MESSAGE_PREFIX) {
          settle(
            new GrpcStatusError(
              GRPC_CODE.RESOURCE_EXHAUSTED,
              `response from ${method} is larger than the limit of ${maxMessageBytes} bytes`,
            ),
          );
          return;
        }
        parts.push(chunk);
      });
      req.on('error', () => {}); // the outcome is decided in 'close'
      req.on('close', () => {
        if (settled) return;
        if (grpcStatus === undefined) {
          if (!gotResponse) {
            const code = req.rstCode;
            // REFUSED_STREAM (also what a GOAWAY means for streams above its last id): the server
            // never processed it, so it is safe to send again on a new connection.
            if (code === http2.constants.NGHTTP2_REFUSED_STREAM) {
              return settle(new Retryable(`stream for ${method} was refused`));
            }
            // The connection went away (the plugin stopped or restarted): Node then closes its
            // streams with CANCEL, which is not the server cancelling this call.
            const lost = s.destroyed || s.closed || code === undefined || code === http2.constants.NGHTTP2_NO_ERROR;
            return settle(
              new GrpcStatusError(
                lost || code !== http2.constants.NGHTTP2_CANCEL ? GRPC_CODE.UNAVAILABLE : GRPC_CODE.CANCELLED,
                lost
                  ? `the connection closed before ${method} answered`
                  : `stream for ${method} was reset by the server (HTTP/2 error ${code})`,
              ),
            );
          }
          if (httpStatus !== 200) {
            return settle(new GrpcStatusError(httpStatusToCode(httpStatus), `HTTP status ${httpStatus} from ${method}`));
          }
          return settle(new GrpcStatusError(GRPC_CODE.INTERNAL, `no grpc-status in the response from ${method}`));
        }
        const n = Number(grpcStatus);
        if (!isGrpcCode(n)) {
          return settle(new GrpcStatusError(GRPC_CODE.UNKNOWN, `invalid grpc-status ${grpcStatus.slice(0, 8)}`));
        }
        if (n !== GRPC_CODE.OK) return settle(new GrpcStatusError(n, grpcMessage ?? ''));
        const body = parts.length === 1 ? parts[0]! : Buffer.concat(parts, received);
        if (body.length < MESSAGE_PREFIX) {
          return settle(new GrpcStatusError(GRPC_CODE.INTERNAL, `no response message from ${method}`));
        }
        if (body[0] !== 0) {
          return settle(new GrpcStatusError(GRPC_CODE.INTERNAL, `compressed or invalid response message from ${method}`));
        }
        const len = body.readUInt32BE(1);
        if (len !== body.length - MESSAGE_PREFIX) {
          return settle(new GrpcStatusError(GRPC_CODE.INTERNAL, `response from ${method} is not exactly one message`));
        }
        settle(undefined, body.subarray(MESSAGE_PREFIX));
      });
      req.end(frameMessage(message));
    });
  }

  return {
    async unary(method, message, { timeoutMs, signal }) {
      const deadline = clock.now() + timeoutMs;
      if (signal?.aborted) throw new GrpcStatusError(GRPC_CODE.CANCELLED, `call to ${method} cancelled`);
      inFlight++;
      const onSession = async (): Promise<Buffer> => {
        const s = await getSession(deadline, signal);
        if (inFlight > 0) s.ref();
        try {
          return await attempt(s, method, message, deadline, signal);
        } catch (err) {
          if (err instanceof Retryable && session === s) session = undefined;
          throw err;
        }
      };
      try {
        return await withRetry(onSession, { ...REFUSED_BACKOFF, ...untilDeadline(deadline, signal) });
      } catch (err) {
        if (err instanceof GrpcStatusError) throw err;
        if (err instanceof Retryable) {
          throw new GrpcStatusError(GRPC_CODE.DEADLINE_EXCEEDED, `deadline exceeded calling ${method}`, { cause: err });
        }
        throw new GrpcStatusError(GRPC_CODE.CANCELLED, `call to ${method} cancelled`, { cause: err });
      } finally {
        inFlight--;
        if (inFlight === 0 && usable(session)) session.unref();
      }
    },

    async close() {
      closed = true;
      const s = session;
      session = undefined;
      if (s === undefined || s.destroyed) return;
      await new Promise<void>((resolve) => {
        s.once('close', () => resolve());
        // An idle session is unref'd; a caller awaiting close() must keep the process alive until
        // it is done, or Node exits mid-await and whatever the caller does next never happens.
        s.ref();
        s.close();
        setTimeout(() => s.destroy(), 1000).unref();
      });
    },
  };
}
