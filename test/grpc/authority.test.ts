// The three :authority values real kube-apiservers send, sent byte for byte by a raw HTTP/2 client.

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
  hpackSizeUpdate,
  messageOf,
  statusOf,
  PREFACE,
} from './raw-h2.js';

const METHOD = '/v1beta1.KeyManagementService/Version';
const seen: string[] = [];
const fx = await startFixture({
  maxMessageBytes: 64 * 1024,
  handlers: new Map([
    [
      METHOD,
      async (call) => {
        seen.push(call.authority);
        return Buffer.concat([Buffer.from('echo:'), call.message]);
      },
    ],
  ]),
});
after(() => fx.cleanup());

const FORMS = [
  ['the raw socket path (grpc-go before mid-2023)', '/var/run/kms.sock', '/var/run/kms.sock'],
  ['the percent-encoded path (newer grpc-go)', '%2Fvar%2Frun%2Fkms.sock', '/var/run/kms.sock'],
  ['localhost (kube-apiserver 1.32+ v2 client)', 'localhost', 'localhost'],
] as const;

for (const [label, sent, expected] of FORMS) {
  for (const huffman of [false, true]) {
    test(`serves ${label} as sent${huffman ? ' with Huffman coding' : ''}, and the handler sees ${expected}`, async () => {
      const c = await RawH2Client.connect(fx.address);
      try {
        seen.length = 0;
        const r = await c.request(1, grpcRequestBlock(METHOD, hpackLiteral('without', 1, sent, huffman)), grpcFrame(Buffer.from('hi')));
        assert.equal(r.rstCode, undefined, 'the stream was not reset');
        assert.equal(statusOf(r), GRPC_CODE.OK);
        assert.equal(messageOf(r).toString(), 'echo:hi');
        assert.deepEqual(seen, [expected]);
      } finally {
        c.close();
      }
    });
  }
}

test('keeps the HPACK table in step when the raw path is indexed on the first request and referenced later', async () => {
  const c = await RawH2Client.connect(fx.address);
  try {
    seen.length = 0;
    // 1: literal with incremental indexing -> dynamic index 62.
    const r1 = await c.request(1, grpcRequestBlock(METHOD, hpackLiteral('incremental', 1, '/var/run/kms.sock', true)), grpcFrame(Buffer.from('1')));
    // 2: referenced by index.
    const r2 = await c.request(3, grpcRequestBlock(METHOD, hpackIndexed(62)), grpcFrame(Buffer.from('2')));
    // 3: a new entry (added after the authority is referenced) pushes the authority to index 63.
    const r3 = await c.request(
      5,
      grpcRequestBlock(METHOD, hpackIndexed(62), [hpackLiteral('incremental', 'x-trace', 'abc')]),
      grpcFrame(Buffer.from('3')),
    );
    const r4 = await c.request(7, grpcRequestBlock(METHOD, hpackIndexed(63), [hpackIndexed(62)]), grpcFrame(Buffer.from('4')));
    for (const r of [r1, r2, r3, r4]) {
      assert.equal(r.rstCode, undefined);
      assert.equal(statusOf(r), GRPC_CODE.OK);
    }
    assert.deepEqual(seen, Array(4).fill('/var/run/kms.sock'));
  } finally {
    c.close();
  }
});

test('handles a header block split over HEADERS (padded, with priority) and CONTINUATION', async () => {
  const c = await RawH2Client.connect(fx.address);
  try {
    seen.length = 0;
    const block = grpcRequestBlock(METHOD, hpackLiteral('incremental', 1, '/run/kms/plugin.sock', true));
    const cut = 3; // the authority ends up in the CONTINUATION frame
    const pad = 7;
    const headersPayload = Buffer.concat([
      Buffer.from([pad]),
      Buffer.from([0x80, 0, 0, 0, 16]), // exclusive dependency on stream 0, weight 16
      block.subarray(0, cut),
      Buffer.alloc(pad),
    ]);
    const done = c.expect(1);
    c.write(
      Buffer.concat([
        frame(FRAME.HEADERS, 0x8 | 0x20, 1, headersPayload),
        frame(FRAME.CONTINUATION, 0x4, 1, block.subarray(cut)),
        frame(FRAME.DATA, 0x1, 1, grpcFrame(Buffer.from('x'))),
      ]),
    );
    const r = await done;
    assert.equal(statusOf(r), GRPC_CODE.OK);
    const r2 = await c.request(3, grpcRequestBlock(METHOD, hpackIndexed(62)), grpcFrame(Buffer.from('y')));
    assert.equal(statusOf(r2), GRPC_CODE.OK);
    assert.deepEqual(seen, ['/run/kms/plugin.sock', '/run/kms/plugin.sock']);
  } finally {
    c.close();
  }
});

test('works when frames arrive one byte at a time', async () => {
  const c = await RawH2Client.connect(fx.address, false);
  try {
    seen.length = 0;
    const block = grpcRequestBlock(METHOD, hpackLiteral('incremental', 1, '/var/run/kms.sock'));
    const bytes = Buffer.concat([
      PREFACE,
      frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0)),
      frame(FRAME.SETTINGS, 0x1, 0, Buffer.alloc(0)), // ack of the server's SETTINGS
      frame(FRAME.HEADERS, 0x4, 1, block),
      frame(FRAME.DATA, 0x1, 1, grpcFrame(Buffer.from('slow'))),
      frame(FRAME.HEADERS, 0x4, 3, Buffer.concat([hpackSizeUpdate(0), grpcRequestBlock(METHOD, hpackLiteral('incremental', 1, '/a/b'))])),
      frame(FRAME.DATA, 0x1, 3, grpcFrame(Buffer.from('x'))),
    ]);
    const r1 = c.expect(1);
    const r3 = c.expect(3);
    for (const b of bytes) {
      c.socket.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(statusOf(await r1), GRPC_CODE.OK);
    assert.equal(messageOf(await r1).toString(), 'echo:slow');
    assert.equal(statusOf(await r3), GRPC_CODE.OK);
    assert.deepEqual(seen, ['/var/run/kms.sock', '/a/b']);
  } finally {
    c.close();
  }
});

test('a malformed header block ends that connection only; the server keeps serving', async () => {
  const bad = await RawH2Client.connect(fx.address);
  const done = bad.expect(1);
  bad.write(frame(FRAME.HEADERS, 0x5, 1, Buffer.from([0xbf, 0xff, 0xff]))); // index far beyond any table
  const r = await done;
  assert.equal(statusOf(r), undefined, 'no gRPC status for a block nobody can decode');
  assert.ok(r.connectionLost || r.rstCode !== undefined);
  bad.close();

  const c = await RawH2Client.connect(fx.address);
  try {
    const ok = await c.request(1, grpcRequestBlock(METHOD, hpackLiteral('without', 1, '/var/run/kms.sock')), grpcFrame(Buffer.from('z')));
    assert.equal(statusOf(ok), GRPC_CODE.OK);
  } finally {
    c.close();
  }
});

test('a client that does not speak HTTP/2 is dropped; the server keeps serving', async () => {
  const junk = await RawH2Client.connect(fx.address, false);
  junk.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await new Promise<void>((resolve) => junk.socket.once('close', () => resolve()));
  const c = await RawH2Client.connect(fx.address);
  try {
    const ok = await c.request(1, grpcRequestBlock(METHOD, hpackLiteral('without', 1, 'localhost')), grpcFrame(Buffer.from('z')));
    assert.equal(statusOf(ok), GRPC_CODE.OK);
  } finally {
    c.close();
  }
});
