// The lean server's limits and RFC 9113 answers, in process over a real UNIX socket, with the time
// limits shortened (createLeanGrpcServer's limits override) so each is seen firing: preface, idle,
// header block and default call timeouts, the connection cap, handlers counted after a reset, the
// CONTINUATION cap, request header validation, frames on closed and lower streams, split frames.
// Tests wait for the server's reaction (a frame, a close), never for time.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createLeanGrpcServer, type LeanLimits } from '../../src/grpc/lean-server.js';
import { GRPC_CODE, type GrpcStatusError } from '../../src/grpc/status.js';
import type { UnaryCall, UnaryHandler } from '../../src/grpc/server.js';
import { listen, tempDir } from './fixture.js';
import {
  FRAME,
  RawH2Client,
  frame,
  grpcFrame,
  hpackIndexed,
  hpackLiteral,
  messageOf,
  statusOf,
} from './raw-h2.js';
import { AttackConn, H2 } from './abuse-helpers.js';

const aborted: { reason: GrpcStatusError; call: UnaryCall }[] = [];
let gate: () => void = () => {};
let gateOpen = new Promise<void>((resolve) => (gate = resolve));

const handlers = new Map<string, UnaryHandler>([
  ['/t.Test/Echo', async (call) => call.message],
  [
    // Never answers; ends (rejecting) when its signal is aborted.
    '/t.Test/Hang',
    (call) =>
      new Promise<Uint8Array>((_, reject) => {
        call.signal.addEventListener('abort', () => {
          aborted.push({ reason: call.signal.reason as GrpcStatusError, call });
          reject(call.signal.reason);
        });
      }),
  ],
  [
    // Ignores its signal: runs until the test opens the gate.
    '/t.Test/Stubborn',
    async (call) => {
      await gateOpen;
      return call.message;
    },
  ],
  ['/t.Test/Deadline', async (call) => Buffer.from(String(call.deadline! - Date.now()))],
]);

async function serve(limits: Partial<LeanLimits>) {
  const dir = tempDir();
  const address = join(dir, 'kms.sock');
  const server = createLeanGrpcServer({ handlers, maxMessageBytes: 64 * 1024 }, { sweepIntervalMs: 25, ...limits });
  const listener: net.Server = await listen(address, server);
  after(async () => {
    const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
    await server.close(0);
    await closed;
    rmSync(dir, { recursive: true, force: true });
  });
  return address;
}

const localhost = hpackLiteral('without', 1, 'localhost');
function request(path: string, extra: Buffer[] = [], scheme: Buffer[] = [hpackIndexed(6)]): Buffer {
  return Buffer.concat([
    hpackIndexed(3), // :method POST
    ...scheme,
    hpackLiteral('without', 4, path),
    localhost,
    hpackLiteral('without', 31, 'application/grpc'),
    ...extra,
  ]);
}
const echo = request('/t.Test/Echo');
const body = (text: string): Buffer => grpcFrame(Buffer.from(text));
const call = (id: number, block: Buffer, text: string): Buffer =>
  Buffer.concat([frame(FRAME.HEADERS, 0x4, id, block), frame(FRAME.DATA, 0x1, id, body(text))]);

const address = await serve({
  prefaceTimeoutMs: 100,
  headerBlockTimeoutMs: 100,
  defaultCallTimeoutMs: 100,
  maxCallTimeoutMs: 60_000,
  maxConcurrentStreams: 5,
});

async function echoes(c: RawH2Client, id: number): Promise<void> {
  const done = c.expect(id);
  c.write(call(id, echo, `hi ${id}`));
  const r = await done;
  assert.equal(statusOf(r), GRPC_CODE.OK, `stream ${id}`);
  assert.equal(messageOf(r).toString(), `hi ${id}`);
}

test('a connection that never sends the preface is closed by the preface timeout', async () => {
  const c = await AttackConn.connect(address, false);
  await c.waitFor('closed', () => c.closed);
});

test('an unfinished header block is cut by its timeout: GOAWAY ENHANCE_YOUR_CALM', async () => {
  const c = await AttackConn.connect(address);
  // Our SETTINGS ACK goes out with the server's initial WINDOW_UPDATE; then the block starts.
  await c.waitFor('the handshake', () => c.connWindowUpdates > 0);
  c.socket.write(frame(FRAME.HEADERS, 0, 1, echo));
  await c.waitFor('closed', () => c.closed);
  assert.equal(c.goaway?.code, H2.ENHANCE_YOUR_CALM);
});

