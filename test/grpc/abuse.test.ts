// Hostile HTTP/2 peers against a real `atrest serve` (local keyring) run with a 256 MB V8 heap, over its
// real UNIX socket: each attack of issue 10's table, then the plugin must be alive, answer a v2 Status
// on a new connection, have stayed under 200 MB peak RSS, and have reacted as the limits say
// (GOAWAY / RST_STREAM code, connection closed). The slow-backend attack (handlers in flight, their
// cancellation) is in abuse-slow-backend.test.ts; short-timeout behaviour in abuse-limits.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as v1 from '../../src/proto/kms-v1beta1.js';
import * as v2 from '../../src/proto/kms-v2.js';
import { GRPC_CODE } from '../../src/grpc/status.js';
import {
  FRAME,
  PREFACE,
  RawH2Client,
  frame,
  grpcFrame,
  grpcRequestBlock,
  hpackIndexed,
  hpackLiteral,
  statusOf,
} from './raw-h2.js';
import {
  AttackConn,
  H2,
  PEAK_RSS_LIMIT_MB,
  startPlugin,
  statusOnNewConnection,
  type Plugin,
} from './abuse-helpers.js';

const MB = 1024 * 1024;
const localhost = hpackLiteral('without', 1, 'localhost');
const statusBlock = grpcRequestBlock(v2.V2_METHODS.status, localhost);
const EMPTY = Buffer.alloc(0);

async function assertSurvived(t: { diagnostic(m: string): void }, plugin: Plugin, attack: string): Promise<void> {
  assert.ok(plugin.alive(), `${attack}: the plugin died:\n${plugin.stderrTail()}`);
  assert.equal(await statusOnNewConnection(plugin), 'ok', `${attack}: Status after the attack`);
  const peak = plugin.peakRssMb();
  t.diagnostic(`${attack}: peak RSS ${peak.toFixed(1)} MB`);
  assert.ok(peak < PEAK_RSS_LIMIT_MB, `${attack}: peak RSS ${peak.toFixed(1)} MB, limit ${PEAK_RSS_LIMIT_MB} MB`);
}

/** `count` copies of `unit`, written in batches of about 512 KiB. */
function* repeated(unit: Buffer, count: number): Generator<Buffer> {
  const perBatch = Math.max(1, Math.floor((512 * 1024) / unit.length));
  const batch = Buffer.concat(Array.from({ length: perBatch }, () => unit));
  for (let left = count; left > 0; left -= perBatch) yield left >= perBatch ? batch : batch.subarray(0, left * unit.length);
}

test('a 50 MB flood of empty CONTINUATION frames gets GOAWAY ENHANCE_YOUR_CALM and a closed connection', async (t) => {
  const plugin = await startPlugin(t);
  const c = await AttackConn.connect(plugin.socket);
  const empty = frame(FRAME.CONTINUATION, 0, 1, EMPTY);
  const count = Math.ceil((50 * MB) / empty.length);
  await c.writeAll([frame(FRAME.HEADERS, 0, 1, statusBlock), ...repeated(empty, count)]);
  await c.waitFor('the server closing the connection', () => c.closed);
  assert.equal(c.goaway?.code, H2.ENHANCE_YOUR_CALM);
  assert.ok(c.written < 50 * MB, `the server read the whole flood (${c.written} bytes written)`);
  await assertSurvived(t, plugin, 'CONTINUATION flood');
});

