// The lean HTTP/2 transport (src/grpc/lean-server.ts) beyond the server, :authority and close suites
// (which run against it too): what only a hand-written HTTP/2 stack can get wrong: flow control both
// ways, many concurrent streams, padding, broken or vanishing clients.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { GRPC_CODE } from '../../src/grpc/status.js';
import { createGrpcClient } from '../../src/grpc/client.js';
import { startFixture } from './fixture.js';
import {
  FRAME,
  PREFACE,
  RawH2Client,
  frame,
  grpcFrame,
  grpcRequestBlock,
  hpackLiteral,
  messageOf,
  statusOf,
  type RawResponse,
} from './raw-h2.js';

const LIMIT = 64 * 1024;
const fx = await startFixture({
  maxMessageBytes: LIMIT,
  handlers: new Map([
    ['/t.Test/Echo', async (call) => call.message],
    ['/t.Test/Authority', async (call) => Buffer.from(call.authority)],
    [
      '/t.Test/Wait',
      (call) => new Promise<Uint8Array>((resolve) => setTimeout(() => resolve(call.message), 20)),
    ],
  ]),
});
const client = createGrpcClient({ address: fx.address });
after(async () => {
  await client.close();
  await fx.cleanup();
});

const localhost = hpackLiteral('without', 1, 'localhost');
const echoBlock = grpcRequestBlock('/t.Test/Echo', localhost);

async function stillServes(): Promise<void> {
  assert.deepEqual(await client.unary('/t.Test/Echo', Buffer.from('alive'), { timeoutMs: 2000 }), Buffer.from('alive'));
}

test('round-trips a message of exactly the 64 KiB limit both ways, beyond the 65,535-byte default windows', async () => {
  const big = Buffer.alloc(LIMIT);
  for (let i = 0; i < big.length; i++) big[i] = i * 31;
  assert.deepEqual(await client.unary('/t.Test/Echo', big, { timeoutMs: 5000 }), big);
  // Several at once share the connection window.
  const all = await Promise.all([1, 2, 3, 4].map((n) => client.unary('/t.Test/Echo', big.subarray(n), { timeoutMs: 5000 })));
  all.forEach((out, i) => assert.deepEqual(out, big.subarray(i + 1)));
});

test('refuses a message one byte over the limit with RESOURCE_EXHAUSTED and keeps the connection usable', async () => {
  await assert.rejects(client.unary('/t.Test/Echo', Buffer.alloc(LIMIT + 1), { timeoutMs: 5000 }), (err: unknown) => {
    assert.equal((err as { code?: number }).code, GRPC_CODE.RESOURCE_EXHAUSTED);
    return true;
  });
  await stillServes();
});

test('holds a response back until the client opens its window, then sends the rest', async () => {
  const c = await RawH2Client.connect(fx.address, false);
  try {
    // INITIAL_WINDOW_SIZE 10: the 5-byte prefix + 5 bytes go out, the rest waits for WINDOW_UPDATE.
    const settings = Buffer.alloc(6);
    settings.writeUInt16BE(0x4, 0);
    settings.writeUInt32BE(10, 2);
    c.autoAck = true;
    const done = c.expect(1);
    c.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0, settings)]));
    c.write(Buffer.concat([frame(FRAME.HEADERS, 0x4, 1, echoBlock), frame(FRAME.DATA, 0x1, 1, grpcFrame(Buffer.from('0123456789abcdef')))]));
    await c.until(() => c.received(1) >= 10);
    await c.ping(); // anything sent beyond the window would have arrived before the ACK
    assert.equal(c.received(1), 10, 'only the window went out');
    const inc = Buffer.alloc(4);
    inc.writeUInt32BE(100, 0);
    c.write(frame(FRAME.WINDOW_UPDATE, 0, 1, inc));
    const r = await done;
    assert.equal(statusOf(r), GRPC_CODE.OK);
    assert.equal(messageOf(r).toString(), '0123456789abcdef');
  } finally {
    c.close();
  }
});

