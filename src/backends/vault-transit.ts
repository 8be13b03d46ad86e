// Vault / OpenBao Transit as a key manager: encrypt/decrypt under one named Transit key over Vault's
// HTTP API (vault-http.ts), with token, AppRole or TLS-certificate auth. Every failure becomes a
// BackendError or catalog error here; the HTTP details stay in vault-http.ts.
//
// key_id = `vault-transit:<mount>/<key name>:v<N>`, N the Transit key's latest version when the
// background refresh last looked. `bao write -f transit/keys/NAME/rotate` makes version N+1: the
// next refresh reports the new key_id, new DEKs are wrapped with `key_version` N+1, and every older
// ciphertext still names (and is decrypted with) the version that made it, for as long as Transit
// keeps it above `min_decryption_version`.
//
// The remote ciphertext (the envelope's remote part, envelope.ts) is
//   [binding 1][Transit ciphertext "vault:vN:…" as ASCII]
// binding 0x01: the envelope header went to Transit as `associated_data` (AEAD key types);
// binding 0x02: the key type has no associated data (RSA), so the plaintext Transit encrypts is
//               [SHA-256(header) 32][DEK] and the digest is checked after decryption.

import { createHash, timingSafeEqual } from 'node:crypto';
import { AtrestError, BackendError, DecryptionFailedError } from '../errors.js';
import type { KekService } from './remote.js';
import {
  VAULT_TRANSIT_BACKEND,
  classifyVaultStatus,
  createVaultHttp,
  vaultErrors,
  type VaultHttp,
  type VaultHttpConfig,
  type VaultResponse,
} from './vault-http.js';

export { VAULT_TRANSIT_BACKEND } from './vault-http.js';

const KEY_ID_PREFIX = 'vault-transit:';
const BINDING_AAD = 0x01;
const BINDING_DIGEST = 0x02;
const DIGEST_BYTES = 32;
/** Transit key types whose encrypt/decrypt accept `associated_data`. */
const AEAD_TYPES = new Set([
  'aes128-gcm96',
  'aes256-gcm96',
  'chacha20-poly1305',
  'xchacha20-poly1305',
]);
/** Renew or log in again once this share of a token's TTL has passed. */
const RENEW_AT_SHARE = 2 / 3;
/** A Transit ciphertext we produce is ~100 bytes; refuse silly ones before sending them. */
const TRANSIT_CIPHERTEXT_MAX_BYTES = 4096;

export type VaultAuth =
  | { readonly method: 'token'; readonly token: () => Promise<string> }
  | {
      readonly method: 'approle';
      readonly mount: string;
      readonly roleId: () => Promise<string>;
      readonly secretId: () => Promise<string>;
    }
  | { readonly method: 'cert'; readonly mount: string; readonly role?: string };

export interface VaultTransitConfig extends VaultHttpConfig {
  /** Where the Transit engine is mounted (default `transit`). */
  readonly mount: string;
  readonly keyName: string;
  readonly auth: VaultAuth;
}

export interface VaultTransitDeps {
  readonly now?: () => number;
  /** Tests: replace the HTTP client. */
  readonly http?: VaultHttp;
}

interface TokenState {
  readonly token: string;
  /** When to renew (token) or log in again (AppRole, cert); undefined: never expires. */
  readonly renewAtMs: number | undefined;
  readonly renewable: boolean;
}

interface KeyInfo {
  readonly type: string;
  readonly latest: number;
  readonly minDecryption: number;
}

function fail(kind: BackendError['kind'], message: string, cause?: unknown): BackendError {
  return new BackendError(
    VAULT_TRANSIT_BACKEND,
    kind,
    message,
    cause !== undefined ? { cause } : undefined,
  );
}

function record(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : {};
}

