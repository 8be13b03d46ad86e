// The client's own HTTP/2 (client-connection.ts) against another implementation: node:http2's server
// (nghttp2) with settings our lean server never announces, plus a raw server that breaks the protocol.
// The grpc-go interop is in test/kms-client/grpc-go.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createGrpcClient, type GrpcClientClock } from '../../src/grpc/client.js';
import { frameMessage } from '../../src/grpc/framing.js';
import { GRPC_CODE, GrpcStatusError } from '../../src/grpc/status.js';
import { tempDir } from './fixture.js';

interface Peer {
  readonly address: string;
  readonly sessions: number;
  readonly resetCodes: number[];
  close(): Promise<void>;
}

type OnStream = (stream: http2.ServerHttp2Stream, body: Buffer, session: number) => void;

interface PeerOptions {
  readonly settings?: http2.Settings;
  /** Called with each new session and its number (from 1). */
  readonly onSession?: (session: http2.ServerHttp2Session, n: number) => void;
}

/** Answers a gRPC call with one message and grpc-status 0 (unless the client has reset it). */
function answer(stream: http2.ServerHttp2Stream, message: Buffer): void {
  if (stream.destroyed || stream.closed) return;
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
  stream.end(frameMessage(message));
}

async function nghttp2Peer(options: PeerOptions, onStream: OnStream): Promise<Peer> {
  const dir = tempDir();
  const address = join(dir, 'h2.sock');
  let sessions = 0;
  const resetCodes: number[] = [];
  const server = http2.createServer({ settings: options.settings ?? {} });
  server.on('session', (session) => {
    sessions++;
    options.onSession?.(session, sessions);
  });
  server.on('stream', (stream) => {
    const session = sessions;
    stream.on('close', () => {
      if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) resetCodes.push(stream.rstCode);
    });
    stream.on('error', () => {});
    const parts: Buffer[] = [];
    stream.on('data', (c: Buffer) => parts.push(c));
    stream.on('end', () => {
      if (!stream.destroyed && !stream.closed) onStream(stream, Buffer.concat(parts).subarray(5), session);
    });
  });
  await new Promise<void>((resolve) => server.listen(address, resolve));
  return {
    address,
    get sessions() {
      return sessions;
    },
    resetCodes,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("honours the server's SETTINGS: 2 concurrent streams, a 1 KiB stream window, 5 MiB through its windows", async () => {
  const peer = await nghttp2Peer({ settings: { maxConcurrentStreams: 2, initialWindowSize: 1024 } }, (stream, body) =>
    answer(stream, body),
  );
  // A stream past the limit is reset by the server: REFUSED_STREAM (which the client answers with a
  // backoff wait and a resend, counted here) or, once our SETTINGS ACK is in, INTERNAL_ERROR (the call
  // fails). Either way a client that ignored the limit fails this test.
  let waits = 0;
  const clock: GrpcClientClock = {
    now: () => Date.now(),
    sleep: async (ms) => {
      waits++;
      await new Promise((r) => setTimeout(r, ms));
    },
  };
  const client = createGrpcClient({ address: peer.address, clock });
  try {
    // The first call learns the server's SETTINGS (calls made before them may be refused).
    assert.deepEqual(await client.unary('/t.T/Echo', Buffer.from('first'), { timeoutMs: 30_000 }), Buffer.from('first'));
    waits = 0;
    const sent = Array.from({ length: 24 }, () => randomBytes(200 * 1024));
    const got = await Promise.all(sent.map((m) => client.unary('/t.T/Echo', m, { timeoutMs: 30_000 })));
    got.forEach((g, i) => assert.ok(g.equals(sent[i]!), `call ${i} echoed`));
    assert.equal(waits, 0, 'no call was refused: those past the limit waited for a free stream');
    assert.equal(peer.sessions, 1);
    // Past our 1 MiB stream window in one response.
    const big = randomBytes(3 * 1024 * 1024);
    assert.ok((await client.unary('/t.T/Echo', big, { timeoutMs: 30_000 })).equals(big));
  } finally {
    await client.close();
    await peer.close();
  }
});

test('decodes a trailers-only error (percent-encoded grpc-message) and answers a server PING', async () => {
  const peer = await nghttp2Peer({}, (stream, body) => {
    if (body.toString() === 'missing') {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5', 'grpc-message': 'no%20such%20key%3A%20k1' },
        { endStream: true },
      );
      return;
    }
    // Answer only once our client has acknowledged the server's PING.
    stream.session!.ping((err) => (err ? stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR) : answer(stream, body)));
  });
  const client = createGrpcClient({ address: peer.address });
  try {
    await assert.rejects(client.unary('/t.T/Echo', Buffer.from('missing'), { timeoutMs: 10_000 }), (err: unknown) => {
      assert.ok(err instanceof GrpcStatusError);
      assert.equal(err.code, GRPC_CODE.NOT_FOUND);
      assert.equal(err.message, 'no such key: k1');
      return true;
    });
    assert.deepEqual(await client.unary('/t.T/Echo', Buffer.from('pinged'), { timeoutMs: 10_000 }), Buffer.from('pinged'));
  } finally {
    await client.close();
    await peer.close();
  }
});

