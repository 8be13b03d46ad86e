import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { HpackDecoder, HpackError, type HpackField } from '../../src/grpc/hpack.js';
import { hpackIndexed, hpackLiteral, hpackSizeUpdate, huffmanEncode } from './raw-h2.js';

const keep = new Set([':authority', 'host']);

function decodeAll(d: HpackDecoder, block: Buffer): HpackField[] {
  const out: HpackField[] = [];
  d.decode(block, (f) => out.push({ ...f }));
  return out;
}

test('decodes the RFC 7541 C.4 request sequence (Huffman, dynamic table) in step with the encoder', () => {
  const d = new HpackDecoder(4096, keep);
  const c41 = Buffer.from('828684418cf1e3c2e5f23a6ba0ab90f4ff', 'hex');
  const c42 = Buffer.from('828684be5886a8eb10649cbf', 'hex');
  const c43 = Buffer.from('828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf', 'hex');
  const f1 = decodeAll(d, c41);
  assert.deepEqual(f1.map((f) => [f.name, f.value]), [[':authority', 'www.example.com']]);
  assert.equal(d.tableSize, 57);
  const f2 = decodeAll(d, c42);
  assert.deepEqual(f2.map((f) => [f.name, f.value, f.valueStart]), [[':authority', 'www.example.com', -1]]);
  assert.equal(d.tableSize, 110);
  decodeAll(d, c43);
  assert.equal(d.tableSize, 164);
});

test('evicts the oldest entries and honours a table size update', () => {
  const d = new HpackDecoder(4096, keep);
  decodeAll(d, hpackLiteral('incremental', 1, 'a'.repeat(100)));
  assert.equal(d.tableSize, 10 + 100 + 32);
  decodeAll(d, Buffer.concat([hpackSizeUpdate(200), hpackLiteral('incremental', 'x-big', 'b'.repeat(50))]));
  assert.equal(d.tableSize, 5 + 50 + 32, 'the authority entry was evicted to make room');
  assert.throws(() => decodeAll(d, hpackIndexed(63)), HpackError);
  const [f] = decodeAll(d, Buffer.concat([hpackSizeUpdate(0), hpackLiteral('incremental', 1, '/x')]));
  assert.equal(f?.value, '/x');
  assert.equal(d.tableSize, 0);
});

test('refuses a size update above the announced limit, or after a field', () => {
  const d = new HpackDecoder(4096, keep);
  assert.throws(() => decodeAll(d, hpackSizeUpdate(4097)), HpackError);
  assert.throws(() => decodeAll(d, Buffer.concat([hpackIndexed(2), hpackSizeUpdate(100)])), HpackError);
});

test('reports the value byte range of a literal authority, Huffman or not', () => {
  for (const huffman of [false, true]) {
    const d = new HpackDecoder(4096, keep);
    const lit = hpackLiteral('never', 1, '/var/run/kms.sock', huffman);
    const block = Buffer.concat([hpackIndexed(3), lit]);
    const [f] = decodeAll(d, block);
    assert.equal(f?.value, '/var/run/kms.sock');
    assert.equal(f?.start, 1);
    assert.equal(f?.valueStart, 2);
    assert.equal(f?.end, block.length);
  }
});

test('rejects bad Huffman padding and EOS', () => {
  const d = new HpackDecoder(4096, keep);
  const good = huffmanEncode('a'); // 5 code bits + 3 padding bits
  const badPad = Buffer.from(good);
  badPad[badPad.length - 1] = badPad[badPad.length - 1]! & 0xfe; // a 0 bit in the padding
  assert.throws(() => decodeAll(d, Buffer.concat([Buffer.from([0x01, 0x80 | badPad.length]), badPad])), HpackError);
  const eos = Buffer.from([0xff, 0xff, 0xff, 0xff]);
  assert.throws(() => decodeAll(d, Buffer.concat([Buffer.from([0x01, 0x84]), eos])), HpackError);
});

test('random bytes never crash the decoder with anything but HpackError', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const d = new HpackDecoder(4096, keep);
      try {
        d.decode(Buffer.from(bytes), () => {});
      } catch (err) {
        assert.ok(err instanceof HpackError, String(err));
      }
    }),
    { numRuns: 2000 },
  );
});
