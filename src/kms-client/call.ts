// The one place KMS client calls turn gRPC failures into AtrestError ERR_KMS_CALL_FAILED.

import { AtrestError } from '../errors.js';
import { createGrpcClient, type GrpcClient } from '../grpc/client.js';
import { parseUnixEndpoint } from '../grpc/endpoint.js';
import { GrpcStatusError, grpcCodeName } from '../grpc/status.js';
import type { MessageCodec, MessageInit, MessageOf, Schema } from '../proto/wire.js';

/**
 * Connects (lazily) to a plugin endpoint as kube-apiserver does. An abstract socket (`unix:///@name`)
 * is refused: Node.js dials abstract names NUL-padded, which never matches a Go plugin's exact name.
 */
export function dialKms(endpointUrl: string, authority: string | undefined): GrpcClient {
  const endpoint = parseUnixEndpoint(endpointUrl);
  if (endpoint.abstract) {
    throw new AtrestError(
      'ERR_SOCKET_ENDPOINT',
      `abstract socket ${endpoint.path} is not supported: Node.js dials abstract names NUL-padded, ` +
        'so it cannot reach a plugin bound to the exact name; use a socket file',
    );
  }
  return createGrpcClient({
    address: endpoint.address,
    ...(authority === undefined ? {} : { authority }),
  });
}

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