test('more than 32 CONTINUATION frames in one block is GOAWAY ENHANCE_YOUR_CALM; 3 are fine', async () => {
  const ok = await RawH2Client.connect(address);
  try {
    const done = ok.expect(1);
    ok.write(
      Buffer.concat([
        frame(FRAME.HEADERS, 0, 1, echo.subarray(0, 4)),
        frame(FRAME.CONTINUATION, 0, 1, echo.subarray(4, 10)),
        frame(FRAME.CONTINUATION, 0, 1, Buffer.alloc(0)),
        frame(FRAME.CONTINUATION, 0x4, 1, echo.subarray(10)),
        frame(FRAME.DATA, 0x1, 1, body('split')),
      ]),
    );
    assert.equal(messageOf(await done).toString(), 'split');
  } finally {
    ok.close();
  }
  const c = await AttackConn.connect(address);
  const parts = [frame(FRAME.HEADERS, 0, 1, echo.subarray(0, 1))];
  for (let i = 0; i < 40; i++) parts.push(frame(FRAME.CONTINUATION, 0, 1, Buffer.alloc(0)));
  await c.writeAll([Buffer.concat(parts)]);
  await c.waitFor('closed', () => c.closed);
  assert.equal(c.goaway?.code, H2.ENHANCE_YOUR_CALM);
});

test('a call without grpc-timeout ends with DEADLINE_EXCEEDED at the default timeout and its handler is aborted', async () => {
  const c = await RawH2Client.connect(address);
  try {
    aborted.length = 0;
    const hung = c.expect(1);
    c.write(call(1, request('/t.Test/Hang'), 'x'));
    assert.equal(statusOf(await hung), GRPC_CODE.DEADLINE_EXCEEDED);
    assert.equal(aborted[0]?.reason.code, GRPC_CODE.DEADLINE_EXCEEDED);
    // A request that never ends is cut the same way.
    const open = c.expect(3);
    c.write(frame(FRAME.HEADERS, 0x4, 3, echo));
    assert.equal(statusOf(await open), GRPC_CODE.DEADLINE_EXCEEDED);
    await echoes(c, 5);
  } finally {
    c.close();
  }
});

test('a grpc-timeout beyond the maximum is cut to it', async () => {
  const c = await RawH2Client.connect(address);
  try {
    const done = c.expect(1);
    c.write(call(1, request('/t.Test/Deadline', [hpackLiteral('without', 'grpc-timeout', '99999999H')]), ''));
    const left = Number(messageOf(await done).toString());
    assert.ok(left <= 60_000 && left > 0, `deadline ${left} ms away`);
  } finally {
    c.close();
  }
});

test('client deadlines on one connection fire in deadline order, whatever order the calls came in', async () => {
  const c = await RawH2Client.connect(address);
  try {
    aborted.length = 0;
    const timeout = (value: string): Buffer[] => [hpackLiteral('without', 'grpc-timeout', value)];
    const early = c.expect(3);
    const middle = c.expect(5);
    // The connection's one deadline timer is armed for the first call, then moved earlier twice.
    c.write(call(1, request('/t.Test/Hang', timeout('60S')), 'late'));
    c.write(call(3, request('/t.Test/Hang', timeout('20m')), 'early'));
    c.write(call(5, request('/t.Test/Hang', timeout('300m')), 'middle'));
    assert.equal(statusOf(await early), GRPC_CODE.DEADLINE_EXCEEDED);
    // After firing it is re-armed for the calls still in flight.
    assert.equal(statusOf(await middle), GRPC_CODE.DEADLINE_EXCEEDED);
    assert.deepEqual(
      aborted.map((a) => a.reason.code),
      [GRPC_CODE.DEADLINE_EXCEEDED, GRPC_CODE.DEADLINE_EXCEEDED],
    );
    // The 60 s call is still running: a call on the same connection is answered meanwhile.
    await echoes(c, 7);
    c.write(frame(FRAME.RST_STREAM, 0, 1, Buffer.from([0, 0, 0, 8])));
    await c.ping();
    assert.equal(aborted.length, 3);
    assert.equal(aborted[2]?.reason.code, GRPC_CODE.CANCELLED);
  } finally {
    c.close();
  }
});

