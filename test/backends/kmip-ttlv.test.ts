// The KMIP TTLV codec (src/backends/kmip/): the encoding examples published in the KMIP
// Specification and the request of KMIP test case 3.1.1, byte for byte; our request messages checked against PyKMIP's own message classes
// (pykmip-python from scripts/setup/71-pykmip.sh, test/backends/kmip_tool.py) in both directions;
// and hostile input: random, truncated, over-long or over-nested bytes never crash the decoder.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { FormatInvalidError } from '../../src/errors.js';
import {
  TTLV_MAX_DEPTH,
  decodeTtlv,
  encodeTtlv,
  ttlv,
  type TtlvItem,
} from '../../src/backends/kmip/ttlv.js';
import {
  OPERATION,
  TAG,
  decryptRequest,
  encryptRequest,
  locateActiveKeys,
  parseResponse,
  bytesField,
  textField,
} from '../../src/backends/kmip/messages.js';
import { execFile } from 'node:child_process';
import { findTool } from './servers.js';
import { KMIP_TOOL } from './pykmip.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/[\s|]/g, ''), 'hex');

// KMIP Specification v1.4 (OASIS, 2016), section 9.1.2 "Examples" of the TTLV encoding, tag 0x420020,
// written in from the specification's table ("|" separates tag, type, length and value as there).
const SPEC_EXAMPLES: readonly { what: string; item: TtlvItem; bytes: string }[] = [
  {
    what: 'an Integer containing the decimal value 8',
    item: { tag: 0x420020, type: 'integer', value: 8 },
    bytes: '42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00',
  },
  {
    what: 'a Long Integer containing the decimal value 123456789000000000',
    item: { tag: 0x420020, type: 'longInteger', value: 123456789000000000n },
    bytes: '42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00',
  },
  {
    what: 'an Enumeration with value 255',
    item: { tag: 0x420020, type: 'enumeration', value: 255 },
    bytes: '42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00',
  },
  {
    what: 'a Boolean with the value True',
    item: { tag: 0x420020, type: 'boolean', value: true },
    bytes: '42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01',
  },
  {
    what: 'a Text String with the value "Hello World"',
    item: { tag: 0x420020, type: 'textString', value: 'Hello World' },
    bytes: '42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00',
  },
  {
    what: 'a Byte String with the value { 0x01, 0x02, 0x03 }',
    item: { tag: 0x420020, type: 'byteString', value: Buffer.from([1, 2, 3]) },
    bytes: '42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00',
  },
  {
    what: 'a Date-Time for Friday, March 14, 2008, 11:56:40 GMT',
    item: { tag: 0x420020, type: 'dateTime', value: 0x47da67f8n },
    bytes: '42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8',
  },
  {
    what: 'an Interval for 10 days',
    item: { tag: 0x420020, type: 'interval', value: 864000 },
    bytes: '42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00',
  },
  {
    what: 'a Structure containing an Enumeration, value 254, followed by an Integer, value 255',
    item: {
      tag: 0x420020,
      type: 'structure',
      value: [
        { tag: 0x420004, type: 'enumeration', value: 254 },
        { tag: 0x420005, type: 'integer', value: 255 },
      ],
    },
    bytes:
      '42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 |' +
      ' 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00',
  },
];

// KMIP Use Cases / Test Cases 1.0 (OASIS), test case 3.1.1 "Create / Destroy", the client's first
// message: Create an AES-128 Symmetric Key with usage mask Encrypt|Decrypt (0x0C), protocol 1.0.
const TC_3_1_1_CREATE_REQUEST =
  '42007801000001204200770100000038420069010000002042006A0200000004000000010000000042006B0200000' +
  '004000000000000000042000D0200000004000000010000000042000F01000000D842005C05000000040000000100' +
  '00000042007901000000C04200570500000004000000020000000042009101000000A8420008010000003042000A0' +
  '70000001743727970746F6772617068696320416C676F726974686D0042000B050000000400000003000000004200' +
  '08010000003042000A070000001443727970746F67726170686963204C656E6774680000000042000B02000000040' +
  '000008000000000420008010000003042000A070000001843727970746F67726170686963205573616765204D6173' +
  '6B42000B02000000040000000C00000000';

