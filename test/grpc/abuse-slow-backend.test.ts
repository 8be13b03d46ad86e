// The reset flood against a SLOW backend: `atrest serve --backend aws-kms` (direct mode, no local KEK)
// under a 256 MB heap, in front of moto's AWS KMS server, with a hung key manager made by a proxy that
// holds every Encrypt once told to (the one injected fault: no real key manager hangs on demand).
// What must hold: handlers still running count toward the 1,000-stream limit (so the 1,001st stream
// is refused even though the client reset the first ones); resetting a stream aborts its backend call
// all the way to the HTTP request the SDK made; each cancelled call is logged as CANCELLED, not OK.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import * as v2 from '../../src/proto/kms-v2.js';
import { FRAME, frame, grpcFrame, grpcRequestBlock, hpackLiteral } from './raw-h2.js';
import { answersHttp, findTool, freePort, startServer } from '../backends/servers.js';
import { tempDir } from '../kms/helpers.js';
import { AttackConn, H2, PEAK_RSS_LIMIT_MB, startPlugin, statusOnNewConnection } from './abuse-helpers.js';

const env: NodeJS.ProcessEnv = {
  ...process.env,
  AWS_ACCESS_KEY_ID: 'atrest-test',
  AWS_SECRET_ACCESS_KEY: 'atrest-test-secret',
  AWS_REGION: 'us-east-1',
};
delete env['AWS_PROFILE'];
/** Failure deadline for steps that make the plugin run 1,000 AWS SDK calls. */
const SLOW = 180_000;

/** A proxy to moto that, once `hold` is set, never answers Encrypt: a key manager that hangs. */
async function hangingProxy(target: string) {
  const state = { hold: false, held: 0, aborted: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      if (state.hold && req.headers['x-amz-target'] === 'TrentService.Encrypt') {
        state.held++;
        res.on('close', () => state.aborted++);
        return;
      }
      const out = http.request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      out.on('error', () => res.destroy());
      out.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return { state, endpoint: `http://127.0.0.1:${port}`, close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

test('a reset flood against a hung key manager: at most 1,000 handlers run, each reset aborts its KMS request and logs CANCELLED', async (t) => {
  const started = performance.now();
  const port = await freePort();
  const motoUrl = `http://127.0.0.1:${port}`;
  const moto = await startServer(findTool('moto_server', '30-moto.sh'), ['-H', '127.0.0.1', '-p', String(port)], () => answersHttp(`${motoUrl}/moto-api/`), env);
  t.after(() => moto.stop());
  const admin = new KMSClient({ endpoint: motoUrl, region: 'us-east-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });
  t.after(() => admin.destroy());
  const arn = (await admin.send(new CreateKeyCommand({ Description: 'atrest abuse test' }))).KeyMetadata!.Arn!;
  await admin.send(new CreateAliasCommand({ AliasName: 'alias/atrest-abuse', TargetKeyId: arn }));
  const proxy = await hangingProxy(motoUrl);
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
  const body = grpcFrame(v2.EncryptRequest.encode({ plaintext: Buffer.alloc(32, 1), uid: 'attack' }));
  const N = 1500;
  const ids = Array.from({ length: N }, (_, i) => 2 * i + 1);
  await c.writeAll([Buffer.concat(ids.flatMap((id) => [frame(FRAME.HEADERS, 0x4, id, block), frame(FRAME.DATA, 0x1, id, body)]))]);
  // 1,000 handlers hang in the backend; the rest are refused.
  // Starting 1,000 AWS SDK calls costs the plugin several CPU seconds on a busy 2-core machine.
  await c.waitFor('500 streams refused', () => c.countRst(H2.REFUSED_STREAM) === N - 1000 || c.closed, SLOW);
  const step = (m: string): void => t.diagnostic(`${Math.round(performance.now() - started)} ms: ${m}`);
  step('refused');
  assert.ok(!c.closed, `the connection was closed (GOAWAY ${JSON.stringify(c.goaway)})`);
  const accepted = ids.filter((id) => !c.rst.has(id));
  assert.equal(accepted.length, 1000);
  await c.waitFor('Encrypt requests reaching the hung key manager', () => proxy.state.held > 0, SLOW);
  step(`held ${proxy.state.held}`);

  // The client resets them: handlers stay counted until they end, and end because the reset aborts them.
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(H2.CANCEL, 0);
  await c.writeAll([Buffer.concat(accepted.map((id) => frame(FRAME.RST_STREAM, 0, id, cancel)))]);
  const cancelled = (): number => plugin.logs.filter((l) => l['msg'] === 'kms call' && l['outcome'] === 'CANCELLED').length;
  await plugin.waitForLog('1,000 cancelled calls', () => cancelled() === 1000, SLOW);
  step('cancelled');
  assert.equal(plugin.logs.filter((l) => l['msg'] === 'kms call' && l['method'] === v2.V2_METHODS.encrypt && l['outcome'] === 'OK').length, 0);
  await c.waitFor('the key manager requests aborted', () => proxy.state.aborted === proxy.state.held, SLOW);

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
