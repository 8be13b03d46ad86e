// What kube-apiserver checks in kms v2 plugin answers and stored EncryptedObjects (key_id, encrypted DEK
// source, annotations). Pure predicates returning problem strings; callers choose the error type.

import {
  V2_ANNOTATIONS_MAX_BYTES,
  V2_CIPHERTEXT_MAX_BYTES,
  V2_KEY_ID_MAX_BYTES,
} from '../proto/kms-v2.js';
import {
  DEK_SOURCE_AES_GCM_KEY,
  DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED,
} from '../proto/encrypted-object.js';

export function validateKeyID(keyID: string): string | undefined {
  if (keyID.length === 0) return 'keyID is empty';
  const n = Buffer.byteLength(keyID, 'utf8');
  if (n > V2_KEY_ID_MAX_BYTES) {
    return `keyID is ${n} bytes, which exceeds the max size of ${V2_KEY_ID_MAX_BYTES}`;
  }
  return undefined;
}

export function validateEncryptedDEKSource(source: Uint8Array): string | undefined {
  if (source.length === 0) return 'encrypted DEK source is empty';
  if (source.length > V2_CIPHERTEXT_MAX_BYTES) {
    return `encrypted DEK source is ${source.length} bytes, which exceeds the max size of ${V2_CIPHERTEXT_MAX_BYTES}`;
  }
  return undefined;
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/**
 * apimachinery's IsFullyQualifiedDomainName: one optional trailing dot ignored, then a lowercase RFC 1123
 * subdomain (<= 253 chars, labels <= 63) with at least two labels. No `/`.
 */
export function isFullyQualifiedDomainName(name: string): boolean {
  if (name.length === 0) return false;
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  if (n.length > 253 || !DNS1123_SUBDOMAIN.test(n)) return false;
  const labels = n.split('.');
  if (labels.length < 2) return false;
  return labels.every((l) => l.length <= 63 && DNS1123_LABEL.test(l));
}

export function validateAnnotations(annotations: Readonly<Record<string, Uint8Array>>): string[] {
  const problems: string[] = [];
  let total = 0;
  for (const [k, v] of Object.entries(annotations)) {
    if (!isFullyQualifiedDomainName(k)) {
      const shown = k.length > 64 ? `${k.slice(0, 64)}...` : k;
      problems.push(`annotation key ${JSON.stringify(shown)} is not a fully qualified domain name`);
    }
    total += Buffer.byteLength(k, 'utf8') + v.length;
  }
  if (total > V2_ANNOTATIONS_MAX_BYTES) {
    problems.push(
      `total size of annotations is ${total}, which exceeds the max size of ${V2_ANNOTATIONS_MAX_BYTES}`,
    );
  }
  return problems;
}

/** The fields of a kms v2 EncryptedObject; `Bytes` is Buffer once decoded (kms-v2-format.ts). */
export interface EncryptedObjectFields<Bytes extends Uint8Array = Uint8Array> {
  readonly encryptedData: Bytes;
  readonly keyID: string;
  readonly encryptedDEKSource: Bytes;
  readonly annotations: Readonly<Record<string, Bytes>>;
  readonly encryptedDEKSourceType: number;
}

/** ValidateEncryptedObject: run on every write and every read. */
export function validateEncryptedObject(o: EncryptedObjectFields): string[] {
  const problems: string[] = [];
  if (
    o.encryptedDEKSourceType !== DEK_SOURCE_AES_GCM_KEY &&
    o.encryptedDEKSourceType !== DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED
  ) {
    problems.push(`unknown encryptedDEKSourceType: ${o.encryptedDEKSourceType}`);
  }
  if (o.encryptedData.length === 0) problems.push('encrypted data is empty');
  const source = validateEncryptedDEKSource(o.encryptedDEKSource);
  if (source) problems.push(source);
  const keyID = validateKeyID(o.keyID);
  if (keyID) problems.push(keyID);
  problems.push(...validateAnnotations(o.annotations));
  return problems;
}

export { keyIDHash } from '../key-id.js';
