// Server semantics over a real UNIX socket: statuses for every kind of bad request, deadlines,
// handler errors, and graceful close.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { GRPC_CODE, GrpcStatusError } from '../../src/grpc/status.js';
import { createGrpcClient } from '../../src/grpc/client.js';
import type { CallRecord, UnaryCall } from '../../src/grpc/server.js';
import type { Logger, LogFields } from '../../src/logger.js';
import { startFixture, echo } from './fixture.js';
import {
  FRAME,
  RawH2Client,
  frame,
  grpcFrame,
  grpcRequestBlock,
  hpackLiteral,
  messageOf,
  statusOf,
  type RawResponse,
} from './raw-h2.js';

const records: CallRecord[] = [];
const logged: { msg: string; fields?: LogFields }[] = [];
const logger: Logger = {
  debug() {},
  info() {},
  warn: (msg, fields) => logged.push({ msg, fields }),
  error: (msg, fields) => logged.push({ msg, fields }),
};
let lastCall: UnaryCall | undefined;
/** Why each Slow call's signal was aborted, by request message. */
const slowAborted = new Map<string, unknown>();
let slowStarted = 0;

const fx = await startFixture({
  maxMessageBytes: 1024,
  logger,
  onCall: (r) => records.push(r),
  handlers: new Map([
    ['/t.Test/Echo', echo],
    [
      '/t.Test/Inspect',
      async (call) => {
        lastCall = call;
        return Buffer.from(call.authority);
      },
    ],
    [
      '/t.Test/Refuse',
      async () => {
        throw new GrpcStatusError(GRPC_CODE.FAILED_PRECONDITION, 'key 100% gone — ünïcode\nnewline');
      },
    ],
    [
      '/t.Test/Crash',
      async (call) => {
        throw new Error(`boom with secret payload ${call.message.toString('hex')}`.slice(0, 12));
      },
    ],
    [
      '/t.Test/Slow',
      (call) =>
        new Promise<Uint8Array>((resolve) => {
          slowStarted++;
          call.signal.addEventListener('abort', () => {
            slowAborted.set(call.message.toString(), call.signal.reason);
          });
          setTimeout(() => resolve(Buffer.from('late')), 300);
        }),
    ],
  ]),
});
const client = createGrpcClient({ address: fx.address });
after(async () => {
  await client.close();
  await fx.cleanup();
});

async function raw(block: Buffer, body: Buffer | null): Promise<RawResponse> {
  const c = await RawH2Client.connect(fx.address);
  try {
    const done = c.expect(1);
    if (body === null) c.write(frame(FRAME.HEADERS, 0x4 | 0x1, 1, block));
    else c.write(Buffer.concat([frame(FRAME.HEADERS, 0x4, 1, block), frame(FRAME.DATA, 0x1, 1, body)]));
    return await done;
  } finally {
    c.close();
  }
}

const localhost = hpackLiteral('without', 1, 'localhost');

test('round-trips a message and gives the handler method, authority and deadline', async () => {
  const before = Date.now();
  const out = await client.unary('/t.Test/Inspect', Buffer.from('hello'), { timeoutMs: 3000 });
  assert.equal(out.toString(), 'localhost');
  assert.equal(lastCall?.method, '/t.Test/Inspect');
  assert.equal(lastCall?.message.toString(), 'hello');
  assert.ok(lastCall?.deadline !== undefined && lastCall.deadline >= before + 2900 && lastCall.deadline <= Date.now() + 3100);
  const empty = await client.unary('/t.Test/Echo', new Uint8Array(0), { timeoutMs: 1000 });
  assert.equal(empty.length, 0);
  const big = Buffer.alloc(1024, 7);
  assert.deepEqual(await client.unary('/t.Test/Echo', big, { timeoutMs: 1000 }), big);
});

