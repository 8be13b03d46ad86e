// The few KMIP 1.4 operations the kmip backend uses (Locate, Encrypt, Decrypt, and for tests Create
// and Activate): request messages built from the specification's tables, response messages read back
// into plain values. Wire constants (tags, enumerations) live in the tables below. Pure: no I/O.

import { FormatInvalidError } from '../../errors.js';
import { child, children, ttlv, type TtlvItem } from './ttlv.js';

/** KMIP tags (KMIP Specification 1.4, section 9.1.3.1). */
export const TAG = {
  ATTRIBUTE: 0x420008,
  ATTRIBUTE_NAME: 0x42000a,
  ATTRIBUTE_VALUE: 0x42000b,
  BATCH_COUNT: 0x42000d,
  BATCH_ITEM: 0x42000f,
  BLOCK_CIPHER_MODE: 0x420011,
  CRYPTOGRAPHIC_ALGORITHM: 0x420028,
  CRYPTOGRAPHIC_LENGTH: 0x42002a,
  CRYPTOGRAPHIC_PARAMETERS: 0x42002b,
  CRYPTOGRAPHIC_USAGE_MASK: 0x42002c,
  IV_COUNTER_NONCE: 0x42003d,
  NAME: 0x420053,
  NAME_TYPE: 0x420054,
  NAME_VALUE: 0x420055,
  OBJECT_TYPE: 0x420057,
  OPERATION: 0x42005c,
  PROTOCOL_VERSION: 0x420069,
  PROTOCOL_VERSION_MAJOR: 0x42006a,
  PROTOCOL_VERSION_MINOR: 0x42006b,
  REQUEST_HEADER: 0x420077,
  REQUEST_MESSAGE: 0x420078,
  REQUEST_PAYLOAD: 0x420079,
  RESPONSE_HEADER: 0x42007a,
  RESPONSE_MESSAGE: 0x42007b,
  RESPONSE_PAYLOAD: 0x42007c,
  RESULT_MESSAGE: 0x42007d,
  RESULT_REASON: 0x42007e,
  RESULT_STATUS: 0x42007f,
  STATE: 0x42008d,
  TEMPLATE_ATTRIBUTE: 0x420091,
  UNIQUE_IDENTIFIER: 0x420094,
  DATA: 0x4200c2,
  TAG_LENGTH: 0x4200ce,
  AE_ADDITIONAL_DATA: 0x4200fe,
  AE_TAG: 0x4200ff,
} as const;

export const OPERATION = {
  CREATE: 0x01,
  LOCATE: 0x08,
  ACTIVATE: 0x12,
  ENCRYPT: 0x1f,
  DECRYPT: 0x20,
} as const;

export const OBJECT_TYPE_SYMMETRIC_KEY = 0x02;
export const STATE_ACTIVE = 0x02;
export const NAME_TYPE_UNINTERPRETED_TEXT = 0x01;
export const ALGORITHM_AES = 0x03;
export const BLOCK_CIPHER_MODE_GCM = 0x09;
export const USAGE_ENCRYPT = 0x04;
export const USAGE_DECRYPT = 0x08;
export const RESULT_STATUS_SUCCESS = 0x00;

/** Result reasons (section 9.1.3.2.29) the backend sorts into error kinds. */
export const RESULT_REASON = {
  ITEM_NOT_FOUND: 0x01,
  RESPONSE_TOO_LARGE: 0x02,
  AUTHENTICATION_NOT_SUCCESSFUL: 0x03,
  INVALID_MESSAGE: 0x04,
  OPERATION_NOT_SUPPORTED: 0x05,
  MISSING_DATA: 0x06,
  INVALID_FIELD: 0x07,
  FEATURE_NOT_SUPPORTED: 0x08,
  CRYPTOGRAPHIC_FAILURE: 0x0a,
  ILLEGAL_OPERATION: 0x0b,
  PERMISSION_DENIED: 0x0c,
  OBJECT_ARCHIVED: 0x0d,
  GENERAL_FAILURE: 0x100,
} as const;

/** Encrypt and Decrypt with additional data need KMIP 1.4. */
export const PROTOCOL_VERSION = { major: 1, minor: 4 } as const;

export type KmipRequestPayload = readonly (TtlvItem | undefined)[];

export function requestMessage(operation: number, payload: KmipRequestPayload): TtlvItem {
  return ttlv.struct(TAG.REQUEST_MESSAGE, [
    ttlv.struct(TAG.REQUEST_HEADER, [
      ttlv.struct(TAG.PROTOCOL_VERSION, [
        ttlv.int(TAG.PROTOCOL_VERSION_MAJOR, PROTOCOL_VERSION.major),
        ttlv.int(TAG.PROTOCOL_VERSION_MINOR, PROTOCOL_VERSION.minor),
      ]),
      ttlv.int(TAG.BATCH_COUNT, 1),
    ]),
    ttlv.struct(TAG.BATCH_ITEM, [
      ttlv.enumeration(TAG.OPERATION, operation),
      ttlv.struct(TAG.REQUEST_PAYLOAD, payload),
    ]),
  ]);
}

function attribute(name: string, value: TtlvItem): TtlvItem {
  return ttlv.struct(TAG.ATTRIBUTE, [
    ttlv.text(TAG.ATTRIBUTE_NAME, name),
    { ...value, tag: TAG.ATTRIBUTE_VALUE } as TtlvItem,
  ]);
}

function nameValue(name: string): TtlvItem {
  return ttlv.struct(TAG.ATTRIBUTE_VALUE, [
    ttlv.text(TAG.NAME_VALUE, name),
    ttlv.enumeration(TAG.NAME_TYPE, NAME_TYPE_UNINTERPRETED_TEXT),
  ]);
}