test('serves 500 concurrent streams on one connection', async () => {
  const c = await RawH2Client.connect(fx.address);
  try {
    const waits = [];
    const bytes = [];
    for (let i = 0; i < 500; i++) {
      const id = 2 * i + 1;
      waits.push(c.expect(id));
      bytes.push(frame(FRAME.HEADERS, 0x4, id, grpcRequestBlock('/t.Test/Wait', localhost)));
      bytes.push(frame(FRAME.DATA, 0x1, id, grpcFrame(Buffer.from(`m${i}`))));
    }
    c.write(Buffer.concat(bytes));
    const rs = await Promise.all(waits);
    rs.forEach((r, i) => {
      assert.equal(statusOf(r), GRPC_CODE.OK);
      assert.equal(messageOf(r).toString(), `m${i}`);
    });
  } finally {
    c.close();
  }
});

test('accepts padded DATA and padded HEADERS', async () => {
  const c = await RawH2Client.connect(fx.address);
  try {
    const done = c.expect(1);
    const body = grpcFrame(Buffer.from('padded'));
    c.write(
      Buffer.concat([
        frame(FRAME.HEADERS, 0x4 | 0x8, 1, Buffer.concat([Buffer.from([4]), echoBlock, Buffer.alloc(4)])),
        frame(FRAME.DATA, 0x8, 1, Buffer.concat([Buffer.from([200]), body.subarray(0, 3), Buffer.alloc(200)])),
        frame(FRAME.DATA, 0x8 | 0x1, 1, Buffer.concat([Buffer.from([0]), body.subarray(3)])),
      ]),
    );
    const r = await done;
    assert.equal(statusOf(r), GRPC_CODE.OK);
    assert.equal(messageOf(r).toString(), 'padded');
  } finally {
    c.close();
  }
});

test('answers PING, ignores PRIORITY and unknown frame types', async () => {
  const c = await RawH2Client.connect(fx.address);
  try {
    const pong = new Promise<Buffer>((resolve) => {
      c.socket.on('data', (d: Buffer) => {
        const i = d.indexOf(Buffer.from('pingpong'));
        if (i >= 9 && d[i - 6] === FRAME.PING && d[i - 5] === 1) resolve(d.subarray(i, i + 8));
      });
    });
    c.write(frame(FRAME.PING, 0, 0, Buffer.from('pingpong')));
    assert.equal((await pong).toString(), 'pingpong');
    const done = c.expect(1);
    c.write(
      Buffer.concat([
        frame(FRAME.PRIORITY, 0, 1, Buffer.from([0, 0, 0, 0, 16])),
        frame(0xfa, 0xff, 0, Buffer.from('whatever')),
        frame(FRAME.HEADERS, 0x4, 1, echoBlock),
        frame(0xfb, 0, 1, Buffer.from('ignored')),
        frame(FRAME.DATA, 0x1, 1, grpcFrame(Buffer.from('ok'))),
      ]),
    );
    assert.equal(messageOf(await done).toString(), 'ok');
  } finally {
    c.close();
  }
});

test('a protocol error gets GOAWAY PROTOCOL_ERROR on that connection only', async () => {
  const c = await RawH2Client.connect(fx.address);
  try {
    c.write(frame(FRAME.HEADERS, 0x4, 2, echoBlock)); // an even (server-side) stream id
    await new Promise<void>((resolve) => c.socket.once('close', () => resolve()));
    assert.equal(c.goaway?.code, 1);
  } finally {
    c.close();
  }
  await stillServes();
});