test('10,000 calls each reset right after its request: every stream is answered, refused or cancelled', async (t) => {
  const plugin = await startPlugin(t);
  const c = await AttackConn.connect(plugin.socket);
  const body = grpcFrame(v2.EncryptRequest.encode({ plaintext: Buffer.alloc(32, 1), uid: 'attack' }));
  const block = grpcRequestBlock(v2.V2_METHODS.encrypt, localhost);
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(H2.CANCEL, 0);
  const N = 10_000;
  function* calls(): Generator<Buffer> {
    for (let i = 0; i < N; i += 100) {
      const parts: Buffer[] = [];
      for (let j = i; j < i + 100; j++) {
        const id = 2 * j + 1;
        parts.push(frame(FRAME.HEADERS, 0x4, id, block), frame(FRAME.DATA, 0x1, id, body), frame(FRAME.RST_STREAM, 0, id, cancel));
      }
      yield Buffer.concat(parts);
    }
  }
  await c.writeAll(calls());
  // A Status on the same connection after all of them: everything before it has been handled.
  const last = 2 * N + 1;
  await c.writeAll([frame(FRAME.HEADERS, 0x4, last, statusBlock), frame(FRAME.DATA, 0x1, last, grpcFrame(EMPTY))]);
  await c.waitFor('the Status call after the resets', () => c.answered.has(last) || c.closed);
  assert.ok(!c.closed, 'the connection stays usable');
  const calls2 = plugin.logs.filter((l) => l['msg'] === 'kms call' && l['method'] === v2.V2_METHODS.encrypt);
  assert.ok(calls2.length <= N);
  for (const l of calls2) assert.ok(l['outcome'] === 'OK' || l['outcome'] === 'CANCELLED', `unexpected outcome ${String(l['outcome'])}`);
  c.close();
  await assertSurvived(t, plugin, 'reset flood');
});

test('4 connections x 1,000 streams x 64 KiB never ended: at most the 1 MiB window is held, then FLOW_CONTROL_ERROR', async (t) => {
  const plugin = await startPlugin(t);
  const conns = await Promise.all([1, 2, 3, 4].map(() => AttackConn.connect(plugin.socket)));
  const block = grpcRequestBlock(v1.V1BETA1_METHODS.encrypt, localhost);
  const message = Buffer.alloc(64 * 1024 - 5, 7);
  const prefixed = grpcFrame(message);
  function* streams(): Generator<Buffer> {
    for (let i = 0; i < 1000; i++) {
      const id = 2 * i + 1;
      const parts = [frame(FRAME.HEADERS, 0x4, id, block)];
      for (let off = 0; off < prefixed.length; off += 16_384) parts.push(frame(FRAME.DATA, 0, id, prefixed.subarray(off, off + 16_384)));
      yield Buffer.concat(parts);
    }
  }
  await Promise.all(conns.map((c) => c.writeAll(streams())));
  for (const c of conns) {
    await c.waitFor('the server closing the connection', () => c.closed);
    assert.equal(c.goaway?.code, H2.FLOW_CONTROL_ERROR);
    assert.ok(c.written < 64 * MB, 'the server stopped the connection before it sent everything');
  }
  await assertSurvived(t, plugin, 'never-ending request bodies');
});

test('a reader that keeps its window at 0: queued responses are dropped with RST_STREAM CANCEL and the window comes back', async (t) => {
  const plugin = await startPlugin(t);
  const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
  const conns = await Promise.all([1, 2, 3, 4].map(() => AttackConn.connect(plugin.socket, true, [[SETTINGS_INITIAL_WINDOW_SIZE, 0]])));
  const block = grpcRequestBlock(v1.V1BETA1_METHODS.encrypt, localhost);
  const body = grpcFrame(v1.EncryptRequest.encode({ version: 'v1beta1', plain: Buffer.alloc(60_000, 3) }));
  // As many 60 KB Encrypts as the server's connection window lets a well-behaved client send.
  const perConn = Math.floor(MB / body.length);
  function* requests(): Generator<Buffer> {
    for (let i = 0; i < perConn; i++) {
      const id = 2 * i + 1;
      const parts = [frame(FRAME.HEADERS, 0x4, id, block)];
      for (let off = 0; off < body.length; off += 16_384) {
        const end = Math.min(body.length, off + 16_384);
        parts.push(frame(FRAME.DATA, end === body.length ? 0x1 : 0, id, body.subarray(off, end)));
      }
      yield Buffer.concat(parts);
    }
  }
  await Promise.all(conns.map((c) => c.writeAll(requests())));
  for (const c of conns) {
    // Every response was computed (HEADERS went out), could not be sent, and was dropped after the
    // send timeout; its bytes were then credited back to the connection window.
    await c.waitFor('every queued response dropped', () => c.countRst(H2.CANCEL) === perConn || c.closed, 60_000);
    assert.ok(!c.closed);
    assert.equal(c.answered.size, perConn);
    await c.waitFor('the connection window credited back', () => c.connWindowUpdates >= 2 || c.closed);
    assert.ok(c.connWindowUpdates >= 2);
    c.close();
  }
  await assertSurvived(t, plugin, 'window-0 reader');
});

