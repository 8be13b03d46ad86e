// close(grace): in-flight calls finish, new ones are refused, stuck ones are cut at the grace bound.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createGrpcClient } from '../../src/grpc/client.js';
import { GRPC_CODE, GrpcStatusError } from '../../src/grpc/status.js';
import { startFixture } from './fixture.js';
import type { UnaryCall } from '../../src/grpc/server.js';

let markStarted: () => void = () => {};
/** Resolves once the next handler has started running (the call is truly in flight). */
function nextStart(): Promise<void> {
  return new Promise((resolve) => {
    markStarted = resolve;
  });
}
/** A handler that runs until the test releases it or the call is cancelled. */
function held(): { handler: (call: UnaryCall) => Promise<Uint8Array>; release(): void; aborted(): boolean } {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let aborted = false;
  return {
    release,
    aborted: () => aborted,
    handler: async (call) => {
      markStarted();
      await new Promise<void>((resolve) => {
        void released.then(resolve);
        call.signal.addEventListener('abort', () => {
          aborted = true;
          resolve();
        });
      });
      return call.message;
    },
  };
}

/** Lets pending I/O callbacks and promise reactions run once (nothing is asserted on time). */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

// A close() that waited for its grace bound instead of the call would hang: this guard fails it.
const HANG_GUARD = { timeout: 60_000 };

test('close(grace) lets an in-flight call finish', HANG_GUARD, async () => {
  const slow = held();
  const fx = await startFixture({ maxMessageBytes: 1024, handlers: new Map([['/t.T/Slow', slow.handler]]) });
  const client = createGrpcClient({ address: fx.address });
  try {
    const started0 = nextStart();
    const inflight = client.unary('/t.T/Slow', Buffer.from('done'), { timeoutMs: 3_600_000 });
    await started0;
    let stopped = false;
    // An hour of grace: close() must return when the call is done, not at the bound.
    const stopping = fx.stop(3_600_000).then(() => (stopped = true));
    await turn();
    assert.equal(stopped, false, 'close waits for the call in flight');
    slow.release();
    assert.deepEqual(await inflight, Buffer.from('done'));
    await stopping;
    assert.equal(slow.aborted(), false, 'the call was not cut');
  } finally {
    await client.close();
    await fx.cleanup();
  }
});

test('close(grace) cuts a stuck call at the grace bound', HANG_GUARD, async (t) => {
  // Every timer of this test (the grace period, the call's deadline) runs on an injected clock;
  // timers made on the real clock could not be cleared while the mock is on.
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const stuck = held();
  const fx = await startFixture({ maxMessageBytes: 1024, handlers: new Map([['/t.T/Stuck', stuck.handler]]) });
  const client = createGrpcClient({ address: fx.address });
  try {
    const started0 = nextStart();
    const inflight = client.unary('/t.T/Stuck', Buffer.from('x'), { timeoutMs: 3_600_000 });
    const outcome = inflight.then(
      () => undefined,
      (err: unknown) => err,
    );
    await started0;
    let closed = false;
    const closing = fx.server.close(100).then(() => (closed = true));
    t.mock.timers.tick(99);
    await turn();
    assert.equal(closed, false, 'not cut before the grace bound');
    assert.equal(stuck.aborted(), false);
    t.mock.timers.tick(1);
    await closing;
    assert.equal(stuck.aborted(), true, 'the handler saw the cancellation');
    // The stream was destroyed with its session, not left to run into the client's (hour-long)
    // deadline: a hang here fails the guard.
    const err = await outcome;
    assert.ok(err instanceof GrpcStatusError && err.code !== GRPC_CODE.OK, String(err));
  } finally {
    t.mock.timers.reset();
    await client.close();
    await fx.cleanup();
  }
});