test('handlers still running after a reset count toward the stream limit; a reset aborts their signal', async () => {
  const c = await AttackConn.connect(address);
  aborted.length = 0;
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(H2.CANCEL, 0);
  const ids = [1, 3, 5, 7, 9];
  await c.writeAll([Buffer.concat(ids.map((id) => call(id, request('/t.Test/Stubborn'), 'late')))]);
  await c.writeAll([Buffer.concat(ids.map((id) => frame(FRAME.RST_STREAM, 0, id, cancel)))]);
  // The five handlers ignore their signal and keep running: a sixth stream is refused.
  await c.writeAll([call(11, echo, 'sixth')]);
  await c.waitFor('stream 11 refused', () => c.rst.get(11) === H2.REFUSED_STREAM);
  gate();
  gateOpen = new Promise<void>((resolve) => (gate = resolve));
  // Once they end, there is room again.
  let next = 13;
  await c.waitFor('a stream accepted again', () => {
    if (c.answered.has(next - 2) || c.closed) return true;
    if (c.rst.get(next - 2) === H2.REFUSED_STREAM || next === 13) {
      c.socket.write(call(next, echo, 'again'));
      next += 2;
    }
    return false;
  });
  assert.ok(!c.closed);
  c.close();
  // And a reset reaches a handler that listens.
  const h = await AttackConn.connect(address);
  await h.writeAll([call(1, request('/t.Test/Hang'), 'x'), frame(FRAME.RST_STREAM, 0, 1, cancel)]);
  await h.waitFor('the handler aborted', () => aborted.length === 1);
  assert.equal(aborted[0]!.reason.code, GRPC_CODE.CANCELLED);
  h.close();
});

test('malformed request headers get RST_STREAM PROTOCOL_ERROR and the connection keeps serving', async () => {
  const cases: [string, Buffer][] = [
    ['uppercase name', request('/t.Test/Echo', [hpackLiteral('without', 'X-Upper', 'v')])],
    ['pseudo-header after a regular one', Buffer.concat([request('/t.Test/Echo', [], []), hpackIndexed(6)])],
    ['duplicate :path', request('/t.Test/Echo', [hpackLiteral('without', 4, '/t.Test/Echo')])],
    ['unknown pseudo-header', request('/t.Test/Echo', [], [hpackIndexed(6), hpackLiteral('without', ':status', '200')])],
    ['connection-specific header', request('/t.Test/Echo', [hpackLiteral('without', 'connection', 'keep-alive')])],
    ['te other than trailers', request('/t.Test/Echo', [hpackLiteral('without', 'te', 'gzip')])],
    ['missing :scheme', request('/t.Test/Echo', [], [])],
    ['empty :path', request('', [])],
    ['content-length that disagrees with the DATA', request('/t.Test/Echo', [hpackLiteral('without', 'content-length', '3')])],
  ];
  const c = await RawH2Client.connect(address);
  try {
    let id = 1;
    for (const [name, block] of cases) {
      const done = c.expect(id);
      c.write(call(id, block, 'x'));
      assert.equal((await done).rstCode, H2.PROTOCOL_ERROR, name);
      id += 2;
    }
    // Trailers carrying a pseudo-header.
    const done = c.expect(id);
    c.write(Buffer.concat([frame(FRAME.HEADERS, 0x4, id, echo), frame(FRAME.DATA, 0, id, body('x')), frame(FRAME.HEADERS, 0x5, id, hpackIndexed(4))]));
    assert.equal((await done).rstCode, H2.PROTOCOL_ERROR, 'pseudo-header in trailers');
    await echoes(c, id + 2);
  } finally {
    c.close();
  }
});

test('HEADERS on a closed stream is GOAWAY STREAM_CLOSED; on a lower, unused id GOAWAY PROTOCOL_ERROR', async () => {
  const a = await RawH2Client.connect(address);
  await echoes(a, 1);
  const closedA = new Promise<void>((resolve) => a.socket.once('close', () => resolve()));
  a.write(frame(FRAME.HEADERS, 0x5, 1, echo));
  await closedA;
  assert.equal(a.goaway?.code, H2.STREAM_CLOSED);

  const b = await RawH2Client.connect(address);
  await echoes(b, 5);
  const closedB = new Promise<void>((resolve) => b.socket.once('close', () => resolve()));
  b.write(frame(FRAME.HEADERS, 0x5, 3, echo));
  await closedB;
  assert.equal(b.goaway?.code, H2.PROTOCOL_ERROR);
});

