// Cancellation through to a SLOW backend: `atrest serve --backend aws-kms` (direct mode, no local KEK)
// under a 256 MB heap, against a hung key manager: a minimal fake of the AWS KMS API that stops
// answering Encrypt once told to (an injected fault: no real key manager hangs on demand; moto's
// real AWS KMS API is exercised by test/backends/).
// What must hold: resetting a stream aborts its backend call all the way to the HTTP request the SDK
// made; each cancelled call is logged as CANCELLED, not OK; the connection goes on serving.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as v2 from '../../src/proto/kms-v2.js';
import { FRAME, frame, grpcFrame, grpcRequestBlock, hpackLiteral } from './raw-h2.js';
import { tempDir } from '../kms/helpers.js';
import { AttackConn, H2, PEAK_RSS_LIMIT_MB, startPlugin, statusOnNewConnection } from './abuse-helpers.js';

const env: NodeJS.ProcessEnv = {
  ...process.env,
  AWS_ACCESS_KEY_ID: 'atrest-test',
  AWS_SECRET_ACCESS_KEY: 'atrest-test-secret',
  AWS_REGION: 'us-east-1',
};
delete env['AWS_PROFILE'];
/** Failure deadline for steps that wait on the plugin's AWS SDK calls (slow on a busy machine). */
const SLOW = 60_000;

const PLAINTEXT = Buffer.alloc(32, 1);
const MARK = PLAINTEXT.toString('base64');

/**
 * A minimal AWS KMS (JSON 1.1 protocol: DescribeKey, Encrypt, Decrypt with a reversible "ciphertext")
 * that, once `hold` is set, never answers the test's Encrypt calls: a key manager that hangs.
 */
async function hangingKms() {
  const state = { hold: false, held: 0, aborted: 0 };
  const events = new EventEmitter();
  const arn = 'arn:aws:kms:us-east-1:111122223333:key/0b6f0a8e-abuse-test';
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const target = req.headers['x-amz-target'];
      const input = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, string>;
      const answer = (o: unknown): void => {
        res.setHeader('content-type', 'application/x-amz-json-1.1');
        res.end(JSON.stringify(o));
      };
      if (target === 'TrentService.DescribeKey') return answer({ KeyMetadata: { KeyId: arn, Arn: arn, KeyState: 'Enabled' } });
      if (target === 'TrentService.Encrypt') {
        // Only the test's calls (their plaintext is 32 bytes of 0x01), not the plugin's own self-test.
        if (state.hold && input['Plaintext'] === MARK) {
          state.held++;
          events.emit('change');
          res.on('close', () => {
            state.aborted++;
            events.emit('change');
          });
          return;
        }
        return answer({ KeyId: arn, CiphertextBlob: Buffer.from('fake:' + input['Plaintext']).toString('base64') });
      }
      if (target === 'TrentService.Decrypt') {
        const blob = Buffer.from(input['CiphertextBlob'] ?? '', 'base64').toString('utf8');
        return answer({ KeyId: arn, Plaintext: blob.slice('fake:'.length) });
      }
      res.statusCode = 400;
      answer({ __type: 'UnsupportedOperationException', message: String(target) });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  /** Resolves once `cond` holds, checked whenever a held request arrives or goes away. */
  function until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!cond()) return;
        clearTimeout(timer);
        events.off('change', check);
        resolve();
      };
      const timer = setTimeout(() => {
        events.off('change', check);
        reject(new Error(`${what}: not seen within ${timeoutMs} ms (held ${state.held}, aborted ${state.aborted})`));
      }, timeoutMs);
      events.on('change', check);
      check();
    });
  }
  return {
    state,
    until,
    endpoint: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

test('calls reset while the key manager hangs: each reset aborts its KMS request and is logged CANCELLED, not OK', async (t) => {
  const started = performance.now();
  const proxy = await hangingKms();
  t.after(() => proxy.close());

  const dir = await tempDir(t, 'atrest-abuse-aws-');
  const config = join(dir, 'backends.yaml');
  await writeFile(
    config,
    ['aws-kms:', '  keyId: alias/atrest-abuse', `  endpoint: ${proxy.endpoint}`, '  region: us-east-1', '  localKEK: false', '  timeout: 120s', ''].join('\n'),
  );
  const plugin = await startPlugin(t, ['--backend', 'aws-kms', '--backend-config', config], env);
  proxy.state.hold = true;

  const c = await AttackConn.connect(plugin.socket);
  const localhost = hpackLiteral('without', 1, 'localhost');
  const block = grpcRequestBlock(v2.V2_METHODS.encrypt, localhost, [hpackLiteral('without', 'grpc-timeout', '100S')]);
  const body = grpcFrame(v2.EncryptRequest.encode({ plaintext: PLAINTEXT, uid: 'attack' }));
  // Fewer calls than the SDK's 50 sockets, so each one reaches the key manager. (That the stream limit
  // counts handlers still running after a reset is tested in abuse-limits.test.ts, in process.)
  const N = 20;
  const ids = Array.from({ length: N }, (_, i) => 2 * i + 1);
  await c.writeAll([Buffer.concat(ids.flatMap((id) => [frame(FRAME.HEADERS, 0x4, id, block), frame(FRAME.DATA, 0x1, id, body)]))]);
  await proxy.until('every Encrypt reaching the hung key manager', () => proxy.state.held === N, SLOW);
  const step = (m: string): void => t.diagnostic(`${Math.round(performance.now() - started)} ms: ${m}`);
  step(`held ${proxy.state.held}`);

  // The client resets them: each reset aborts the handler's backend call, down to its HTTP request.
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(H2.CANCEL, 0);
  await c.writeAll([Buffer.concat(ids.map((id) => frame(FRAME.RST_STREAM, 0, id, cancel)))]);
  await proxy.until('the key manager requests aborted', () => proxy.state.aborted === N, SLOW);
  const cancelled = (): number => plugin.logs.filter((l) => l['msg'] === 'kms call' && l['outcome'] === 'CANCELLED').length;
  await plugin.waitForLog(`${N} calls logged CANCELLED`, () => cancelled() === N, SLOW);
  step('cancelled');
  assert.equal(plugin.logs.filter((l) => l['msg'] === 'kms call' && l['method'] === v2.V2_METHODS.encrypt && l['outcome'] !== 'CANCELLED').length, 0);
  assert.ok(!c.closed, `the connection was closed (GOAWAY ${JSON.stringify(c.goaway)})`);

  // Room again on the same connection: the handlers are gone.
  const next = 2 * N + 1;
  await c.writeAll([frame(FRAME.HEADERS, 0x4, next, grpcRequestBlock(v2.V2_METHODS.status, localhost)), frame(FRAME.DATA, 0x1, next, grpcFrame(Buffer.alloc(0)))]);
  await c.waitFor('a new call on the same connection answered', () => c.answered.has(next) || c.rst.has(next) || c.closed, SLOW);
  assert.ok(c.answered.has(next), `stream ${next}: ${c.rst.get(next)}`);
  c.close();

  proxy.state.hold = false;
  assert.ok(plugin.alive());
  assert.equal(typeof (await statusOnNewConnection(plugin)), 'string');
  const peak = plugin.peakRssMb();
  t.diagnostic(`took ${Math.round(performance.now() - started)} ms`);
  t.diagnostic(`peak RSS ${peak.toFixed(1)} MB; key manager requests held ${proxy.state.held}, aborted ${proxy.state.aborted}`);
  assert.ok(peak < PEAK_RSS_LIMIT_MB, `peak RSS ${peak.toFixed(1)} MB`);
});
