// The HTTP edge of the vault-transit backend: one undici Agent (TLS CA, client certificate) that sends
// JSON to a Vault/OpenBao server and reads bounded JSON back. Turns every transport failure and
// every non-2xx status into a BackendError of the right kind; no undici error escapes this file.

import { Agent, request } from 'undici';
import { BackendError, type BackendErrorKind } from '../errors.js';
import { errorCode, isNetworkError } from './network-error.js';

export const VAULT_TRANSIT_BACKEND = 'vault-transit';
/** A Transit answer is a few hundred bytes; more than this is not a Vault we talk to. */
export const VAULT_RESPONSE_MAX_BYTES = 1 << 20;
/** Connections kept open to the server (the plugin's calls are short and few with the tier). */
const VAULT_CONNECTIONS = 8;

export interface VaultHttpConfig {
  /** `https://host:8200` (or `http://` for a dev server on loopback). */
  readonly address: string;
  /** PEM text, not paths: the caller reads the files. */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly serverName?: string;
  /** Vault Enterprise / OpenBao namespace, sent as X-Vault-Namespace. */
  readonly namespace?: string;
}

export interface VaultResponse {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

export interface VaultHttp {
  call(
    method: 'GET' | 'POST' | 'PUT',
    path: string,
    options: { token?: string; body?: unknown; signal: AbortSignal },
  ): Promise<VaultResponse>;
  close(): Promise<void>;
}

/** The kind of a failed HTTP status from Vault. */
export function classifyVaultStatus(status: number): BackendErrorKind {
  if (status === 429 || status === 473) return 'throttled'; // 429: rate limit / standby; 473: perf standby
  if (status >= 500) return 'unavailable'; // 503 includes a sealed server
  if (status === 400 || status === 401 || status === 403 || status === 404) return 'user-induced';
  return 'other';
}

/** Vault's `errors` array, joined; never contains request data (Vault does not echo secrets). */
export function vaultErrors(body: Record<string, unknown>): string {
  const errors = body['errors'];
  if (Array.isArray(errors) && errors.every((e) => typeof e === 'string') && errors.length > 0) {
    return errors.join('; ').replace(/\s+/g, ' ').trim().slice(0, 300);
  }
  return 'no error message';
}

function transportError(what: string, err: unknown): BackendError {
  const e = err as { name?: string };
  const code = errorCode(err);
  const aborted = e?.name === 'AbortError' || e?.name === 'TimeoutError';
  const detail = aborted ? 'timed out' : (code ?? e?.name ?? 'error');
  // An untrusted or mismatching server certificate is a configuration problem, not an outage.
  if (code !== undefined && /CERT|SSL|TLS|UNABLE_TO_VERIFY|SELF_SIGNED/.test(code)) {
    return new BackendError(
      VAULT_TRANSIT_BACKEND,
      'user-induced',
      `${what}: the TLS handshake failed (${detail}): check caFile, the client certificate and the address`,
      { cause: err },
    );
  }
  const kind: BackendErrorKind =
    aborted || isNetworkError(err) ? 'unavailable' : 'other';
  return new BackendError(VAULT_TRANSIT_BACKEND, kind, `${what}: cannot reach Vault (${detail})`, {
    cause: err,
  });
}

export function createVaultHttp(config: VaultHttpConfig): VaultHttp {
  const base = config.address.replace(/\/+$/, '');
  const agent = new Agent({
    connections: VAULT_CONNECTIONS,
    connect: {
      ...(config.ca !== undefined ? { ca: config.ca } : {}),
      ...(config.cert !== undefined ? { cert: config.cert } : {}),
      ...(config.key !== undefined ? { key: config.key } : {}),
      ...(config.serverName !== undefined ? { servername: config.serverName } : {}),
    },
  });

  return {
    async call(method, path, { token, body, signal }) {
      const what = `${method} ${path}`;
      const headers: Record<string, string> = { accept: 'application/json' };
      if (token !== undefined) headers['x-vault-token'] = token;
      if (config.namespace !== undefined) headers['x-vault-namespace'] = config.namespace;
      if (body !== undefined) headers['content-type'] = 'application/json';
      let res;
      try {
        res = await request(`${base}/v1/${path}`, {
          method,
          headers,
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
          dispatcher: agent,
          signal,
        });
      } catch (err) {
        throw transportError(what, err);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      try {
        for await (const chunk of res.body) {
          size += (chunk as Buffer).length;
          if (size > VAULT_RESPONSE_MAX_BYTES) {
            res.body.destroy();
            throw new BackendError(
              VAULT_TRANSIT_BACKEND,
              'other',
              `${what}: answer larger than ${VAULT_RESPONSE_MAX_BYTES} bytes`,
            );
          }
          chunks.push(chunk as Buffer);
        }
      } catch (err) {
        if (err instanceof BackendError) throw err;
        throw transportError(what, err);
      }
      let parsed: unknown = {};
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() !== '') {
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = {};
        }
      }
      const json =
        typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
          ? (parsed as Record<string, unknown>)
          : {};
      return { status: res.statusCode, body: json };
    },

    async close() {
      await agent.close();
    },
  };
}