function tc311Create(): TtlvItem {
  const attribute = (name: string, value: TtlvItem): TtlvItem =>
    ttlv.struct(TAG.ATTRIBUTE, [ttlv.text(TAG.ATTRIBUTE_NAME, name), value]);
  return ttlv.struct(TAG.REQUEST_MESSAGE, [
    ttlv.struct(TAG.REQUEST_HEADER, [
      ttlv.struct(TAG.PROTOCOL_VERSION, [
        ttlv.int(TAG.PROTOCOL_VERSION_MAJOR, 1),
        ttlv.int(TAG.PROTOCOL_VERSION_MINOR, 0),
      ]),
      ttlv.int(TAG.BATCH_COUNT, 1),
    ]),
    ttlv.struct(TAG.BATCH_ITEM, [
      ttlv.enumeration(TAG.OPERATION, OPERATION.CREATE),
      ttlv.struct(TAG.REQUEST_PAYLOAD, [
        ttlv.enumeration(TAG.OBJECT_TYPE, 2),
        ttlv.struct(TAG.TEMPLATE_ATTRIBUTE, [
          attribute('Cryptographic Algorithm', ttlv.enumeration(TAG.ATTRIBUTE_VALUE, 3)),
          attribute('Cryptographic Length', ttlv.int(TAG.ATTRIBUTE_VALUE, 128)),
          attribute('Cryptographic Usage Mask', ttlv.int(TAG.ATTRIBUTE_VALUE, 0x0c)),
        ]),
      ]),
    ]),
  ]);
}

function pykmip(cases: unknown[]): Promise<unknown[]> {
  const python = findTool('pykmip-python', '71-pykmip.sh');
  return new Promise((resolve, reject) => {
    const child = execFile(
      python,
      [KMIP_TOOL, 'codec'],
      { env: { ...process.env, PYTHONWARNINGS: 'ignore' } },
      (err, stdout, stderr) => {
        if (err !== null) reject(new Error(`kmip_tool.py codec failed: ${stderr}`));
        else resolve(JSON.parse(stdout) as unknown[]);
      },
    );
    child.stdin!.end(JSON.stringify(cases));
  });
}

