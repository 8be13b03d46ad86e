// gRPC status codes and the error that carries one across our transport (src/grpc/ only; the KMS
// plugin maps its own errors onto these in its server adapter).

export const GRPC_CODE = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type GrpcCode = (typeof GRPC_CODE)[keyof typeof GRPC_CODE];

const NAMES: readonly string[] = Object.keys(GRPC_CODE);

/** 'DEADLINE_EXCEEDED' for 4; 'CODE_<n>' for a value outside the table. */
export function grpcCodeName(code: number): string {
  return NAMES[code] ?? `CODE_${code}`;
}

export function isGrpcCode(n: number): n is GrpcCode {
  return Number.isInteger(n) && n >= 0 && n <= 16;
}

/** A non-OK gRPC status: what a handler throws to choose its status, and what the client rejects with. */
export class GrpcStatusError extends Error {
  readonly code: GrpcCode;

  constructor(code: GrpcCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'GrpcStatusError';
  }
}

// grpc-message is percent-encoded (the gRPC HTTP/2 spec): bytes outside 0x20..0x7E and '%' itself
// become %XX of their UTF-8 encoding. Decoding is lenient: a malformed escape is kept verbatim.

export function encodeGrpcMessage(message: string): string {
  let plain = true;
  for (let i = 0; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return message;
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out +=
      byte < 0x20 || byte > 0x7e || byte === 0x25
        ? '%' + byte.toString(16).toUpperCase().padStart(2, '0')
        : String.fromCharCode(byte);
  }
  return out;
}

export function decodeGrpcMessage(value: string): string {
  if (!value.includes('%')) return value;
  const src = Buffer.from(value, 'utf8');
  const out = Buffer.allocUnsafe(src.length);
  let n = 0;
  for (let i = 0; i < src.length; i++) {
    const hi = i + 2 < src.length ? hexValue(src[i + 1]!) : -1;
    const lo = hi >= 0 ? hexValue(src[i + 2]!) : -1;
    if (src[i] === 0x25 && lo >= 0) {
      out[n++] = (hi << 4) | lo;
      i += 2;
    } else {
      out[n++] = src[i]!;
    }
  }
  return out.toString('utf8', 0, n);
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}
