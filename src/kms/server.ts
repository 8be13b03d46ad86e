// The gRPC adapter of the plugin: decodes v1beta1/v2 requests, calls KmsService, encodes answers,
// logs one line per call, and is the ONLY place where atrest errors become gRPC statuses. Also binds
// the UNIX socket (socket.ts) to the transport (src/grpc/) and shuts both down.
//
// Status mapping (documented in docs/plugin.md):
//   malformed protobuf, wrong v1 version, empty plaintext/ciphertext, v2 key_id that disagrees with
//   the ciphertext, ciphertext not in our format, oversized  -> INVALID_ARGUMENT
//   key id unknown to the backend (retired / other keyring)  -> NOT_FOUND
//   authentication failure (tampered or wrong key material)  -> DATA_LOSS
//   backend: user-induced -> FAILED_PRECONDITION, throttled -> RESOURCE_EXHAUSTED,
//            unavailable -> UNAVAILABLE, corruption -> DATA_LOSS, other -> INTERNAL
//   anything unexpected -> INTERNAL with a generic message (details in the log only)

import type { Socket } from 'node:net';
import { AtrestError, BackendError, DecryptionFailedError, type ErrorCode } from '../errors.js';
import type { Logger } from '../logger.js';
import * as v1 from '../proto/kms-v1beta1.js';
import * as v2 from '../proto/kms-v2.js';
import { GRPC_CODE, GrpcStatusError, grpcCodeName, type GrpcCode } from '../grpc/status.js';
import {
  createGrpcServer,
  type CallRecord,
  type UnaryCall,
  type UnaryHandler,
} from '../grpc/server.js';
import type { UnixEndpoint } from '../grpc/endpoint.js';
import type { KmsService } from './service.js';
import { listenUnix, prepareSocketPath, type UnixListener } from './socket.js';

/** Requests and answers above this are refused (the API server's messages are tiny). */
export const KMS_MAX_MESSAGE_BYTES = 64 * 1024;
/** uids are logged, never trusted: keep at most this many characters of one. */
const UID_LOG_MAX = 64;

const CODE_BY_ERROR: Partial<Record<ErrorCode, GrpcCode>> = {
  ERR_PROTO_MALFORMED: GRPC_CODE.INVALID_ARGUMENT,
  ERR_FORMAT_PREFIX: GRPC_CODE.INVALID_ARGUMENT,
  ERR_FORMAT_TRUNCATED: GRPC_CODE.INVALID_ARGUMENT,
  ERR_FORMAT_MALFORMED: GRPC_CODE.INVALID_ARGUMENT,
  ERR_REQUEST_INVALID: GRPC_CODE.INVALID_ARGUMENT,
  ERR_REQUEST_TOO_LARGE: GRPC_CODE.INVALID_ARGUMENT,
  ERR_KEY_ID_MISMATCH: GRPC_CODE.INVALID_ARGUMENT,
  ERR_KEY_UNKNOWN: GRPC_CODE.NOT_FOUND,
  ERR_DECRYPTION_FAILED: GRPC_CODE.DATA_LOSS,
  ERR_UNHEALTHY: GRPC_CODE.UNAVAILABLE,
};

const CODE_BY_BACKEND_KIND: Record<BackendError['kind'], GrpcCode> = {
  'user-induced': GRPC_CODE.FAILED_PRECONDITION,
  throttled: GRPC_CODE.RESOURCE_EXHAUSTED,
  unavailable: GRPC_CODE.UNAVAILABLE,
  corruption: GRPC_CODE.DATA_LOSS,
  other: GRPC_CODE.INTERNAL,
};

/** The one conversion from atrest errors to gRPC statuses. Messages never carry secrets. */
export function toGrpcStatus(err: unknown): GrpcStatusError {
  if (err instanceof GrpcStatusError) return err;
  if (err instanceof BackendError) {
    return new GrpcStatusError(CODE_BY_BACKEND_KIND[err.kind], err.message, { cause: err });
  }
  if (err instanceof DecryptionFailedError) {
    return new GrpcStatusError(
      GRPC_CODE.DATA_LOSS,
      'decryption failed: the ciphertext was altered or was not wrapped by this key',
      { cause: err },
    );
  }
  if (err instanceof AtrestError) {
    return new GrpcStatusError(CODE_BY_ERROR[err.code] ?? GRPC_CODE.INTERNAL, err.message, {
      cause: err,
    });
  }
  return new GrpcStatusError(GRPC_CODE.INTERNAL, 'internal error', { cause: err });
}

