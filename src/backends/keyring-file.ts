// The keyring file: a JSON document holding AES-256 key-encryption keys, their ids and which one is
// active. Parsing/validation, the pure edits (init, rotate, retire) and the atomic 0600 file I/O live
// here; the KeyBackend that serves from it is keyring.ts.
//
//   { "format": "atrest-keyring/v1", "development": false, "active": "<id>",
//     "keys": [ { "id": "...", "created": "<RFC 3339>", "secret": "<base64, 32 bytes>" } ],
//     "retired": [ { "id": "...", "retired": "<RFC 3339>" } ] }
//
// Key ids are `k<UTC yyyymmddThhmmssZ>-<16 hex random>`: derived from the creation time and fresh
// randomness, never from the key bytes, and checked against every id the file ever held (including
// retired ones) so an id is never reused for other key material.

import { constants as fsc, promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { AtrestError } from '../errors.js';
import { WRAP_KEY_BYTES } from './keyring-wrap.js';

export const KEYRING_FORMAT = 'atrest-keyring/v1';
const KEY_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface KeyringKey {
  readonly id: string;
  /** RFC 3339 UTC. */
  readonly created: string;
  readonly secret: Buffer;
}

export interface RetiredKey {
  readonly id: string;
  readonly retired: string;
}

export interface Keyring {
  readonly development: boolean;
  readonly active: string;
  readonly keys: readonly KeyringKey[];
  readonly retired: readonly RetiredKey[];
}

export type RandomBytes = (n: number) => Buffer;

function invalid(source: string, problems: readonly string[]): AtrestError {
  return new AtrestError(
    'ERR_KEYRING_INVALID',
    `keyring ${source} is invalid:\n` + problems.map((p) => `  ${p}`).join('\n'),
  );
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses and validates a keyring document; reports every problem found (never a secret). */
export function parseKeyring(text: string, source: string): Keyring {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw invalid(source, ['not valid JSON']);
  }
  if (!isRecord(doc)) throw invalid(source, ['the document must be a JSON object']);
  const problems: string[] = [];
  if (doc['format'] !== KEYRING_FORMAT) problems.push(`format: must be "${KEYRING_FORMAT}"`);
  const development = doc['development'] ?? false;
  if (typeof development !== 'boolean') problems.push('development: must be true or false');
  const keys: KeyringKey[] = [];
  const seen = new Set<string>();
  const rawKeys = doc['keys'];
  if (!Array.isArray(rawKeys) || rawKeys.length === 0) {
    problems.push('keys: must be a non-empty list');
  } else {
    rawKeys.forEach((k: unknown, i) => {
      const at = `keys[${i}]`;
      if (!isRecord(k)) return void problems.push(`${at}: must be an object`);
      const { id, created, secret } = k;
      if (typeof id !== 'string' || !KEY_ID_PATTERN.test(id)) {
        problems.push(`${at}.id: must match ${KEY_ID_PATTERN.source}`);
      } else if (seen.has(id)) {
        problems.push(`${at}.id: duplicate id ${id}`);
      }
      if (typeof created !== 'string' || Number.isNaN(Date.parse(created))) {
        problems.push(`${at}.created: must be an RFC 3339 time`);
      }
      let bytes: Buffer | undefined;
      if (typeof secret === 'string' && /^[A-Za-z0-9+/]+={0,2}$/.test(secret)) {
        bytes = Buffer.from(secret, 'base64');
      }
      if (bytes === undefined || bytes.length !== WRAP_KEY_BYTES) {
        problems.push(`${at}.secret: must be ${WRAP_KEY_BYTES} bytes in base64 (REDACTED)`);
      }
      if (typeof id === 'string') seen.add(id);
      if (typeof id === 'string' && typeof created === 'string' && bytes !== undefined) {
        keys.push({ id, created, secret: bytes });
      }
    });
  }
  const retired: RetiredKey[] = [];
  const rawRetired = doc['retired'] ?? [];
  if (!Array.isArray(rawRetired)) {
    problems.push('retired: must be a list');
  } else {
    rawRetired.forEach((r: unknown, i) => {
      const at = `retired[${i}]`;
      if (!isRecord(r) || typeof r['id'] !== 'string' || typeof r['retired'] !== 'string') {
        return void problems.push(`${at}: must be {id, retired}`);
      }
      if (seen.has(r['id'])) problems.push(`${at}.id: ${r['id']} is both retired and in keys`);
      retired.push({ id: r['id'], retired: r['retired'] });
    });
  }
  const active = doc['active'];
  if (typeof active !== 'string' || !seen.has(active)) {
    problems.push('active: must be the id of one of keys[]');
  }
  if (problems.length > 0) throw invalid(source, problems);
  return { development: development as boolean, active: active as string, keys, retired };
}

export function serializeKeyring(keyring: Keyring): string {
  const doc = {
    format: KEYRING_FORMAT,
    development: keyring.development,
    active: keyring.active,
    keys: keyring.keys.map((k) => ({
      id: k.id,
      created: k.created,
      secret: k.secret.toString('base64'),
    })),
    retired: keyring.retired,
  };
  return JSON.stringify(doc, null, 2) + '\n';
}

function compactUtc(d: Date): string {
  return d
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}Z$/, 'Z');
}

function newKey(existing: ReadonlySet<string>, now: Date, random: RandomBytes): KeyringKey {
  for (;;) {
    const id = `k${compactUtc(now)}-${random(8).toString('hex')}`;
    if (!existing.has(id)) {
      return { id, created: now.toISOString(), secret: random(WRAP_KEY_BYTES) };
    }
  }
}