test('reports each call to onCall with method, code and duration', async () => {
  records.length = 0;
  await client.unary('/t.Test/Echo', Buffer.from('x'), { timeoutMs: 1000 });
  await assert.rejects(client.unary('/nope.Service/Gone', Buffer.from('x'), { timeoutMs: 1000 }));
  assert.equal(records.length, 2);
  assert.equal(records[0]?.method, '/t.Test/Echo');
  assert.equal(records[0]?.code, GRPC_CODE.OK);
  assert.ok(records[0]!.durationSeconds >= 0 && records[0]!.durationSeconds < 5);
  assert.deepEqual({ ...records[1], durationSeconds: 0 }, { method: 'unknown', code: GRPC_CODE.UNIMPLEMENTED, durationSeconds: 0 });
});

test('answers an unknown method with UNIMPLEMENTED', async () => {
  await assert.rejects(client.unary('/nope.Service/Gone', Buffer.from('x'), { timeoutMs: 1000 }), (err: unknown) => {
    assert.ok(err instanceof GrpcStatusError);
    assert.equal(err.code, GRPC_CODE.UNIMPLEMENTED);
    assert.match(err.message, /unknown method \/nope\.Service\/Gone/);
    return true;
  });
});

test('passes a handler GrpcStatusError through, message percent-encoded on the wire and decoded', async () => {
  await assert.rejects(client.unary('/t.Test/Refuse', Buffer.from('x'), { timeoutMs: 1000 }), (err: unknown) => {
    assert.ok(err instanceof GrpcStatusError);
    assert.equal(err.code, GRPC_CODE.FAILED_PRECONDITION);
    assert.equal(err.message, 'key 100% gone — ünïcode\nnewline');
    return true;
  });
  const r = await raw(grpcRequestBlock('/t.Test/Refuse', localhost), grpcFrame(Buffer.from('x')));
  assert.equal(r.headers[0]?.['grpc-message'], 'key 100%25 gone %E2%80%94 %C3%BCn%C3%AFcode%0Anewline');
});

test('hides any other handler error behind UNKNOWN and logs it without the payload', async () => {
  logged.length = 0;
  await assert.rejects(client.unary('/t.Test/Crash', Buffer.from('secret'), { timeoutMs: 1000 }), (err: unknown) => {
    assert.ok(err instanceof GrpcStatusError);
    assert.equal(err.code, GRPC_CODE.UNKNOWN);
    assert.equal(err.message, 'internal error');
    return true;
  });
  assert.equal(logged.length, 1);
  assert.equal(logged[0]?.fields?.method, '/t.Test/Crash');
  assert.ok(!JSON.stringify(logged).includes(Buffer.from('secret').toString('hex')));
});

test('refuses a request larger than maxMessageBytes with RESOURCE_EXHAUSTED, before reading it all', async () => {
  await assert.rejects(client.unary('/t.Test/Echo', Buffer.alloc(1025), { timeoutMs: 1000 }), (err: unknown) => {
    assert.ok(err instanceof GrpcStatusError);
    assert.equal(err.code, GRPC_CODE.RESOURCE_EXHAUSTED);
    assert.match(err.message, /1025 bytes.*1024/);
    return true;
  });
  // A prefix announcing 2 GiB followed by a little data: answered from the prefix alone.
  const prefix = Buffer.from([0, 0x7f, 0xff, 0xff, 0xff]);
  const r = await raw(grpcRequestBlock('/t.Test/Echo', localhost), Buffer.concat([prefix, Buffer.alloc(100)]));
  assert.equal(statusOf(r), GRPC_CODE.RESOURCE_EXHAUSTED);
  assert.deepEqual(await client.unary('/t.Test/Echo', Buffer.from('still here'), { timeoutMs: 1000 }), Buffer.from('still here'));
});