test('1,000 idle and half-preface connections: the cap evicts them, Status still connects, the preface timeout closes the rest', async (t) => {
  const plugin = await startPlugin(t);
  const conns: AttackConn[] = [];
  for (let i = 0; i < 1000; i++) {
    const c = await AttackConn.connect(plugin.socket, false);
    if (i % 2 === 1) c.socket.write(PREFACE.subarray(0, 10));
    conns.push(c);
  }
  // A new client still gets in: it evicts the connection idle longest.
  assert.equal(await statusOnNewConnection(plugin), 'ok');
  await Promise.all(conns.map((c) => c.waitFor('the server closing a preface-less connection', () => c.closed, 60_000)));
  await assertSurvived(t, plugin, 'idle connections');
});

test('100,000 PINGs, 100,000 SETTINGS and 100,000 empty DATA frames each get GOAWAY ENHANCE_YOUR_CALM', async (t) => {
  const plugin = await startPlugin(t);
  const pings = await AttackConn.connect(plugin.socket);
  const settings = await AttackConn.connect(plugin.socket);
  const empties = await AttackConn.connect(plugin.socket);
  await Promise.all([
    pings.writeAll(repeated(frame(FRAME.PING, 0, 0, Buffer.from('abcdefgh')), 100_000)),
    settings.writeAll(repeated(frame(FRAME.SETTINGS, 0, 0, EMPTY), 100_000)),
    empties.writeAll([frame(FRAME.HEADERS, 0x4, 1, statusBlock), ...repeated(frame(FRAME.DATA, 0, 1, EMPTY), 100_000)]),
  ]);
  for (const [name, c] of [['PING', pings], ['SETTINGS', settings], ['empty DATA', empties]] as const) {
    await c.waitFor(`${name} flood: the server closing the connection`, () => c.closed);
    assert.equal(c.goaway?.code, H2.ENHANCE_YOUR_CALM, name);
  }
  assert.equal(pings.goaway?.debug, 'too_many_pings');
  await assertSurvived(t, plugin, 'control frame floods');
});

test('an HPACK block decoding to ~48 MB of headers is refused with RST_STREAM PROTOCOL_ERROR; the connection stays in step', async (t) => {
  const plugin = await startPlugin(t);
  const c = await RawH2Client.connect(plugin.socket);
  try {
    // One 4,038-byte dynamic table entry, then ~12,000 one-byte references to it.
    const entry = hpackLiteral('incremental', 'x-bomb', 'b'.repeat(4000));
    const refs = Buffer.alloc(12_000, hpackIndexed(62)[0]!);
    const bomb = grpcRequestBlock(v2.V2_METHODS.status, localhost, [entry, refs]);
    assert.ok(bomb.length <= 16_384);
    const refused = c.expect(1);
    c.write(Buffer.concat([frame(FRAME.HEADERS, 0x4 | 0x1, 1, bomb)]));
    assert.equal((await refused).rstCode, H2.PROTOCOL_ERROR);
    // The same connection, a block that uses the entry the bomb added: decoded in step, answered.
    const ok = c.expect(3);
    c.write(Buffer.concat([frame(FRAME.HEADERS, 0x4, 3, grpcRequestBlock(v2.V2_METHODS.status, localhost, [hpackIndexed(62)])), frame(FRAME.DATA, 0x1, 3, grpcFrame(EMPTY))]));
    assert.equal(statusOf(await ok), GRPC_CODE.OK);
  } finally {
    c.close();
  }
  await assertSurvived(t, plugin, 'HPACK bomb');
});