test('garbage, a half frame then a disconnect, and a disconnect mid-call leave the server serving', async () => {
  const junk = await RawH2Client.connect(fx.address);
  junk.write(Buffer.from([0xff, 0xff, 0xff, 0x00, 0x00, 0, 0, 0, 0, 1, 2, 3])); // a 16 MiB frame
  await new Promise<void>((resolve) => junk.socket.once('close', () => resolve()));
  assert.equal(junk.goaway?.code, 6, 'FRAME_SIZE_ERROR');

  // Each client ends its side and waits until the server has read everything and closed too.
  const hangUp = (c: RawH2Client): Promise<void> =>
    new Promise<void>((resolve) => {
      if (c.closed) return resolve();
      c.socket.once('close', () => resolve());
      c.socket.end();
    });

  const half = await RawH2Client.connect(fx.address);
  half.write(frame(FRAME.HEADERS, 0x4, 1, echoBlock).subarray(0, 12));
  await hangUp(half);

  const mid = await RawH2Client.connect(fx.address);
  mid.write(Buffer.concat([frame(FRAME.HEADERS, 0x4, 1, grpcRequestBlock('/t.Test/Wait', localhost)), frame(FRAME.DATA, 0x1, 1, grpcFrame(Buffer.from('bye')))]));
  await hangUp(mid);

  const partial = await RawH2Client.connect(fx.address);
  partial.write(Buffer.concat([frame(FRAME.HEADERS, 0x4, 1, echoBlock), frame(FRAME.DATA, 0, 1, Buffer.from([0, 0, 0, 1, 0]))]));
  await hangUp(partial);

  await stillServes();
});

test('a client that cancels with RST_STREAM gets no answer on that stream; the next stream works', async () => {
  // Its own server, with a handler that finishes when the test says so.
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let returned!: () => void;
  const handlerReturned = new Promise<void>((resolve) => (returned = resolve));
  const held = await startFixture({
    maxMessageBytes: LIMIT,
    handlers: new Map([
      ['/t.Test/Echo', async (call) => call.message],
      [
        '/t.Test/Held',
        async (call) => {
          await released;
          returned();
          return call.message;
        },
      ],
    ]),
  });
  const c = await RawH2Client.connect(held.address);
  try {
    void c.expect(1); // registered, so that anything the server sends on stream 1 is recorded
    const done = c.expect(3);
    const rst = Buffer.alloc(4);
    rst.writeUInt32BE(8, 0);
    c.write(
      Buffer.concat([
        frame(FRAME.HEADERS, 0x4, 1, grpcRequestBlock('/t.Test/Held', localhost)),
        frame(FRAME.DATA, 0x1, 1, grpcFrame(Buffer.from('gone'))),
        frame(FRAME.RST_STREAM, 0, 1, rst),
        frame(FRAME.HEADERS, 0x4, 3, echoBlock),
        frame(FRAME.DATA, 0x1, 3, grpcFrame(Buffer.from('next'))),
      ]),
    );
    const r = await done;
    assert.equal(messageOf(r).toString(), 'next');
    // Let the cancelled call's handler return; then a PING round trip: an answer written for
    // stream 1 would have reached us before the ACK.
    release();
    await handlerReturned;
    await c.ping();
    const seen = c as unknown as { streams: Map<number, RawResponse> };
    const s1 = seen.streams.get(1);
    assert.ok(s1 !== undefined, 'stream 1 was not ended by the server');
    assert.deepEqual(s1.headers, [], 'no headers on the cancelled stream');
    assert.equal(s1.data.length, 0, 'no data on the cancelled stream');
  } finally {
    c.close();
    await held.cleanup();
  }
});