describe('KMIP TTLV codec', () => {
  for (const v of SPEC_EXAMPLES) {
    it(`encodes and decodes the specification's example: ${v.what}`, () => {
      assert.deepEqual(encodeTtlv(v.item).toString('hex'), hex(v.bytes).toString('hex'));
      assert.deepEqual(decodeTtlv(hex(v.bytes)), v.item);
    });
  }

  it('encodes and decodes the Create request of KMIP test case 3.1.1 byte for byte', () => {
    assert.equal(encodeTtlv(tc311Create()).toString('hex'), TC_3_1_1_CREATE_REQUEST.toLowerCase());
    assert.deepEqual(decodeTtlv(Buffer.from(TC_3_1_1_CREATE_REQUEST, 'hex')), tc311Create());
  });

  it("reads the specification's examples the way PyKMIP's primitives do", async () => {
    // (PyKMIP reads an Enumeration only into one of its enum classes, which has no value 255.)
    const primitives = SPEC_EXAMPLES.filter(
      (v) => v.item.type !== 'structure' && v.item.type !== 'enumeration',
    );
    const got = await pykmip(
      primitives.map((v) => ({
        op: 'decode-item',
        type: v.item.type,
        tag: v.item.tag,
        hex: hex(v.bytes).toString('hex'),
      })),
    );
    const expected = primitives.map((v) => {
      const value = v.item.value as unknown;
      if (Buffer.isBuffer(value)) return value.toString('hex');
      if (typeof value === 'bigint') return value.toString();
      if (typeof value === 'number') return String(value);
      return value;
    });
    assert.deepEqual(got, expected);
  });

  it("encodes Encrypt and Decrypt requests exactly as PyKMIP's message classes do (KMIP 1.4)", async () => {
    const uid = '1f165d65-cbbd-4bd6-9867-80e0b390acf9';
    const data = randomBytes(32);
    const iv = randomBytes(12);
    const aad = randomBytes(40);
    const tag = randomBytes(16);
    const [enc, dec] = (await pykmip([
      {
        op: 'encrypt-request',
        uid,
        data: data.toString('hex'),
        iv: iv.toString('hex'),
        aad: aad.toString('hex'),
        tagLength: 16,
      },
      {
        op: 'decrypt-request',
        uid,
        data: data.toString('hex'),
        iv: iv.toString('hex'),
        aad: aad.toString('hex'),
        tag: tag.toString('hex'),
      },
    ])) as string[];
    assert.equal(encodeTtlv(encryptRequest(uid, data, iv, aad, 16)).toString('hex'), enc);
    assert.equal(encodeTtlv(decryptRequest(uid, data, iv, aad, tag)).toString('hex'), dec);
  });

  it('writes requests PyKMIP reads back field by field', async () => {
    const data = randomBytes(32);
    const iv = randomBytes(12);
    const aad = randomBytes(7);
    const tag = randomBytes(16);
    const [dec, loc] = (await pykmip([
      {
        op: 'decode-request',
        hex: encodeTtlv(decryptRequest('42', data, iv, aad, tag)).toString('hex'),
      },
      { op: 'decode-request', hex: encodeTtlv(locateActiveKeys('atrest-kek')).toString('hex') },
    ])) as Record<string, unknown>[];
    assert.deepEqual(dec, {
      version: [1, 4],
      operation: 'DECRYPT',
      uid: '42',
      mode: 'GCM',
      algorithm: 'AES',
      tagLength: 16,
      data: data.toString('hex'),
      iv: iv.toString('hex'),
      aad: aad.toString('hex'),
      tag: tag.toString('hex'),
    });
    assert.deepEqual(loc, {
      version: [1, 4],
      operation: 'LOCATE',
      attributes: ['Name', 'Object Type', 'State'],
    });
  });

  it("reads an Encrypt response written by PyKMIP's message classes", async () => {
    const data = randomBytes(32);
    const tag = randomBytes(16);
    const [res] = (await pykmip([
      { op: 'encrypt-response', uid: '7', data: data.toString('hex'), tag: tag.toString('hex') },
    ])) as string[];
    const r = parseResponse(decodeTtlv(Buffer.from(res!, 'hex')));
    assert.equal(r.ok, true);
    assert.ok(r.ok);
    assert.equal(textField(r.payload, TAG.UNIQUE_IDENTIFIER), '7');
    assert.deepEqual(bytesField(r.payload, TAG.DATA), data);
    assert.deepEqual(bytesField(r.payload, TAG.AE_TAG), tag);
  });

  it('refuses truncated, padded-wrong, unknown-type and over-nested input with a format error', () => {
    const good = encodeTtlv(
      encryptRequest('1', randomBytes(32), randomBytes(12), randomBytes(8), 16),
    );
    for (let n = 0; n < good.length; n += 7) {
      assert.throws(() => decodeTtlv(good.subarray(0, n)), FormatInvalidError, `truncated at ${n}`);
    }
    const badPad = hex('42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 01');
    assert.throws(() => decodeTtlv(badPad), FormatInvalidError);
    const badType = hex('42 00 20 | 0F | 00 00 00 04 | 00 00 00 08 00 00 00 00');
    assert.throws(() => decodeTtlv(badType), FormatInvalidError);
    const huge = hex('42 00 20 | 08 | FF FF FF FF | 00 00 00 00 00 00 00 00');
    assert.throws(() => decodeTtlv(huge), FormatInvalidError);
    let nested: TtlvItem = { tag: 0x420020, type: 'integer', value: 1 };
    for (let i = 0; i <= TTLV_MAX_DEPTH + 1; i++)
      nested = { tag: 0x420020, type: 'structure', value: [nested] };
    assert.throws(() => decodeTtlv(encodeTtlv(nested)), FormatInvalidError);
  });

  it('never crashes on random bytes, and round-trips what it decodes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        let item: TtlvItem;
        try {
          item = decodeTtlv(Buffer.from(bytes));
        } catch (err) {
          assert.ok(err instanceof FormatInvalidError, String(err));
          return;
        }
        assert.deepEqual(encodeTtlv(item), Buffer.from(bytes));
      }),
      { numRuns: 2000 },
    );
  });
});
