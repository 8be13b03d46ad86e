// The one place KMS client calls turn gRPC failures into AtrestError ERR_KMS_CALL_FAILED.

import { AtrestError } from '../errors.js';
import type { GrpcClient } from '../grpc/client.js';
import { GrpcStatusError, grpcCodeName } from '../grpc/status.js';
import type { MessageCodec, MessageInit, MessageOf, Schema } from '../proto/wire.js';

export async function callKms<Req extends Schema, Res extends Schema>(
  client: GrpcClient,
  method: string,
  request: MessageCodec<Req>,
  message: MessageInit<Req>,
  response: MessageCodec<Res>,
  timeoutMs: number,
): Promise<MessageOf<Res>> {
  let bytes: Buffer;
  try {
    bytes = await client.unary(method, request.encode(message), { timeoutMs });
  } catch (err) {
    const detail =
      err instanceof GrpcStatusError ? `${grpcCodeName(err.code)}: ${err.message}` : (err as Error)?.message;
    throw new AtrestError('ERR_KMS_CALL_FAILED', `KMS call ${method} failed: ${detail}`, { cause: err });
  }
  try {
    return response.decode(bytes);
  } catch (err) {
    throw new AtrestError('ERR_KMS_CALL_FAILED', `KMS call ${method} returned an invalid ${response.name}`, {
      cause: err,
    });
  }
}
