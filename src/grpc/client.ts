// A unary gRPC client over a UNIX socket that behaves like grpc-go with wait-for-ready, as
// kube-apiserver dials its KMS plugin: a missing or refusing socket is retried with short backoff
// until the call's deadline, and a lost connection (plugin restart) is re-dialled by the next call.
// HTTP/2 is our own (client-connection.ts); this file holds the gRPC rules: dialling, deadlines,
// cancellation, what may be sent again, and how a stream's end becomes a result or a status.

import net from 'node:net';
import {
  ClientConnection,
  STREAM_CANCELLED,
  STREAM_ENDED,
  STREAM_FAILED,
  STREAM_LOST,
  STREAM_REFUSED,
  STREAM_RESET,
  STREAM_TOO_LARGE,
  type ClientStream,
} from './client-connection.js';
import { CANCEL } from './h2-wire.js';
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
  let session: ClientConnection | undefined;
  let dialing: Promise<ClientConnection> | undefined;
  let inFlight = 0;
  let closed = false;

  function usable(c: ClientConnection | undefined): c is ClientConnection {
    return c !== undefined && c.usable;
  }

  /** One dial attempt: resolves with a connection on a connected socket, rejects on a socket error. */
  function dialOnce(): Promise<ClientConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(address);
      const onError = (err: Error): void => reject(err);
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.removeListener('error', onError);
        const c = new ClientConnection(socket, {
          authority,
          maxMessageBytes,
          onUnusable: (gone) => {
            if (session === gone) session = undefined;
          },
        });
        if (inFlight === 0) c.unref();
        resolve(c);
      });
    });
  }

  /** Retries end at the call's deadline, or when its caller gives up. */
  function untilDeadline(deadline: number, signal: AbortSignal | undefined): Partial<RetryOptions> {
    return { budgetMs: deadline - clock.now(), clock, ...(signal === undefined ? {} : { signal }) };
  }

  /** The open session, or a new one; a failed dial is what wait-for-ready retries. */
  async function sessionOrDial(): Promise<ClientConnection> {
    for (;;) {
      if (closed) throw new GrpcStatusError(GRPC_CODE.CANCELLED, 'the client is closed');
      if (usable(session)) return session;
      dialing ??= dialOnce().finally(() => {
        dialing = undefined;
      });
      const s = await dialing;
      if (closed) {
        s.close();
        continue;
      }
      if (!usable(session)) session = s;
      else if (session !== s) s.close();
    }
  }

  async function getSession(deadline: number, signal: AbortSignal | undefined): Promise<ClientConnection> {
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
    c: ClientConnection,
    method: string,
    message: Uint8Array,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      let settled = false;
      let stream: ClientStream | undefined;
      const settle = (err: Error | undefined, value?: Buffer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        stream?.cancel(); // a no-op once the stream is over
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
      const sink = { onClose: (s: ClientStream): void => settleFrom(s) };
      const settleFrom = (s: ClientStream): void => {
        if (settled) return;
        switch (s.state) {
          case STREAM_CANCELLED:
            return;
          case STREAM_REFUSED:
            // REFUSED_STREAM, above a GOAWAY's last id, or never sent: the server never processed it,
            // so it is safe to send again on a new connection.
            return settle(new Retryable(`stream for ${method} was refused`));
          case STREAM_TOO_LARGE:
            return settle(
              new GrpcStatusError(
                GRPC_CODE.RESOURCE_EXHAUSTED,
                `response from ${method} is larger than the limit of ${maxMessageBytes} bytes`,
              ),
            );
          case STREAM_LOST:
            // The connection went away (the plugin stopped or restarted).
            return settle(new GrpcStatusError(GRPC_CODE.UNAVAILABLE, `the connection closed before ${method} answered`));
          case STREAM_FAILED:
            return settle(new GrpcStatusError(GRPC_CODE.INTERNAL, `${s.error} (calling ${method})`));
          case STREAM_RESET:
            if (s.grpcStatus === undefined) {
              const code = s.rstCode;
              return settle(
                new GrpcStatusError(
                  code === CANCEL ? GRPC_CODE.CANCELLED : GRPC_CODE.UNAVAILABLE,
                  `stream for ${method} was reset by the server (HTTP/2 error ${code})`,
                ),
              );
            }
            break;
          case STREAM_ENDED:
            break;
        }
        settle(...outcome(s, method));
      };
      stream = c.request(method, formatGrpcTimeout(deadline - clock.now()), frameMessage(message), sink);
      if (settled) stream.cancel();
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
        // A refused call is sent again after a short wait: on this connection if it still takes
        // calls (a REFUSED_STREAM), on a new one if not (a GOAWAY took it out of `session`).
        return attempt(s, method, message, deadline, signal);
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
      const c = session;
      session = undefined;
      if (c === undefined) return;
      await c.shutdown(1000);
    },
  };
}

/** The result of a stream the server ended (or reset after its trailers): the message, or a status. */
function outcome(s: ClientStream, method: string): [Error | undefined, Buffer?] {
  const grpcStatus = s.grpcStatus;
  if (grpcStatus === undefined) {
    if (s.httpStatus !== 200) {
      return [new GrpcStatusError(httpStatusToCode(s.httpStatus), `HTTP status ${s.httpStatus} from ${method}`)];
    }
    return [new GrpcStatusError(GRPC_CODE.INTERNAL, `no grpc-status in the response from ${method}`)];
  }
  const n = Number(grpcStatus);
  if (!isGrpcCode(n)) return [new GrpcStatusError(GRPC_CODE.UNKNOWN, `invalid grpc-status ${grpcStatus.slice(0, 8)}`)];
  if (n !== GRPC_CODE.OK) return [new GrpcStatusError(n, decodeGrpcMessage(s.grpcMessage ?? ''))];
  const body = s.parts.length === 1 ? s.parts[0]! : Buffer.concat(s.parts, s.received);
  if (body.length < MESSAGE_PREFIX) {
    return [new GrpcStatusError(GRPC_CODE.INTERNAL, `no response message from ${method}`)];
  }
  if (body[0] !== 0) {
    return [new GrpcStatusError(GRPC_CODE.INTERNAL, `compressed or invalid response message from ${method}`)];
  }
  const len = body.readUInt32BE(1);
  if (len !== body.length - MESSAGE_PREFIX) {
    return [new GrpcStatusError(GRPC_CODE.INTERNAL, `response from ${method} is not exactly one message`)];
  }
  return [undefined, body.subarray(MESSAGE_PREFIX)];
}