export function createVaultTransitService(
  config: VaultTransitConfig,
  deps: VaultTransitDeps = {},
): KekService & { authCounts(): { logins: number; renewals: number } } {
  const now = deps.now ?? Date.now;
  const http = deps.http ?? createVaultHttp(config);
  const mount = config.mount.replace(/^\/+|\/+$/g, '');
  const keyPath = `${mount}/${config.keyName}`;
  const keyIDBase = `${KEY_ID_PREFIX}${keyPath}:v`;
  let token: TokenState | undefined;
  let acquiring: Promise<TokenState> | undefined;
  let info: KeyInfo | undefined;
  let renewals = 0;
  let logins = 0;

  function statusError(what: string, res: VaultResponse, hint: string): BackendError {
    const kind = classifyVaultStatus(res.status);
    return fail(kind, `${what} failed (HTTP ${res.status}: ${vaultErrors(res.body)}): ${hint}`);
  }

  function ttlState(tok: string, ttlSeconds: unknown, renewable: unknown): TokenState {
    const ttl = typeof ttlSeconds === 'number' && ttlSeconds > 0 ? ttlSeconds : 0;
    return {
      token: tok,
      renewAtMs: ttl > 0 ? now() + ttl * 1000 * RENEW_AT_SHARE : undefined,
      renewable: renewable === true,
    };
  }

  async function login(signal: AbortSignal): Promise<TokenState> {
    const auth = config.auth;
    logins++;
    if (auth.method === 'token') {
      const tok = await auth.token();
      // lookup-self tells whether the token expires and can be renewed; a token without the
      // default policy may not read itself, which only means we never renew it.
      const res = await http.call('GET', 'auth/token/lookup-self', { token: tok, signal });
      if (res.status === 403) {
        throw fail('user-induced', 'the token was refused (HTTP 403): check the token file');
      }
      if (res.status >= 300) {
        if (classifyVaultStatus(res.status) !== 'user-induced') {
          throw statusError('token lookup', res, 'Vault is not serving requests');
        }
        return { token: tok, renewAtMs: undefined, renewable: false };
      }
      const data = record(res.body['data']);
      return ttlState(tok, data['ttl'], data['renewable']);
    }
    let body: Record<string, string> = {};
    let path: string;
    if (auth.method === 'approle') {
      body = { role_id: await auth.roleId(), secret_id: await auth.secretId() };
      path = `auth/${auth.mount}/login`;
    } else {
      if (auth.role !== undefined) body = { name: auth.role };
      path = `auth/${auth.mount}/login`;
    }
    const res = await http.call('POST', path, { body, signal });
    if (res.status >= 300) {
      const hint =
        auth.method === 'approle'
          ? 'check role_id and secret_id (files) and the AppRole mount'
          : 'check the client certificate, the cert auth mount and its trusted certificates';
      throw statusError(`${auth.method} login`, res, hint);
    }
    const a = record(res.body['auth']);
    const tok = a['client_token'];
    if (typeof tok !== 'string' || tok === '') {
      throw fail('other', `${auth.method} login returned no client token`);
    }
    return ttlState(tok, a['lease_duration'], a['renewable']);
  }

  async function renew(current: TokenState, signal: AbortSignal): Promise<TokenState> {
    if (config.auth.method !== 'token') return login(signal);
    if (!current.renewable) return { ...current, renewAtMs: undefined };
    const res = await http.call('POST', 'auth/token/renew-self', {
      token: current.token,
      body: {},
      signal,
    });
    if (res.status >= 300) throw statusError('token renewal', res, 'renew or replace the token');
    const a = record(res.body['auth']);
    renewals++;
    return ttlState(current.token, a['lease_duration'], a['renewable']);
  }

  async function tokenFor(signal: AbortSignal, force = false): Promise<string> {
    const t = token;
    const due = t !== undefined && t.renewAtMs !== undefined && now() >= t.renewAtMs;
    if (t !== undefined && !due && !force) return t.token;
    if (acquiring === undefined) {
      const pending = (t !== undefined && due && !force ? renew(t, signal) : login(signal)).then(
        (s) => {
          token = s;
          return s;
        },
      );
      acquiring = pending;
      pending.then(
        () => (acquiring = undefined),
        () => (acquiring = undefined),
      );
    }
    return (await acquiring).token;
  }

  /** One authenticated call; after a 403 a login-based auth logs in once more and retries. */
  async function authed(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    signal: AbortSignal,
  ): Promise<VaultResponse> {
    let tok = await tokenFor(signal);
    let res = await http.call(method, path, { token: tok, body, signal });
    if (res.status === 403) {
      const before = tok;
      tok = await tokenFor(signal, true);
      if (tok !== before || config.auth.method !== 'token') {
        res = await http.call(method, path, { token: tok, body, signal });
      }
    }
    return res;
  }

  function versionOf(keyID: string): number {
    if (keyID.startsWith(keyIDBase)) {
      const digits = keyID.slice(keyIDBase.length);
      if (/^[1-9]\d{0,9}$/.test(digits)) return Number(digits);
    }
    throw new AtrestError(
      'ERR_KEY_UNKNOWN',
      `key id ${keyID} does not name a version of the Transit key ${keyPath}`,
    );
  }

  async function readKey(signal: AbortSignal): Promise<KeyInfo> {
    const res = await authed(
      'GET',
      `${mount}/keys/${encodeURIComponent(config.keyName)}`,
      undefined,
      signal,
    );
    if (res.status === 404) {
      throw fail(
        'user-induced',
        `Transit key ${keyPath} not found: create it with "bao write -f ${keyPath}"`,
      );
    }
    if (res.status >= 300) {
      throw statusError(
        `reading Transit key ${keyPath}`,
        res,
        res.status === 403
          ? `the token's policy must allow "read" on ${mount}/keys/${config.keyName} and "update" on ${mount}/encrypt/${config.keyName} and ${mount}/decrypt/${config.keyName}`
          : 'Vault is not serving requests',
      );
    }
    const data = record(res.body['data']);
    const latest = data['latest_version'];
    const type = data['type'];
    if (
      typeof latest !== 'number' ||
      !Number.isInteger(latest) ||
      latest < 1 ||
      typeof type !== 'string'
    ) {
      throw fail('other', `Transit key ${keyPath}: unexpected answer (no latest_version/type)`);
    }
    if (data['supports_encryption'] === false) {
      throw fail('user-induced', `Transit key ${keyPath} has type ${type}, which cannot encrypt`);
    }
    const minDecryption =
      typeof data['min_decryption_version'] === 'number' ? data['min_decryption_version'] : 1;
    const got = { type, latest, minDecryption };
    info = got;
    return got;
  }

  function digestOf(aad: Buffer): Buffer {
    return createHash('sha256').update(aad).digest();
  }

  return {
    name: VAULT_TRANSIT_BACKEND,

    async resolveKeyID(signal) {
      return keyIDBase + String((await readKey(signal)).latest);
    },

    async encrypt(keyID, plaintext, aad, signal) {
      const version = versionOf(keyID);
      const key = info ?? (await readKey(signal));
      const aead = AEAD_TYPES.has(key.type);
      const payload = aead ? plaintext : Buffer.concat([digestOf(aad), plaintext]);
      const res = await authed(
        'POST',
        `${mount}/encrypt/${encodeURIComponent(config.keyName)}`,
        {
          plaintext: payload.toString('base64'),
          key_version: version,
          ...(aead ? { associated_data: aad.toString('base64') } : {}),
        },
        signal,
      );
      if (res.status >= 300) {
        throw statusError(
          `Transit encrypt with ${keyPath} v${version}`,
          res,
          'check the key and the token policy',
        );
      }
      const ct = record(res.body['data'])['ciphertext'];
      if (typeof ct !== 'string' || !ct.startsWith(`vault:v${version}:`)) {
        throw fail('other', `Transit encrypt returned no ciphertext of version ${version}`);
      }
      return Buffer.concat([
        Buffer.from([aead ? BINDING_AAD : BINDING_DIGEST]),
        Buffer.from(ct, 'ascii'),
      ]);
    },

    async decrypt(keyID, ciphertext, aad, signal) {
      const version = versionOf(keyID);
      const binding = ciphertext[0];
      const ct = ciphertext.subarray(1).toString('latin1');
      const known = info ?? (await readKey(signal));
      if (version > known.latest && version > (await readKey(signal)).latest) {
        throw new AtrestError(
          'ERR_KEY_UNKNOWN',
          `Transit key ${keyPath} has no version ${version} (latest is ${info?.latest ?? '?'})`,
        );
      }
      if (
        (binding !== BINDING_AAD && binding !== BINDING_DIGEST) ||
        ciphertext.length > TRANSIT_CIPHERTEXT_MAX_BYTES ||
        !ct.startsWith(`vault:v${version}:`) ||
        !/^[A-Za-z0-9+/:=]+$/.test(ct)
      ) {
        throw new DecryptionFailedError();
      }
      const res = await authed(
        'POST',
        `${mount}/decrypt/${encodeURIComponent(config.keyName)}`,
        {
          ciphertext: ct,
          ...(binding === BINDING_AAD ? { associated_data: aad.toString('base64') } : {}),
        },
        signal,
      );
      if (res.status >= 300) {
        const message = vaultErrors(res.body);
        if (
          res.status === 400 &&
          /too old|disallowed by policy|min_decryption_version/i.test(message)
        ) {
          throw fail(
            'user-induced',
            `data wrapped by version ${version} of Transit key ${keyPath} can no longer be decrypted: ` +
              `its min_decryption_version (${info?.minDecryption ?? '?'}) is above ${version}. ` +
              `Lower it ("bao write ${keyPath}/config min_decryption_version=${version}") and rewrite the data before raising it again`,
          );
        }
        if (res.status === 400 && !/not found/i.test(message)) {
          throw fail('corruption', `Transit refused the ciphertext (HTTP 400: ${message})`);
        }
        throw statusError(
          `Transit decrypt with ${keyPath} v${version}`,
          res,
          'check the key and the token policy',
        );
      }
      const pt = record(res.body['data'])['plaintext'];
      if (typeof pt !== 'string') throw fail('other', 'Transit decrypt returned no plaintext');
      const out = Buffer.from(pt, 'base64');
      if (binding === BINDING_AAD) return out;
      if (
        out.length < DIGEST_BYTES ||
        !timingSafeEqual(out.subarray(0, DIGEST_BYTES), digestOf(aad))
      ) {
        throw new DecryptionFailedError();
      }
      return out.subarray(DIGEST_BYTES);
    },

    async reload() {
      // Re-read the token file / AppRole files at the next call.
      token = undefined;
      info = undefined;
    },

    async close() {
      await http.close();
    },

    authCounts: () => ({ logins, renewals }),
  };
}
