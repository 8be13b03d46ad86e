#!/usr/bin/env node
// Test-side probes for the end-to-end scenario, independent of the atrest CLI under test:
//   inspect.mjs status unix:///PATH         KMS v2 Status over the plugin socket -> {"version","healthz","key_id"}
//   etcdctl get --prefix K -w json | inspect.mjs stored
//                                          one line per key: <key> <prefix or "plaintext"> <kms v2 keyID or "-">
//                                          <kms v2 DEK source: "seed" (1.29+ writes), "key" (1.27/1.28 default) or "-">
// Decodes only envelopes and prefixes (codecs from the compiled tree in $ATREST_E2E_DIST); prints no values.

import * as http2 from 'node:http2';
import * as net from 'node:net';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const dist = resolve(process.env.ATREST_E2E_DIST ?? 'dist');
const load = (rel) => import(pathToFileURL(join(dist, rel)).href);

async function status(endpoint) {
  const { StatusRequest, StatusResponse } = await load('src/proto/kms-v2.js');
  const path = new URL(endpoint).pathname;
  const client = http2.connect('http://localhost', { createConnection: () => net.connect(path) });
  client.on('error', () => {});
  try {
    const body = StatusRequest.encode({});
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    const reply = await new Promise((resolvePromise, reject) => {
      const req = client.request({
        ':method': 'POST',
        ':path': '/v2.KeyManagementService/Status',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      const chunks = [];
      let grpcStatus;
      req.setTimeout(5000, () => req.close(http2.constants.NGHTTP2_CANCEL));
      req.on('response', (h) => { if (h['grpc-status'] !== undefined) grpcStatus = h['grpc-status']; });
      req.on('trailers', (t) => { grpcStatus = t['grpc-status']; });
      req.on('data', (c) => chunks.push(c));
      req.on('end', () =>
        String(grpcStatus) === '0'
          ? resolvePromise(Buffer.concat(chunks))
          : reject(new Error(`Status failed: grpc-status ${grpcStatus}`)),
      );
      req.on('error', reject);
      req.end(frame);
    });
    const msg = StatusResponse.decode(reply.subarray(5));
    process.stdout.write(JSON.stringify({ version: msg.version, healthz: msg.healthz, key_id: msg.key_id }) + '\n');
  } finally {
    client.close();
  }
}

async function stored() {
  const { EncryptedObject } = await load('src/proto/encrypted-object.js');
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8').trim();
  const kvs = text === '' ? [] : (JSON.parse(text).kvs ?? []);
  for (const kv of kvs) {
    const key = Buffer.from(kv.key, 'base64').toString('utf8');
    const value = Buffer.from(kv.value ?? '', 'base64');
    let prefix = 'plaintext';
    let keyID = '-';
    let source = '-';
    if (value.subarray(0, 8).toString('latin1') === 'k8s:enc:') {
      // k8s:enc:<type>:<version>:<name>: — five colons
      let at = -1;
      for (let i = 0; i < 5 && (at = value.indexOf(0x3a, at + 1)) >= 0; i++);
      prefix = at < 0 ? 'malformed' : value.subarray(0, at + 1).toString('latin1');
      if (prefix.startsWith('k8s:enc:kms:v2:')) {
        const obj = EncryptedObject.decode(value.subarray(at + 1));
        keyID = obj.keyID;
        // EncryptedDEKSourceType: 1 HKDF_SHA256_XNONCE_AES_GCM_SEED, 0 AES_GCM_KEY (field absent)
        source = obj.encryptedDEKSourceType === 1 ? 'seed' : 'key';
      }
    } else if (value.subarray(0, 4).toString('latin1') !== 'k8s\u0000' && value[0] !== 0x7b) {
      prefix = 'unknown';
    }
    process.stdout.write(`${key} ${prefix} ${keyID} ${source}\n`);
  }
}

const [cmd, arg] = process.argv.slice(2);
if (cmd === 'status') await status(arg);
else if (cmd === 'stored') await stored();
else {
  process.stderr.write('usage: inspect.mjs status unix:///PATH | inspect.mjs stored < etcdctl-json\n');
  process.exit(2);
}
