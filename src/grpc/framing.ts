// gRPC message framing and the grpc-timeout header, shared by the server and the client:
// each message is [compressed-flag 1][length 4, big-endian][message bytes].

export const MESSAGE_PREFIX = 5;

/** One framed message in a single buffer (one allocation, one copy; payloads here are small). */
export function frameMessage(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(MESSAGE_PREFIX + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, MESSAGE_PREFIX);
  return out;
}

const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 0.001,
  n: 0.000_001,
};

/** grpc-timeout: 1-8 ASCII digits and a unit (H M S m u n). Returns milliseconds, or undefined if malformed. */
export function parseGrpcTimeout(value: string): number | undefined {
  const len = value.length;
  if (len < 2 || len > 9) return undefined;
  const unit = TIMEOUT_UNIT_MS[value[len - 1]!];
  if (unit === undefined) return undefined;
  let n = 0;
  for (let i = 0; i < len - 1; i++) {
    const d = value.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return undefined;
    n = n * 10 + d;
  }
  return n * unit;
}

/** Milliseconds as a grpc-timeout value, at most 8 digits (rounding up so it never shortens). */
export function formatGrpcTimeout(ms: number): string {
  const whole = Math.max(0, Math.ceil(ms));
  if (whole < 100_000_000) return `${whole}m`;
  const s = Math.ceil(whole / 1000);
  if (s < 100_000_000) return `${s}S`;
  return `${Math.min(99_999_999, Math.ceil(s / 3600))}H`;
}
