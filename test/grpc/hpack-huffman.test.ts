// The HPACK Huffman code (src/grpc/hpack-huffman.ts) and its decoder in hpack.ts: the table checked by its
// own structure and against an independent copy, the RFC 7541 Appendix C Huffman examples, and every way a
// Huffman string can be invalid (RFC 7541 §5.2) ending in a clean HpackError.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { HUFFMAN_CODE, HUFFMAN_EOS } from '../../src/grpc/hpack-huffman.js';
import { HpackDecoder, HpackError } from '../../src/grpc/hpack.js';
import { hpackLiteral } from './raw-h2.js';

const require = createRequire(import.meta.url);

test('the table has 257 codes, canonical in (length, symbol) order and complete', () => {
  assert.equal(HUFFMAN_CODE.length, 257);
  assert.equal(HUFFMAN_EOS, 256);
  const order = [...HUFFMAN_CODE.keys()].sort((a, b) => HUFFMAN_CODE[a]![1] - HUFFMAN_CODE[b]![1] || a - b);
  let next = 0;
  let bits = HUFFMAN_CODE[order[0]!]![1];
  let kraft = 0;
  for (const symbol of order) {
    const [code, len] = HUFFMAN_CODE[symbol]!;
    assert.ok(len >= 5 && len <= 30, `symbol ${symbol}: length ${len}`);
    next *= 2 ** (len - bits);
    bits = len;
    assert.equal(code, next, `symbol ${symbol}: code 0x${code.toString(16)} is not canonical`);
    next++;
    kraft += 2 ** -len;
  }
  assert.equal(kraft, 1, 'the code is complete: every bit string decodes');
  // Rows spelled out in RFC 7541 Appendix B.
  assert.deepEqual(HUFFMAN_CODE[0], [0x1ff8, 13]);
  assert.deepEqual(HUFFMAN_CODE[10], [0x3ffffffc, 30]);
  assert.deepEqual(HUFFMAN_CODE[0x30], [0x0, 5]); // '0'
  assert.deepEqual(HUFFMAN_CODE[0x61], [0x3, 5]); // 'a'
  assert.deepEqual(HUFFMAN_CODE[255], [0x3ffffee, 26]);
  assert.deepEqual(HUFFMAN_CODE[HUFFMAN_EOS], [0x3fffffff, 30]);
});

test('the table equals the independent copy in hpack.js (a devDependency of the test client)', () => {
  const theirs = (require('hpack.js/lib/hpack/huffman.js') as { encode: [number, number][] }).encode;
  assert.deepEqual(
    HUFFMAN_CODE.map(([code, bits]) => [bits, code]),
    theirs,
  );
});

/** Decodes one block keeping every name; returns [name, value] pairs. */
function decodeBlock(d: HpackDecoder, hex: string): [string, string][] {
  const out: [string, string][] = [];
  d.decode(Buffer.from(hex.replace(/\s+/g, ''), 'hex'), (f) => out.push([f.name, f.value]));
  return out;
}

const REQUEST_NAMES = new Set([':method', ':scheme', ':path', ':authority', 'cache-control', 'custom-key']);
const RESPONSE_NAMES = new Set([':status', 'cache-control', 'date', 'location', 'content-encoding', 'set-cookie']);

test('decodes RFC 7541 C.4 (requests with Huffman coding), keeping the table in step', () => {
  const d = new HpackDecoder(4096, REQUEST_NAMES);
  assert.deepEqual(decodeBlock(d, '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff'), [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
  ]);
  assert.equal(d.tableSize, 57);
  assert.deepEqual(decodeBlock(d, '8286 84be 5886 a8eb 1064 9cbf'), [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
    ['cache-control', 'no-cache'],
  ]);
  assert.equal(d.tableSize, 110);
  assert.deepEqual(decodeBlock(d, '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf'), [
    [':method', 'GET'],
    [':scheme', 'https'],
    [':path', '/index.html'],
    [':authority', 'www.example.com'],
    ['custom-key', 'custom-value'],
  ]);
  assert.equal(d.tableSize, 164);
});

test('decodes RFC 7541 C.6 (responses with Huffman coding, 256-octet table with eviction)', () => {
  const d = new HpackDecoder(256, RESPONSE_NAMES);
  const first = decodeBlock(
    d,
    `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
     2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
  );
  assert.deepEqual(first, [
    [':status', '302'],
    ['cache-control', 'private'],
    ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'],
    ['location', 'https://www.example.com'],
  ]);
  assert.equal(d.tableSize, 222);
  assert.deepEqual(decodeBlock(d, '4883 640e ffc1 c0bf'), [
    [':status', '307'],
    ['cache-control', 'private'],
    ['date', 'Mon, 21 Oct 2013 20:13:21 GMT'],
    ['location', 'https://www.example.com'],
  ]);
  assert.equal(d.tableSize, 222);
  const third = decodeBlock(
    d,
    `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
     77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
     9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
  );
  assert.deepEqual(third, [
    [':status', '200'],
    ['cache-control', 'private'],
    ['date', 'Mon, 21 Oct 2013 20:13:22 GMT'],
    ['location', 'https://www.example.com'],
    ['content-encoding', 'gzip'],
    ['set-cookie', 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1'],
  ]);
  assert.equal(d.tableSize, 215);
});

/** A literal-without-indexing field (name index 1, :authority) whose value is `raw` flagged as Huffman. */
function huffmanLiteral(raw: Buffer): Buffer {
  assert.ok(raw.length < 127);
  return Buffer.concat([Buffer.from([0x01, 0x80 | raw.length]), raw]);
}

function decodeAuthority(block: Buffer): string | undefined {
  let value: string | undefined;
  new HpackDecoder(4096, new Set([':authority'])).decode(block, (f) => {
    value = f.value;
  });
  return value;
}

test('refuses invalid Huffman strings with HpackError: EOS, long padding, padding with a zero bit', () => {
  // 'a' is 00011 (5 bits): padded with three 1s it is one octet.
  assert.equal(decodeAuthority(huffmanLiteral(Buffer.from([0b00011_111]))), 'a');
  const cases: [string, Buffer, RegExp][] = [
    ['EOS (30 ones) inside the string', Buffer.from([0xff, 0xff, 0xff, 0xfc]), /EOS/],
    ['EOS after a symbol', Buffer.from([0b00011_111, 0xff, 0xff, 0xff, 0xe0]), /EOS/],
    ['padding of 11 bits (a whole octet of 1s too many)', Buffer.from([0b00011_111, 0xff]), /padding/],
    ['padding of 8 bits (an empty-looking octet)', Buffer.from([0xff]), /padding/],
    ['padding that is not all ones', Buffer.from([0b00011_110]), /padding/],
    ['padding that is all zeros', Buffer.from([0b00011_000]), /padding/],
  ];
  for (const [why, raw, message] of cases) {
    assert.throws(() => decodeAuthority(huffmanLiteral(raw)), (err: unknown) => {
      assert.ok(err instanceof HpackError, `${why}: ${String(err)}`);
      assert.match(err.message, message, why);
      return true;
    });
  }
});

test('decodes any octet string Huffman-encoded by the independent encoder, and the empty string', () => {
  assert.equal(decodeAuthority(huffmanLiteral(Buffer.alloc(0))), '');
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 60 }), (bytes) => {
      const s = Buffer.from(bytes).toString('latin1');
      assert.equal(decodeAuthority(hpackLiteral('without', 1, s, true)), s);
    }),
    { numRuns: 1000 },
  );
});
