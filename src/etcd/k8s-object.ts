// Decodes what kube-apiserver stores in etcd once it is decrypted: the Kubernetes protobuf storage
// encoding or JSON (custom resources). Secrets and ConfigMaps are decoded field by field; other kinds
// show apiVersion, kind, metadata (field 1 of every built-in object) and the size of the rest.
//
// Protobuf storage encoding:
//   [magic "k8s\0"] runtime.Unknown {1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding, 4 contentType}
//   raw = the object message: Secret {1 metadata, 2 data map<string,bytes>, 3 type, 4 stringData, 5 immutable}
//                             ConfigMap {1 metadata, 2 data map<string,string>, 3 binaryData, 4 immutable}
//   ObjectMeta {1 name, 2 generateName, 3 namespace, 5 uid, 6 resourceVersion, 7 generation,
//               8 creationTimestamp Time {1 seconds, 2 nanos}, 11 labels, 12 annotations}
// Field numbers are from k8s.io/api core/v1 and k8s.io/apimachinery meta/v1 generated.proto.

import { FormatInvalidError } from '../errors.js';
import { defineMessage } from '../proto/wire.js';

export const K8S_PROTOBUF_MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);
export const REDACTED = 'REDACTED';

const Unknown = defineMessage('runtime.Unknown', {
  typeMeta: { no: 1, kind: 'bytes' },
  raw: { no: 2, kind: 'bytes' },
  contentEncoding: { no: 3, kind: 'string' },
  contentType: { no: 4, kind: 'string' },
});

const TypeMeta = defineMessage('runtime.TypeMeta', {
  apiVersion: { no: 1, kind: 'string' },
  kind: { no: 2, kind: 'string' },
});

// Only field 1 is read from any object; every built-in kind keeps ObjectMeta there.
const AnyObject = defineMessage('Object', { metadata: { no: 1, kind: 'bytes' } });

const ObjectMeta = defineMessage('meta.v1.ObjectMeta', {
  name: { no: 1, kind: 'string' },
  generateName: { no: 2, kind: 'string' },
  namespace: { no: 3, kind: 'string' },
  uid: { no: 5, kind: 'string' },
  resourceVersion: { no: 6, kind: 'string' },
  generation: { no: 7, kind: 'enum' },
  creationTimestamp: { no: 8, kind: 'bytes' },
  deletionTimestamp: { no: 9, kind: 'bytes' },
  labels: { no: 11, kind: 'map<string,bytes>' },
  annotations: { no: 12, kind: 'map<string,bytes>' },
});

const Time = defineMessage('meta.v1.Time', {
  seconds: { no: 1, kind: 'enum' },
  nanos: { no: 2, kind: 'enum' },
});

const Secret = defineMessage('core.v1.Secret', {
  metadata: { no: 1, kind: 'bytes' },
  data: { no: 2, kind: 'map<string,bytes>' },
  type: { no: 3, kind: 'string' },
  stringData: { no: 4, kind: 'map<string,bytes>' },
  immutable: { no: 5, kind: 'enum' },
});

const ConfigMap = defineMessage('core.v1.ConfigMap', {
  metadata: { no: 1, kind: 'bytes' },
  data: { no: 2, kind: 'map<string,bytes>' },
  binaryData: { no: 3, kind: 'map<string,bytes>' },
  immutable: { no: 4, kind: 'enum' },
});

export type StorageEncoding = 'protobuf' | 'json' | 'unknown';

export interface DecodedObject {
  readonly encoding: StorageEncoding;
  /** A kubectl-like view: apiVersion, kind, metadata, and for Secret/ConfigMap their data. */
  readonly object: Record<string, unknown>;
}

export interface DecodeOptions {
  /** Show Secret data; otherwise every value is replaced by REDACTED. */
  readonly showSecretData?: boolean;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function strings(map: Record<string, Buffer>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(map).sort()) out[k] = utf8.decode(map[k]!);
  return out;
}