test('DATA on a closed stream gets RST_STREAM STREAM_CLOSED; frames in flight after our reset are ignored', async () => {
  const c = await AttackConn.connect(address);
  await c.writeAll([call(1, echo, 'one')]);
  await c.waitFor('answered', () => c.answered.has(1));
  await c.writeAll([frame(FRAME.DATA, 0x1, 1, body('late'))]);
  await c.waitFor('RST_STREAM on stream 1', () => c.rst.get(1) === H2.STREAM_CLOSED);
  // An early answer (unknown method) resets the client's half; its DATA and trailers are then ignored.
  await c.writeAll([frame(FRAME.HEADERS, 0x4, 3, request('/t.Test/Nope'))]);
  await c.waitFor('stream 3 answered', () => c.answered.has(3));
  await c.writeAll([frame(FRAME.DATA, 0, 3, body('ignored')), frame(FRAME.HEADERS, 0x5, 3, Buffer.alloc(0)), call(5, echo, 'five')]);
  await c.waitFor('stream 5 answered', () => c.answered.has(5) || c.closed);
  assert.ok(!c.closed);
  assert.equal(c.rst.get(3), H2.NO_ERROR);
  c.close();
});

test('a request written one byte at a time is answered (frames gathered across reads)', async () => {
  const c = await RawH2Client.connect(address);
  try {
    await echoes(c, 1); // the handshake is over: nothing else is written meanwhile
    const done = c.expect(3);
    const bytes = call(3, echo, 'byte by byte');
    for (let i = 0; i < bytes.length; i++) {
      c.write(bytes.subarray(i, i + 1));
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    assert.equal(messageOf(await done).toString(), 'byte by byte');
  } finally {
    c.close();
  }
});

test('the connection cap evicts the connection idle longest, and refuses a newcomer when all are busy', async () => {
  const capped = await serve({ maxConnections: 2, maxConcurrentStreams: 5 });
  const first = await AttackConn.connect(capped);
  const second = await AttackConn.connect(capped);
  await first.writeAll([call(1, echo, 'a')]);
  await first.waitFor('answered', () => first.answered.has(1));
  const third = await AttackConn.connect(capped);
  await third.writeAll([call(1, echo, 'c')]);
  await third.waitFor('the newcomer answered', () => third.answered.has(1));
  // One of the two older, idle connections made room.
  await new Promise<void>((resolve) => {
    const check = (): void => (first.closed || second.closed ? resolve() : undefined);
    first.socket.once('close', check);
    second.socket.once('close', check);
    check();
  });
  const busy = [first, second, third].filter((c) => !c.closed);
  assert.equal(busy.length, 2);
  // Both remaining connections busy (a call each that never ends): a newcomer is closed at once.
  for (const c of busy) await c.writeAll([call(101, request('/t.Test/Hang'), 'x')]);
  const late = await AttackConn.connect(capped);
  await late.waitFor('the newcomer closed', () => late.closed);
  for (const c of busy) c.close();
});

test('a connection idle past the idle timeout gets GOAWAY NO_ERROR and is closed', async () => {
  const idle = await serve({ idleTimeoutMs: 100 });
  const c = await AttackConn.connect(idle);
  await c.writeAll([call(1, echo, 'once')]);
  await c.waitFor('closed', () => c.closed);
  assert.ok(c.answered.has(1));
  assert.equal(c.goaway?.code, H2.NO_ERROR);
});

test("grpc-go's BDP probe after each response (a small WINDOW_UPDATE, then a PING) is no strike; more is", async () => {
  // A sweep far longer than the test: strikes are never forgiven by the clock here.
  const strict = await serve({ maxStrikes: 10, sweepIntervalMs: 60_000 });
  const increment = Buffer.alloc(4);
  increment.writeUInt32BE(100);
  const probe = Buffer.concat([frame(FRAME.WINDOW_UPDATE, 0, 0, increment), frame(FRAME.PING, 0, 0, Buffer.alloc(8))]);
  const c = await RawH2Client.connect(strict);
  try {
    // 30 responses, each answered by the client as grpc-go's BDP estimator does: 60 frames, limit 10.
    for (let id = 1; id <= 59; id += 2) {
      await echoes(c, id);
      c.write(probe);
    }
    await c.ping();
    await echoes(c, 61);
    assert.equal(c.goaway, undefined);
  } finally {
    c.close();
  }
  // The allowance is one PING and one small WINDOW_UPDATE per response, not a licence to flood.
  const flood = await AttackConn.connect(strict);
  await flood.writeAll([call(1, echo, 'once')]);
  await flood.waitFor('answered', () => flood.answered.has(1));
  await flood.writeAll([Buffer.concat(Array.from({ length: 20 }, () => probe))]);
  await flood.waitFor('closed', () => flood.closed);
  assert.equal(flood.goaway?.code, H2.ENHANCE_YOUR_CALM);
});