/** Locate the active symmetric keys named `name`; servers list the most recent first. */
export function locateActiveKeys(name: string): TtlvItem {
  return requestMessage(OPERATION.LOCATE, [
    attribute('Object Type', ttlv.enumeration(0, OBJECT_TYPE_SYMMETRIC_KEY)),
    attribute('State', ttlv.enumeration(0, STATE_ACTIVE)),
    attribute('Name', nameValue(name)),
  ]);
}

function gcmParameters(tagBytes: number): TtlvItem {
  return ttlv.struct(TAG.CRYPTOGRAPHIC_PARAMETERS, [
    ttlv.enumeration(TAG.BLOCK_CIPHER_MODE, BLOCK_CIPHER_MODE_GCM),
    ttlv.enumeration(TAG.CRYPTOGRAPHIC_ALGORITHM, ALGORITHM_AES),
    ttlv.int(TAG.TAG_LENGTH, tagBytes),
  ]);
}

export function encryptRequest(
  uid: string,
  data: Buffer,
  iv: Buffer,
  aad: Buffer,
  tagBytes: number,
): TtlvItem {
  return requestMessage(OPERATION.ENCRYPT, [
    ttlv.text(TAG.UNIQUE_IDENTIFIER, uid),
    gcmParameters(tagBytes),
    ttlv.bytes(TAG.DATA, data),
    ttlv.bytes(TAG.IV_COUNTER_NONCE, iv),
    ttlv.bytes(TAG.AE_ADDITIONAL_DATA, aad),
  ]);
}

export function decryptRequest(
  uid: string,
  data: Buffer,
  iv: Buffer,
  aad: Buffer,
  tag: Buffer,
): TtlvItem {
  return requestMessage(OPERATION.DECRYPT, [
    ttlv.text(TAG.UNIQUE_IDENTIFIER, uid),
    gcmParameters(tag.length),
    ttlv.bytes(TAG.DATA, data),
    ttlv.bytes(TAG.IV_COUNTER_NONCE, iv),
    ttlv.bytes(TAG.AE_ADDITIONAL_DATA, aad),
    ttlv.bytes(TAG.AE_TAG, tag),
  ]);
}

/** Create an AES key of `bits` named `name`, usable for Encrypt and Decrypt (KMIP 1.x template). */
export function createAesKeyRequest(name: string, bits: number): TtlvItem {
  return requestMessage(OPERATION.CREATE, [
    ttlv.enumeration(TAG.OBJECT_TYPE, OBJECT_TYPE_SYMMETRIC_KEY),
    ttlv.struct(TAG.TEMPLATE_ATTRIBUTE, [
      attribute('Cryptographic Algorithm', ttlv.enumeration(0, ALGORITHM_AES)),
      attribute('Cryptographic Length', ttlv.int(0, bits)),
      attribute('Cryptographic Usage Mask', ttlv.int(0, USAGE_ENCRYPT | USAGE_DECRYPT)),
      attribute('Name', nameValue(name)),
    ]),
  ]);
}

export function activateRequest(uid: string): TtlvItem {
  return requestMessage(OPERATION.ACTIVATE, [ttlv.text(TAG.UNIQUE_IDENTIFIER, uid)]);
}

export type KmipResult =
  | { readonly ok: true; readonly operation: number; readonly payload: TtlvItem | undefined }
  | {
      readonly ok: false;
      readonly operation: number | undefined;
      readonly status: number;
      readonly reason: number | undefined;
      readonly message: string;
    };

function bad(message: string): FormatInvalidError {
  return new FormatInvalidError('ERR_FORMAT_MALFORMED', `KMIP response: ${message}`);
}

/** Reads the one batch item of a response message. */
export function parseResponse(message: TtlvItem): KmipResult {
  if (message.tag !== TAG.RESPONSE_MESSAGE) throw bad('not a Response Message');
  const items = children(message).filter((c) => c.tag === TAG.BATCH_ITEM);
  if (items.length !== 1) throw bad(`${items.length} batch items, expected 1`);
  const item = items[0]!;
  const op = child(item, TAG.OPERATION);
  const operation = op?.type === 'enumeration' ? op.value : undefined;
  const status = child(item, TAG.RESULT_STATUS);
  if (status?.type !== 'enumeration') throw bad('no Result Status');
  if (status.value === RESULT_STATUS_SUCCESS) {
    return { ok: true, operation: operation ?? -1, payload: child(item, TAG.RESPONSE_PAYLOAD) };
  }
  const reason = child(item, TAG.RESULT_REASON);
  const msg = child(item, TAG.RESULT_MESSAGE);
  return {
    ok: false,
    operation,
    status: status.value,
    reason: reason?.type === 'enumeration' ? reason.value : undefined,
    message: msg?.type === 'textString' ? msg.value.slice(0, 300) : '',
  };
}

export function textField(payload: TtlvItem | undefined, tag: number): string | undefined {
  const f = payload === undefined ? undefined : child(payload, tag);
  return f?.type === 'textString' ? f.value : undefined;
}

export function textFields(payload: TtlvItem | undefined, tag: number): string[] {
  if (payload === undefined) return [];
  return children(payload)
    .filter((c) => c.tag === tag && c.type === 'textString')
    .map((c) => (c as { value: string }).value);
}

export function bytesField(payload: TtlvItem | undefined, tag: number): Buffer | undefined {
  const f = payload === undefined ? undefined : child(payload, tag);
  return f?.type === 'byteString' ? f.value : undefined;
}
