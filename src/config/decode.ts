// Text -> a plain tree of values, as strictly as kube-apiserver's decoder: YAML 1.1 (the YAML
// library Kubernetes uses reads `yes`/`on` as booleans) or JSON, duplicate keys reported with their
// path. Field-level checks happen in parse.ts; this file only knows about syntax.

import { Alias, Document, isAlias, isMap, isPair, isScalar, isSeq, parseAllDocuments } from 'yaml';
import type { Node } from 'yaml';
import type { ConfigProblem } from '../errors.js';

/** A JSON number written with a fraction or exponent: Go refuses it for an integer field. */
export class FloatValue {
  readonly value: number;
  constructor(value: number) {
    this.value = value;
  }
}

export type PlainValue =
  | null
  | boolean
  | number
  | FloatValue
  | string
  | readonly PlainValue[]
  | { readonly [key: string]: PlainValue };

export interface DecodeResult {
  readonly value: PlainValue | undefined;
  readonly problems: readonly ConfigProblem[];
}

const TIMESTAMP_TAG = 'tag:yaml.org,2002:timestamp';
const MAX_ALIAS_DEPTH = 64;

export function isJsonText(text: string): boolean {
  return /^\s*\{/.test(text);
}

export function decodeConfigText(text: string): DecodeResult {
  const problems: ConfigProblem[] = [];
  if (text.trim() === '' || text.replace(/^\s*(#.*)?$/gm, '').trim() === '') {
    return { value: undefined, problems: [{ path: '(file)', message: 'the file is empty' }] };
  }
  const json = isJsonText(text);
  if (json) {
    // The YAML parser is lenient with JSON (trailing commas, comments); Kubernetes' JSON decoder is not.
    try {
      JSON.parse(text);
    } catch {
      return { value: undefined, problems: [{ path: '(file)', message: 'invalid JSON' }] };
    }
  }
  const docs = parseAllDocuments(text, {
    version: json ? '1.2' : '1.1',
    schema: json ? 'json' : 'yaml-1.1',
    uniqueKeys: false,
    merge: !json,
    prettyErrors: false,
    // Go's YAML keeps an unquoted 2001-12-14 a string when the target is a string; so do we.
    customTags: (tags) => tags.filter((t) => typeof t === 'string' || t.tag !== TIMESTAMP_TAG),
  });
  const list = Array.isArray(docs) ? docs : [docs];
  if (list.length === 0) {
    return { value: undefined, problems: [{ path: '(file)', message: 'the file is empty' }] };
  }
  for (const doc of list) {
    for (const err of doc.errors) {
      // Position and error code only: the parser's own message may quote the offending text, which
      // could be part of a secret.
      const offset = err.pos[0];
      const line = text.slice(0, offset).split('\n').length;
      const col = offset - text.lastIndexOf('\n', offset - 1);
      const where = ` at line ${line}, column ${col}`;
      problems.push({ path: '(file)', message: `YAML/JSON syntax error${where} (${err.code})` });
    }
  }
  if (problems.length > 0) return { value: undefined, problems };
  if (list.length > 1) {
    // Kubernetes decodes only the first document and silently ignores the rest; refusing is safer
    // than guessing which one the operator meant.
    problems.push({
      path: '(file)',
      message: `contains ${list.length} YAML documents; an encryption configuration is exactly one`,
    });
    return { value: undefined, problems };
  }
  const doc = list[0] as Document.Parsed;
  const value = toPlain(doc, doc.contents, '', json, problems, 0);
  return { value, problems };
}

function childPath(base: string, key: string): string {
  return base === '' ? key : `${base}.${key}`;
}

function toPlain(
  doc: Document.Parsed,
  node: Node | null | undefined | unknown,
  path: string,
  json: boolean,
  problems: ConfigProblem[],
  depth: number,
): PlainValue {
  if (depth > MAX_ALIAS_DEPTH) {
    problems.push({ path: path || '(root)', message: 'nesting or aliases are too deep' });
    return null;
  }
  if (node === null || node === undefined) return null;
  if (isAlias(node)) {
    const target = (node as Alias).resolve(doc);
    return toPlain(doc, target, path, json, problems, depth + 1);
  }
  if (isScalar(node)) {
    const v = node.value;
    if (typeof v === 'number' && json && typeof node.source === 'string' && /[.eE]/.test(node.source)) {
      return new FloatValue(v);
    }
    if (v === null || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return v;
    if (typeof v === 'bigint') return Number(v);
    return String(v);
  }
  if (isSeq(node)) {
    return node.items.map((item, i) => toPlain(doc, item, `${path}[${i}]`, json, problems, depth + 1));
  }
  if (isMap(node)) {
    const out: Record<string, PlainValue> = {};
    const seen = new Set<string>();
    for (const pair of node.items) {
      if (!isPair(pair)) continue;
      if (!json && isScalar(pair.key) && typeof pair.key.value === 'symbol' && pair.key.source === '<<') {
        mergeInto(out, toPlain(doc, pair.value, path, json, problems, depth + 1));
        continue;
      }
      const rawKey = toPlain(doc, pair.key, path, json, problems, depth + 1);
      const key = plainKey(rawKey);
      const p = childPath(path, key);
      if (seen.has(key)) {
        problems.push({ path: p, message: 'duplicate field' });
        continue;
      }
      seen.add(key);
      out[key] = toPlain(doc, pair.value, p, json, problems, depth + 1);
    }
    return out;
  }
  return null;
}

function plainKey(key: PlainValue): string {
  if (key instanceof FloatValue) return String(key.value);
  if (typeof key === 'string') return key;
  if (key === null) return 'null';
  if (typeof key === 'object') return JSON.stringify(key);
  return String(key);
}

/** YAML 1.1 merge key: earlier explicit keys win, merged maps only fill gaps. */
function mergeInto(out: Record<string, PlainValue>, source: PlainValue): void {
  const sources = Array.isArray(source) ? source : [source];
  for (const s of sources) {
    if (s === null || typeof s !== 'object' || Array.isArray(s) || s instanceof FloatValue) continue;
    for (const [k, v] of Object.entries(s as Record<string, PlainValue>)) {
      if (!(k in out)) out[k] = v;
    }
  }
}
