// The Node floor of a KMS v2 call, a reference for `npm run bench -- conformance` (not a plugin):
// `node dist/bench/node-floor.js SOCKET [--seal]` answers the load generator's Status, Encrypt and
// Decrypt with the least a Node process can do. It reads the socket, splits frames and writes one
// response per call. It does no HPACK decoding, keeps no stream state and checks next to nothing, so it
// must never face a real client; its one limit closes a connection that buffers more than 1 MiB or
// 1,024 unfinished streams, or sends a ciphertext it cannot open. With --seal, each Encrypt seals the
// plaintext with node:crypto AES-256-GCM (createCipheriv, a random nonce from a pool) and each Decrypt
// opens it, as the keyring backend does. Without --seal it answers with fixed bytes. So the rows show
// two things: what Node costs per call before any code of ours runs, and what the per-call node:crypto
// seal adds on top.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { frameMessage } from '../src/grpc/framing.js';
import {
  controlFrame,
  DEFAULT_WINDOW,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FRAME_HEADER,
  literalField,
  literalIndexedName,
  MAX_WINDOW,
  PREFACE,
  TYPE_DATA,
  TYPE_HEADERS,
  TYPE_PING,
  TYPE_SETTINGS,
  TYPE_WINDOW_UPDATE,
  u32Frame,
} from '../src/grpc/h2-wire.js';

const [socketPath, mode] = process.argv.slice(2);
if (socketPath === undefined || (mode !== undefined && mode !== '--seal')) {
  console.error('usage: node dist/bench/node-floor.js SOCKET [--seal]');
  process.exit(2);
}
const seal = mode === '--seal';
const KEY = randomBytes(32);
const KEY_ID = Buffer.from('node-floor');
const MAX_BUFFERED = 1 << 20;
const NONCE = 12;
const TAG = 16;
const nonces = randomBytes(NONCE * 4096);
let nonceAt = 0;

// HPACK without the dynamic table: ":status: 200" (static index 8), content-type as a literal with the
// static name 31, and the trailer grpc-status: 0 as a literal with a literal name.
const HEADERS_BLOCK = Buffer.concat([Buffer.from([0x88]), literalIndexedName(31, 'application/grpc')]);
const TRAILERS_BLOCK = literalField('grpc-status', '0');
const NO_PAYLOAD = Buffer.alloc(0);

function bytesField(field: number, value: Buffer): Buffer {
  const len: number[] = [];
  let n = value.length;
  while (n > 0x7f) {
    len.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  len.push(n);
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...len]), value]);
}

// Protobuf by hand rather than through src/proto: the floor runs none of the layers atrest is compared on.

/** The protobuf length-delimited fields of a message (every KMS v2 request field is one). */
function fields(message: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let at = 0;
  while (at < message.length) {
    const field = message[at++]! >> 3;
    let len = 0;
    for (let shift = 0; ; shift += 7) {
      const b = message[at++];
      if (b === undefined || shift > 21) throw new RangeError('malformed protobuf length');
      len |= (b & 0x7f) << shift;
      if (b < 0x80) break;
    }
    out.set(field, message.subarray(at, at + len));
    at += len;
  }
  return out;
}

function answer(message: Buffer): Buffer {
  if (message.length === 0) {
    const [version, healthz] = [Buffer.from('v2'), Buffer.from('ok')];
    return Buffer.concat([bytesField(1, version), bytesField(2, healthz), bytesField(3, KEY_ID)]);
  }
  const f = fields(message);
  const ciphertext = f.get(3) === undefined ? undefined : f.get(1)!;
  if (ciphertext !== undefined) {
    if (!seal) return bytesField(1, Buffer.alloc(32));
    const d = createDecipheriv('aes-256-gcm', KEY, ciphertext.subarray(0, NONCE));
    d.setAuthTag(ciphertext.subarray(ciphertext.length - TAG));
    const sealed = ciphertext.subarray(NONCE, ciphertext.length - TAG);
    return bytesField(1, Buffer.concat([d.update(sealed), d.final()]));
  }
  const plaintext = f.get(1) ?? Buffer.alloc(0);
  let sealed: Buffer;
  if (seal) {
    const nonce = nonces.subarray(nonceAt, nonceAt + NONCE);
    nonceAt += NONCE;
    if (nonceAt === nonces.length) {
      randomBytes(nonces.length).copy(nonces);
      nonceAt = 0;
    }
    const c = createCipheriv('aes-256-gcm', KEY, nonce);
    sealed = Buffer.concat([nonce, c.update(plaintext), c.final(), c.getAuthTag()]);
  } else {
    sealed = Buffer.alloc(NONCE + plaintext.length + TAG);
  }
  return Buffer.concat([bytesField(1, sealed), bytesField(2, KEY_ID)]);
}

function response(id: number, message: Buffer): Buffer {
  return Buffer.concat([
    controlFrame(TYPE_HEADERS, FLAG_END_HEADERS, id, HEADERS_BLOCK),
    controlFrame(TYPE_DATA, 0, id, frameMessage(message)),
    controlFrame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, id, TRAILERS_BLOCK),
  ]);
}

function serve(socket: Socket): void {
  let pending: Buffer = Buffer.alloc(0);
  let prefaceSeen = false;
  const bodies = new Map<number, Buffer>();
  const settings = controlFrame(TYPE_SETTINGS, 0, 0, NO_PAYLOAD);
  socket.write(Buffer.concat([settings, u32Frame(TYPE_WINDOW_UPDATE, 0, MAX_WINDOW - DEFAULT_WINDOW)]));
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    if (pending.length > MAX_BUFFERED || bodies.size > 1024) {
      socket.destroy();
      return;
    }
    if (!prefaceSeen) {
      if (pending.length < PREFACE.length) return;
      pending = pending.subarray(PREFACE.length);
      prefaceSeen = true;
    }
    const out: Buffer[] = [];
    while (pending.length >= FRAME_HEADER) {
      const length = pending.readUIntBE(0, 3);
      if (pending.length < FRAME_HEADER + length) break;
      const type = pending[3]!;
      const flags = pending[4]!;
      const id = pending.readUInt32BE(5) & 0x7fff_ffff;
      const payload = pending.subarray(FRAME_HEADER, FRAME_HEADER + length);
      pending = pending.subarray(FRAME_HEADER + length);
      const ack = (flags & FLAG_ACK) !== 0;
      if (type === TYPE_SETTINGS && !ack) out.push(controlFrame(TYPE_SETTINGS, FLAG_ACK, 0, NO_PAYLOAD));
      if (type === TYPE_PING && !ack) out.push(controlFrame(TYPE_PING, FLAG_ACK, 0, payload));
      if (type !== TYPE_DATA) continue;
      if (length > 0) out.push(u32Frame(TYPE_WINDOW_UPDATE, 0, length));
      const body = bodies.has(id) ? Buffer.concat([bodies.get(id)!, payload]) : payload;
      if (body.length > MAX_BUFFERED) {
        socket.destroy();
        return;
      }
      if ((flags & FLAG_END_STREAM) === 0) {
        bodies.set(id, Buffer.from(body));
        continue;
      }
      bodies.delete(id);
      let message: Buffer;
      try {
        message = answer(body.subarray(5));
      } catch {
        socket.destroy();
        return;
      }
      out.push(response(id, message));
    }
    if (pending.length > 0) pending = Buffer.from(pending);
    if (out.length > 0) socket.write(out.length === 1 ? out[0]! : Buffer.concat(out));
  });
}

rmSync(socketPath, { force: true });
createServer(serve).listen(socketPath);
process.on('SIGTERM', () => process.exit(0));