function rfc3339(time: Buffer): string | undefined {
  if (time.length === 0) return undefined;
  const t = Time.decode(time);
  return new Date(t.seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function decodeMeta(raw: Buffer): Record<string, unknown> {
  const m = ObjectMeta.decode(raw);
  const out: Record<string, unknown> = {};
  if (m.name) out.name = m.name;
  if (m.generateName) out.generateName = m.generateName;
  if (m.namespace) out.namespace = m.namespace;
  if (m.uid) out.uid = m.uid;
  if (m.resourceVersion) out.resourceVersion = m.resourceVersion;
  if (m.generation) out.generation = m.generation;
  const created = rfc3339(m.creationTimestamp);
  if (created) out.creationTimestamp = created;
  const deleted = rfc3339(m.deletionTimestamp);
  if (deleted) out.deletionTimestamp = deleted;
  if (Object.keys(m.labels).length > 0) out.labels = strings(m.labels);
  if (Object.keys(m.annotations).length > 0) out.annotations = strings(m.annotations);
  return out;
}

function secretValues(map: Record<string, Buffer>, show: boolean, encode: (b: Buffer) => string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(map).sort()) out[k] = show ? encode(map[k]!) : REDACTED;
  return out;
}

function redactJsonSecret(obj: Record<string, unknown>): void {
  for (const field of ['data', 'stringData']) {
    const v = obj[field];
    if (v && typeof v === 'object') {
      for (const k of Object.keys(v)) (v as Record<string, unknown>)[k] = REDACTED;
    }
  }
}

/** Decodes one decrypted stored value. Throws FormatInvalidError for a malformed protobuf value. */
export function decodeStoredObject(data: Uint8Array, options: DecodeOptions = {}): DecodedObject {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const show = options.showSecretData === true;
  if (buf.subarray(0, 4).equals(K8S_PROTOBUF_MAGIC)) {
    return { encoding: 'protobuf', object: decodeProtobuf(buf.subarray(4), show) };
  }
  const first = buf.toString('utf8', 0, Math.min(buf.length, 64)).trimStart();
  if (first.startsWith('{')) {
    let obj: unknown;
    try {
      obj = JSON.parse(buf.toString('utf8'));
    } catch (cause) {
      throw new FormatInvalidError('ERR_FORMAT_MALFORMED', 'stored JSON object does not parse', { cause });
    }
    if (obj && typeof obj === 'object' && !Array.isArray(obj)) {
      const o = obj as Record<string, unknown>;
      if (o.kind === 'Secret' && !show) redactJsonSecret(o);
      return { encoding: 'json', object: o };
    }
  }
  return { encoding: 'unknown', object: { rawSize: buf.length } };
}

function decodeProtobuf(body: Buffer, show: boolean): Record<string, unknown> {
  const unknown = Unknown.decode(body);
  const tm = TypeMeta.decode(unknown.typeMeta);
  const head: Record<string, unknown> = { apiVersion: tm.apiVersion, kind: tm.kind };
  if (unknown.contentEncoding) {
    return { ...head, contentEncoding: unknown.contentEncoding, rawSize: unknown.raw.length };
  }
  const raw = unknown.raw;
  if (tm.kind === 'Secret' && tm.apiVersion === 'v1') {
    const s = Secret.decode(raw);
    const out: Record<string, unknown> = { ...head, metadata: decodeMeta(s.metadata) };
    if (s.immutable) out.immutable = true;
    if (Object.keys(s.data).length > 0) out.data = secretValues(s.data, show, (b) => b.toString('base64'));
    if (Object.keys(s.stringData).length > 0) {
      out.stringData = secretValues(s.stringData, show, (b) => utf8.decode(b));
    }
    if (s.type) out.type = s.type;
    return out;
  }
  if (tm.kind === 'ConfigMap' && tm.apiVersion === 'v1') {
    const c = ConfigMap.decode(raw);
    const out: Record<string, unknown> = { ...head, metadata: decodeMeta(c.metadata) };
    if (c.immutable) out.immutable = true;
    if (Object.keys(c.data).length > 0) out.data = strings(c.data);
    if (Object.keys(c.binaryData).length > 0) {
      const bin: Record<string, string> = {};
      for (const k of Object.keys(c.binaryData).sort()) bin[k] = c.binaryData[k]!.toString('base64');
      out.binaryData = bin;
    }
    return out;
  }
  const out: Record<string, unknown> = { ...head };
  try {
    out.metadata = decodeMeta(AnyObject.decode(raw).metadata);
  } catch {
    // not every kind keeps ObjectMeta in field 1 (lists, status objects): the size is still shown
  }
  out.rawSize = raw.length;
  return out;
}