test('refuses streams beyond 1,000 concurrent ones with REFUSED_STREAM and serves the rest', async () => {
  const c = await RawH2Client.connect(fx.address);
  try {
    const waits = [];
    const bytes = [];
    for (let i = 0; i < 1001; i++) {
      const id = 2 * i + 1;
      waits.push(c.expect(id));
      // HEADERS without END_STREAM: every stream stays open until its DATA arrives.
      bytes.push(frame(FRAME.HEADERS, 0x4, id, grpcRequestBlock('/t.Test/Echo', localhost)));
    }
    c.write(Buffer.concat(bytes));
    const refused = await waits[1000]!;
    assert.equal(refused.rstCode, 7);
    c.write(Buffer.concat(Array.from({ length: 1000 }, (_, i) => frame(FRAME.DATA, 0x1, 2 * i + 1, grpcFrame(Buffer.from(`s${i}`))))));
    const rs = await Promise.all(waits.slice(0, 1000));
    rs.forEach((r, i) => assert.equal(messageOf(r).toString(), `s${i}`));
  } finally {
    c.close();
  }
});

test('a header block over the 16 KiB limit gets GOAWAY ENHANCE_YOUR_CALM on that connection only', async () => {
  const c = await RawH2Client.connect(fx.address);
  try {
    const block = grpcRequestBlock('/t.Test/Echo', localhost, [hpackLiteral('without', 'x-big', 'v'.repeat(17_000))]);
    const parts = [frame(FRAME.HEADERS, 0, 1, block.subarray(0, 16_000)), frame(FRAME.CONTINUATION, 0x4, 1, block.subarray(16_000))];
    c.write(Buffer.concat(parts));
    await new Promise<void>((resolve) => c.socket.once('close', () => resolve()));
    assert.equal(c.goaway?.code, 0xb);
  } finally {
    c.close();
  }
  await stillServes();
});

test('a client GOAWAY: calls already sent are answered, then the server closes the connection', async () => {
  const c = await RawH2Client.connect(fx.address);
  try {
    const done = c.expect(1);
    const closed = new Promise<void>((resolve) => c.socket.once('close', () => resolve()));
    c.write(
      Buffer.concat([
        frame(FRAME.HEADERS, 0x4, 1, grpcRequestBlock('/t.Test/Wait', localhost)),
        frame(FRAME.DATA, 0x1, 1, grpcFrame(Buffer.from('last'))),
        frame(FRAME.GOAWAY, 0, 0, Buffer.alloc(8)),
      ]),
    );
    const r = await done;
    assert.equal(statusOf(r), GRPC_CODE.OK);
    assert.equal(messageOf(r).toString(), 'last');
    await closed;
    assert.equal(c.goaway?.code, 0);
  } finally {
    c.close();
  }
});

test('a handler that resolves with something other than bytes gets UNKNOWN, not a crash', async () => {
  const odd = await startFixture({
    maxMessageBytes: 1024,
    handlers: new Map([['/t.Test/Odd', async () => 'not bytes' as unknown as Uint8Array]]),
  });
  const c = createGrpcClient({ address: odd.address });
  try {
    await assert.rejects(c.unary('/t.Test/Odd', Buffer.from('x'), { timeoutMs: 2000 }), (err: unknown) => {
      assert.equal((err as { code?: number }).code, GRPC_CODE.UNKNOWN);
      return true;
    });
  } finally {
    await c.close();
    await odd.cleanup();
  }
});

test('survives 200 connections of random frames (after a valid preface) and keeps serving', async () => {
  let seed = 0x2545f491;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  for (let conn = 0; conn < 200; conn++) {
    const c = await RawH2Client.connect(fx.address);
    const closed = new Promise<void>((resolve) => c.socket.once('close', () => resolve()));
    const frames: Buffer[] = [];
    for (let i = 0, n = 1 + rand(6); i < n; i++) {
      const payload = Buffer.alloc(rand(40));
      for (let j = 0; j < payload.length; j++) payload[j] = rand(256);
      if (rand(3) === 0) payload.set(grpcRequestBlock('/t.Test/Echo', localhost).subarray(0, payload.length));
      frames.push(frame(rand(12), rand(256), rand(4) === 0 ? 0 : 1 + 2 * rand(3), payload));
    }
    c.write(Buffer.concat(frames));
    // End our side; the server closes once it has read (or refused) everything.
    c.socket.end();
    await closed;
  }
  await stillServes();
});