interface Handled {
  readonly response: Uint8Array;
  readonly uid?: string;
  readonly keyID?: string;
}

/** `call` is passed on to the service as its CallOptions: its signal is created only if a backend reads it. */
type Handler = (message: Buffer, call: UnaryCall) => Promise<Handled>;

function loggableUID(uid: string): string {
  return uid.length > UID_LOG_MAX ? uid.slice(0, UID_LOG_MAX) + '…' : uid;
}

function handlersFor(service: KmsService): Record<string, Handler> {
  return {
    [v1.V1BETA1_METHODS.version]: async (m) => {
      const req = v1.VersionRequest.decode(m);
      const r = service.version(req.version);
      return {
        response: v1.VersionResponse.encode({
          version: r.version,
          runtime_name: r.runtimeName,
          runtime_version: r.runtimeVersion,
        }),
      };
    },
    [v1.V1BETA1_METHODS.encrypt]: async (m, call) => {
      const req = v1.EncryptRequest.decode(m);
      const cipher = await service.encryptV1(req.version, req.plain, call);
      return { response: v1.EncryptResponse.encode({ cipher }) };
    },
    [v1.V1BETA1_METHODS.decrypt]: async (m, call) => {
      const req = v1.DecryptRequest.decode(m);
      const plain = await service.decryptV1(req.version, req.cipher, call);
      return { response: v1.DecryptResponse.encode({ plain }) };
    },
    [v2.V2_METHODS.status]: async (m) => {
      v2.StatusRequest.decode(m);
      const s = await service.status();
      return {
        response: v2.StatusResponse.encode({
          version: s.version,
          healthz: s.healthz,
          key_id: s.keyID,
        }),
        keyID: s.keyID,
      };
    },
    [v2.V2_METHODS.encrypt]: async (m, call) => {
      const req = v2.EncryptRequest.decode(m);
      const r = await service.encrypt(req.plaintext, req.uid, call);
      return {
        response: v2.EncryptResponse.encode({
          ciphertext: r.ciphertext,
          key_id: r.keyID,
          annotations: r.annotations,
        }),
        uid: req.uid,
        keyID: r.keyID,
      };
    },
    [v2.V2_METHODS.decrypt]: async (m, call) => {
      const req = v2.DecryptRequest.decode(m);
      const plaintext = await service.decrypt(
        {
          ciphertext: req.ciphertext,
          uid: req.uid,
          keyID: req.key_id,
          annotations: req.annotations,
        },
        call,
      );
      return {
        response: v2.DecryptResponse.encode({ plaintext }),
        uid: req.uid,
        keyID: req.key_id,
      };
    },
  };
}

/** Client mistakes log at warn; faults on our side at error; successes at info (debug for polls). */
function levelFor(method: string, code: GrpcCode): 'debug' | 'info' | 'warn' | 'error' {
  if (code === GRPC_CODE.OK) {
    return method === v2.V2_METHODS.status || method === v1.V1BETA1_METHODS.version
      ? 'debug'
      : 'info';
  }
  const clientSide: readonly GrpcCode[] = [
    GRPC_CODE.INVALID_ARGUMENT,
    GRPC_CODE.NOT_FOUND,
    GRPC_CODE.FAILED_PRECONDITION,
    GRPC_CODE.RESOURCE_EXHAUSTED,
    // The client gave up (or its deadline passed) before the answer: not a fault of ours.
    GRPC_CODE.CANCELLED,
    GRPC_CODE.DEADLINE_EXCEEDED,
  ];
  return clientSide.includes(code) ? 'warn' : 'error';
}

