// The facts behind the h2spec allowlist (docs/grpc.md, "HTTP/2 conformance (h2spec)"): h2spec's
// requests are not gRPC, so the lean server answers them trailers-only at their HEADERS, with no DATA,
// and the frame a test is about then reaches a stream already closed. conformance/h2spec.mjs runs h2spec.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { GRPC_CODE } from '../../src/grpc/status.js';
import { startFixture } from './fixture.js';
import {
  FRAME,
  RawH2Client,
  frame,
  grpcFrame,
  grpcRequestBlock,
  hpackIndexed,
  hpackLiteral,
  messageOf,
  statusOf,
} from './raw-h2.js';

const fx = await startFixture({
  maxMessageBytes: 1024,
  handlers: new Map([['/t.Test/Echo', async (call) => call.message]]),
});
after(() => fx.cleanup());

const localhost = hpackLiteral('without', 1, 'localhost');
const NO_ERROR = 0x0;
const END_STREAM_END_HEADERS = 0x5;
const END_HEADERS = 0x4;

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** The code of the first RST_STREAM the server sends on stream `id` (read from the raw bytes). */
function rstOn(c: RawH2Client, id: number): Promise<number> {
  let buf = Buffer.alloc(0);
  return new Promise((resolve, reject) => {
    c.socket.once('close', () => reject(new Error(`connection closed before RST_STREAM on stream ${id}`)));
    c.socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
        const len = buf.readUIntBE(0, 3);
        if (buf[3] === FRAME.RST_STREAM && (buf.readUInt32BE(5) & 0x7fff_ffff) === id) resolve(buf.readUInt32BE(9));
        buf = buf.subarray(9 + len);
      }
    });
  });
}

async function withClient(fn: (c: RawH2Client) => Promise<void>): Promise<void> {
  const c = await RawH2Client.connect(fx.address);
  try {
    await fn(c);
  } finally {
    c.close();
  }
}

test("h2spec's GET is answered trailers-only at its HEADERS: one HEADERS frame, no DATA (generic/2/2, 2/3, 5.1.2/1)", () =>
  withClient(async (c) => {
    const done = c.expect(1);
    const get = Buffer.concat([hpackIndexed(2), hpackIndexed(6), hpackIndexed(4), localhost]); // GET http /
    c.write(frame(FRAME.HEADERS, END_STREAM_END_HEADERS, 1, get));
    const r = await done;
    assert.equal(r.headers.length, 1);
    assert.equal(r.headers[0]![':status'], '200');
    assert.equal(statusOf(r), GRPC_CODE.UNIMPLEMENTED);
    assert.equal(r.data.length, 0);
  }));

test('a POST without content-type application/grpc is refused at its HEADERS, before any DATA (8.1.2.6/1, /2)', () =>
  withClient(async (c) => {
    const done = c.expect(1);
    const post = Buffer.concat([hpackIndexed(3), hpackIndexed(6), hpackIndexed(4), localhost, hpackLiteral('without', 28, '1')]);
    c.write(frame(FRAME.HEADERS, END_HEADERS, 1, post)); // no END_STREAM, no DATA yet
    const r = await done;
    assert.equal(statusOf(r), GRPC_CODE.INVALID_ARGUMENT);
    assert.equal(r.data.length, 0);
  }));

test('a GET still open is answered, then reset with NO_ERROR; later frames on it are ignored (6.9/2, 6.9.1/3)', () =>
  withClient(async (c) => {
    const rst = rstOn(c, 1);
    const answered = c.expect(1);
    const get = Buffer.concat([hpackIndexed(2), hpackIndexed(6), hpackIndexed(4), localhost]); // GET http /
    c.write(frame(FRAME.HEADERS, END_HEADERS, 1, get)); // no END_STREAM: the client's half stays open
    assert.equal(statusOf(await answered), GRPC_CODE.UNIMPLEMENTED);
    assert.equal(await rst, NO_ERROR, 'RFC 9113 §8.1: a response before the request ends closes it with NO_ERROR');
    // What h2spec sends next reaches a stream we reset: ignored (RFC 9113 §5.1), the connection serves on.
    const next = c.expect(3);
    c.write(
      Buffer.concat([
        frame(FRAME.WINDOW_UPDATE, 0, 1, u32(0)),
        frame(FRAME.WINDOW_UPDATE, 0, 1, u32(0x7fff_ffff)),
        frame(FRAME.WINDOW_UPDATE, 0, 1, u32(0x7fff_ffff)),
        frame(FRAME.HEADERS, END_HEADERS, 3, grpcRequestBlock('/t.Test/Echo', localhost)),
        frame(FRAME.DATA, 0x1, 3, grpcFrame(Buffer.from('still here'))),
      ]),
    );
    assert.equal(messageOf(await next).toString(), 'still here');
  }));
