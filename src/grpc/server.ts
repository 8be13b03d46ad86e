// A unary-only gRPC server for UNIX sockets: framing, status trailers, deadlines and a bounded request
// size, served by our own HTTP/2 implementation (lean-server.ts). The caller owns the net.Server and
// hands each accepted socket to handleConnection. Knows nothing about KMS: handlers are plain async
// functions from request bytes to response bytes.

import type { Socket } from 'node:net';
import type { Logger } from '../logger.js';
import type { GrpcCode, GrpcStatusError } from './status.js';
import { createLeanGrpcServer } from './lean-server.js';

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
}

export interface GrpcServer {
  /** Serves one accepted connection; the caller owns net.Server, bind and the socket file. */
  handleConnection(socket: Socket): void;
  /** Stops new streams (GOAWAY), lets in-flight calls finish for up to graceMs, then destroys sessions. */
  close(graceMs: number): Promise<void>;
}

export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  return createLeanGrpcServer(options);
}