/** The transport's handler table: one entry per KMS method, all errors mapped by toGrpcStatus. */
export function createKmsHandlers(service: KmsService, logger: Logger): Map<string, UnaryHandler> {
  const table = new Map<string, UnaryHandler>();
  for (const [method, handle] of Object.entries(handlersFor(service))) {
    table.set(method, async (call: UnaryCall) => {
      const started = performance.now();
      let handled: Handled | undefined;
      let code: GrpcCode = GRPC_CODE.OK;
      let failure: GrpcStatusError | undefined;
      try {
        handled = await handle(call.message, call);
        // Cancelled meanwhile (client reset, deadline, connection closed): the answer goes nowhere.
        if (call.abortReason !== undefined) failure = call.abortReason;
        return handled.response;
      } catch (err) {
        // A backend call stopped by the cancellation fails too: report why it was cancelled.
        failure = call.abortReason ?? toGrpcStatus(err);
        throw failure;
      } finally {
        if (failure !== undefined) code = failure.code;
        const level = levelFor(method, code);
        // At --log-level warn a successful call writes nothing: its fields are not built either.
        if (logger.enabled?.(level) !== false) {
          logCall(logger, level, method, call, handled, started, code, failure);
        }
      }
    });
  }
  return table;
}

/** The one line per call (a function of its own: nothing is allocated when the level is off). */
function logCall(
  logger: Logger,
  level: 'debug' | 'info' | 'warn' | 'error',
  method: string,
  call: UnaryCall,
  handled: Handled | undefined,
  started: number,
  code: GrpcCode,
  failure: GrpcStatusError | undefined,
): void {
  const uid = handled?.uid ?? peekUID(method, call.message);
  logger[level]('kms call', {
    method,
    uid: uid === undefined ? undefined : loggableUID(uid),
    keyID: handled?.keyID,
    durationMs: Math.round((performance.now() - started) * 1000) / 1000,
    outcome: grpcCodeName(code),
    error: failure?.message,
  });
}

/** Best effort: the uid of a v2 request that failed, for the log line. */
function peekUID(method: string, message: Buffer): string | undefined {
  try {
    if (method === v2.V2_METHODS.encrypt) return v2.EncryptRequest.decode(message).uid;
    if (method === v2.V2_METHODS.decrypt) return v2.DecryptRequest.decode(message).uid;
  } catch {
    // malformed: nothing to log
  }
  return undefined;
}

export interface KmsServerOptions {
  readonly endpoint: UnixEndpoint;
  readonly service: KmsService;
  readonly logger: Logger;
  readonly socketMode?: number;
  readonly socketGid?: number;
  readonly onCall?: (record: CallRecord) => void;
  readonly maxMessageBytes?: number;
}

export interface KmsServer {
  readonly endpoint: UnixEndpoint;
  /** Whether our socket file is still at its path (readiness). */
  socketPresent(): Promise<boolean>;
  /** Re-creates the socket if someone deleted it; true if it did (see socket.ts). */
  restoreSocket(): Promise<boolean>;
  /** Stops accepting, removes the socket, lets in-flight calls finish for up to `graceMs`. */
  close(graceMs: number): Promise<void>;
}

/** Prepares the socket path, binds it and serves both KMS APIs on it. */
export async function startKmsServer(options: KmsServerOptions): Promise<KmsServer> {
  const grpc = createGrpcServer({
    handlers: createKmsHandlers(options.service, options.logger),
    maxMessageBytes: options.maxMessageBytes ?? KMS_MAX_MESSAGE_BYTES,
    logger: options.logger,
    ...(options.onCall === undefined ? {} : { onCall: options.onCall }),
  });
  await prepareSocketPath(options.endpoint);
  const listener: UnixListener = await listenUnix(
    options.endpoint,
    {
      ...(options.socketMode === undefined ? {} : { mode: options.socketMode }),
      ...(options.socketGid === undefined ? {} : { gid: options.socketGid }),
    },
    (socket: Socket) => grpc.handleConnection(socket),
  );
  return {
    endpoint: options.endpoint,
    socketPresent: () => listener.present(),
    restoreSocket: () => listener.restore(),
    async close(graceMs) {
      await listener.close();
      await grpc.close(graceMs);
    },
  };
}