test('answers broken framing with clear statuses and keeps serving', async () => {
  const cases: [string, Buffer | null, number, RegExp][] = [
    ['no message at all', null, GRPC_CODE.INTERNAL, /no request message/],
    ['a truncated prefix', Buffer.from([0, 0, 0]), GRPC_CODE.INTERNAL, /truncated/],
    ['a truncated message', Buffer.from([0, 0, 0, 0, 9, 1, 2]), GRPC_CODE.INTERNAL, /truncated/],
    ['two messages', Buffer.concat([grpcFrame(Buffer.from('a')), grpcFrame(Buffer.from('b'))]), GRPC_CODE.UNIMPLEMENTED, /more than one/],
    ['a compressed message', grpcFrame(Buffer.from('x'), 1), GRPC_CODE.UNIMPLEMENTED, /compressed/],
    ['an invalid flag', grpcFrame(Buffer.from('x'), 7), GRPC_CODE.INTERNAL, /flag/],
  ];
  for (const [label, body, code, message] of cases) {
    const r = await raw(grpcRequestBlock('/t.Test/Echo', localhost), body);
    assert.equal(statusOf(r), code, label);
    assert.match(decodeURIComponent(r.headers[0]?.['grpc-message'] ?? ''), message, label);
  }
  const wrongType = Buffer.concat([
    Buffer.from([0x83, 0x86]),
    hpackLiteral('without', 4, '/t.Test/Echo'),
    localhost,
    hpackLiteral('without', 31, 'application/json'),
  ]);
  assert.equal(statusOf(await raw(wrongType, grpcFrame(Buffer.from('x')))), GRPC_CODE.INVALID_ARGUMENT);
  const badTimeout = grpcRequestBlock('/t.Test/Echo', localhost, [hpackLiteral('without', 'grpc-timeout', 'soon')]);
  assert.equal(statusOf(await raw(badTimeout, grpcFrame(Buffer.from('x')))), GRPC_CODE.INVALID_ARGUMENT);
  const ok = await raw(grpcRequestBlock('/t.Test/Echo', localhost), grpcFrame(Buffer.from('fine')));
  assert.equal(statusOf(ok), GRPC_CODE.OK);
  assert.equal(messageOf(ok).toString(), 'fine');
});

test('ends a call past its deadline with DEADLINE_EXCEEDED and aborts the handler signal', async () => {
  records.length = 0;
  const r = await raw(
    grpcRequestBlock('/t.Test/Slow', localhost, [hpackLiteral('without', 'grpc-timeout', '50m')]),
    grpcFrame(Buffer.from('deadline')),
  );
  assert.equal(statusOf(r), GRPC_CODE.DEADLINE_EXCEEDED);
  const reason = slowAborted.get('deadline');
  assert.ok(reason instanceof GrpcStatusError && reason.code === GRPC_CODE.DEADLINE_EXCEEDED);
  assert.equal(records.find((x) => x.method === '/t.Test/Slow')?.code, GRPC_CODE.DEADLINE_EXCEEDED);

  await assert.rejects(client.unary('/t.Test/Slow', Buffer.from('x'), { timeoutMs: 50 }), (err: unknown) => {
    assert.ok(err instanceof GrpcStatusError);
    assert.equal(err.code, GRPC_CODE.DEADLINE_EXCEEDED);
    return true;
  });
});

test('aborts the handler signal when the client cancels', async () => {
  slowStarted = 0;
  const ac = new AbortController();
  const call = client.unary('/t.Test/Slow', Buffer.from('cancel-me'), { timeoutMs: 5000, signal: ac.signal });
  while (slowStarted === 0) await new Promise((r) => setTimeout(r, 5));
  ac.abort();
  await assert.rejects(call, (err: unknown) => err instanceof GrpcStatusError && err.code === GRPC_CODE.CANCELLED);
  for (let i = 0; i < 100 && !slowAborted.has('cancel-me'); i++) await new Promise((r) => setTimeout(r, 10));
  const reason = slowAborted.get('cancel-me');
  assert.ok(reason instanceof GrpcStatusError && reason.code === GRPC_CODE.CANCELLED, String(reason));
});