test('a call above a GOAWAY last stream id is sent again on a new connection', async () => {
  // The first connection is told at once that no stream of it will be processed (last id 0), then
  // closed by the server (node:http2 otherwise leaves a session it sent GOAWAY on half-alive).
  const onSession = (session: http2.ServerHttp2Session, n: number): void => {
    if (n !== 1) return;
    session.goaway(http2.constants.NGHTTP2_NO_ERROR, 0);
    session.close();
  };
  const peer = await nghttp2Peer({ onSession }, (stream, body) => answer(stream, body));
  const client = createGrpcClient({ address: peer.address });
  try {
    assert.deepEqual(await client.unary('/t.T/Echo', Buffer.from('again'), { timeoutMs: 10_000 }), Buffer.from('again'));
    assert.equal(peer.sessions, 2);
  } finally {
    await client.close();
    await peer.close();
  }
});

test('a request the server gives no window for ends at its deadline, and the stream is reset', async () => {
  // A window of 0 from the server's SETTINGS on: what the default 64 KiB window let through before
  // they arrived is all it gets, so the rest of 200 KiB waits for a WINDOW_UPDATE that never comes.
  const peer = await nghttp2Peer({ settings: { initialWindowSize: 0 } }, (stream, body) => answer(stream, body));
  const client = createGrpcClient({ address: peer.address });
  try {
    await assert.rejects(client.unary('/t.T/Echo', randomBytes(200 * 1024), { timeoutMs: 300 }), (err: unknown) => {
      assert.ok(err instanceof GrpcStatusError);
      assert.equal(err.code, GRPC_CODE.DEADLINE_EXCEEDED);
      return true;
    });
    for (let i = 0; i < 200 && peer.resetCodes.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(peer.resetCodes, [http2.constants.NGHTTP2_CANCEL]);
  } finally {
    await client.close();
    await peer.close();
  }
});

test('a server that breaks HTTP/2 fails the call with INTERNAL, and nothing else happens', async () => {
  const dir = tempDir();
  const address = join(dir, 'bad.sock');
  // After the client's preface: a frame header announcing 20,000 bytes (over the 16 KiB we accept).
  const server = net.createServer((socket) => {
    socket.once('data', () => socket.write(Buffer.from([0x00, 0x4e, 0x20, 0x00, 0x00, 0, 0, 0, 1])));
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(address, resolve));
  const client = createGrpcClient({ address });
  try {
    await assert.rejects(client.unary('/t.T/Echo', Buffer.from('x'), { timeoutMs: 10_000 }), (err: unknown) => {
      assert.ok(err instanceof GrpcStatusError);
      assert.equal(err.code, GRPC_CODE.INTERNAL);
      assert.match(err.message, /HTTP\/2 connection error from the server: a frame of 20000 bytes/);
      return true;
    });
  } finally {
    await client.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  }
});