function allIDs(keyring: Keyring): Set<string> {
  return new Set([...keyring.keys.map((k) => k.id), ...keyring.retired.map((r) => r.id)]);
}

export function createKeyring(options: {
  readonly now: Date;
  readonly random: RandomBytes;
  readonly development?: boolean;
}): Keyring {
  const key = newKey(new Set(), options.now, options.random);
  return { development: options.development ?? false, active: key.id, keys: [key], retired: [] };
}

/**
 * Adds a new key that is NOT active: plugins that load it can unwrap with it, none wraps with it yet.
 * On several nodes this is the first of two steps (docs/plugin.md, "Rotating keys").
 */
export function addKey(keyring: Keyring, now: Date, random: RandomBytes): Keyring {
  const key = newKey(allIDs(keyring), now, random);
  return { ...keyring, keys: [...keyring.keys, key] };
}

/** Makes a key the keyring already holds the active one; a retired or unknown id is refused. */
export function activateKey(keyring: Keyring, id: string): Keyring {
  if (!keyring.keys.some((k) => k.id === id)) {
    const retired = keyring.retired.find((r) => r.id === id);
    if (retired !== undefined) {
      throw new AtrestError(
        'ERR_KEY_UNKNOWN',
        `key ${id} was retired at ${retired.retired}: its key material is gone and it cannot ` +
          'become active again; add a new key with "atrest keys add"',
      );
    }
    throw new AtrestError(
      'ERR_KEY_UNKNOWN',
      `no key with id ${id} in the keyring (it holds ${keyring.keys.map((k) => k.id).join(', ')})`,
    );
  }
  return { ...keyring, active: id };
}

/** Adds a new key and makes it active at once (add + activate): safe on a single node only. */
export function rotateKeyring(keyring: Keyring, now: Date, random: RandomBytes): Keyring {
  const added = addKey(keyring, now, random);
  return activateKey(added, added.keys[added.keys.length - 1]!.id);
}

/** Removes a key for good (its id is remembered so it is never reused). The active key cannot go. */
export function retireKey(keyring: Keyring, id: string, now: Date): Keyring {
  if (!keyring.keys.some((k) => k.id === id)) {
    throw new AtrestError('ERR_KEY_UNKNOWN', `no key with id ${id} in the keyring`);
  }
  if (keyring.active === id) {
    throw new AtrestError(
      'ERR_KEYRING_INVALID',
      `key ${id} is the active key; run "atrest keys rotate" first, then retire it`,
    );
  }
  return {
    ...keyring,
    keys: keyring.keys.filter((k) => k.id !== id),
    retired: [...keyring.retired, { id, retired: now.toISOString() }],
  };
}

/**
 * Reads a keyring file. With `requirePrivate` (serve, keys), a file readable or writable by group or
 * others is refused: the mode is checked on the open descriptor, so the check and the read agree.
 */
export async function readKeyringFile(
  path: string,
  options: { readonly requirePrivate: boolean } = { requirePrivate: true },
): Promise<Keyring> {
  let handle: fsp.FileHandle;
  try {
    // Symlinks are followed: Kubernetes Secret volumes present every file as one (..data/...).
    // The mode checked below is the target's, read from the open descriptor.
    handle = await fsp.open(path, fsc.O_RDONLY);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new AtrestError(
        'ERR_KEYRING_MISSING',
        `keyring ${path} does not exist (create one with "atrest keys init --keyring ${path}")`,
        { cause: err },
      );
    }
    throw new AtrestError('ERR_KEYRING_INVALID', `cannot open keyring ${path}: ${code ?? err}`, {
      cause: err,
    });
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new AtrestError('ERR_KEYRING_INVALID', `keyring ${path} is not a file`);
    const mode = st.mode & 0o777;
    if (options.requirePrivate && (mode & 0o077) !== 0) {
      throw new AtrestError(
        'ERR_KEYRING_PERMISSIONS',
        `keyring ${path} is accessible by group or others (mode ${mode.toString(8).padStart(4, '0')}); ` +
          `refusing to use it: run "chmod 600 ${path}"`,
      );
    }
    return parseKeyring(await handle.readFile('utf8'), path);
  } finally {
    await handle.close();
  }
}

/**
 * Writes the keyring atomically: a 0600 temp file in the same directory, fsync, then rename over
 * `path` (or, with `exclusive`, a hard link that fails if `path` exists), then fsync the directory.
 */
export async function writeKeyringFile(
  path: string,
  keyring: Keyring,
  options: { readonly exclusive: boolean; readonly random: RandomBytes },
): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.tmp-${options.random(6).toString('hex')}`);
  const handle = await fsp.open(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
  try {
    try {
      await handle.chmod(0o600);
      await handle.writeFile(serializeKeyring(keyring), 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (options.exclusive) {
      try {
        await fsp.link(temp, path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new AtrestError(
            'ERR_KEYRING_EXISTS',
            `keyring ${path} already exists; refusing to overwrite it`,
            { cause: err },
          );
        }
        throw err;
      }
      await fsp.unlink(temp);
    } else {
      await fsp.rename(temp, path);
    }
  } catch (err) {
    await fsp.rm(temp, { force: true });
    throw err;
  }
  const dirHandle = await fsp.open(dir, fsc.O_RDONLY);
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}
