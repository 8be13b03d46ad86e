// The HTTP client of the API tools: kubeconfig credentials from @kubernetes/client-node (TLS material
// once, for one keep-alive agent of our own; auth headers per request, as exec plugins and token
// files may refresh), and the retries of transient API failures. Knows no resource.

import * as http from 'node:http';
import * as https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { AtrestError } from '../errors.js';
import { withRetry, type RetryOptions } from '../retry.js';

export interface HttpResult {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

export interface ApiClient {
  /**
   * One request, retried while the API server answers 409, 429 or 5xx or cannot be reached. The
   * signal aborts the request and its retries (rejecting with the signal's reason).
   */
  request(
    method: string,
    path: string,
    headers: http.OutgoingHttpHeaders,
    options?: { readonly body?: string; readonly signal?: AbortSignal },
  ): Promise<HttpResult>;
  close(): void;
}

const REQUEST_TIMEOUT_MS = 60_000;
/** The longest Retry-After honoured: a server asking for more is asked again sooner. */
const MAX_RETRY_AFTER_S = 30;

/** An answer worth asking again for; the last one is returned as it is when the attempts run out. */
class RetriableAnswer extends Error {
  readonly result: HttpResult;
  constructor(result: HttpResult) {
    super(`HTTP ${result.status}`);
    this.result = result;
  }
}

/**
 * Connection errors, 409 (the API server gave up its own conflict retries under heavy write
 * contention), 429 and 5xx are retried with backoff, honouring Retry-After.
 */
const API_RETRY: RetryOptions = {
  attempts: 5,
  baseDelayMs: 200,
  maxDelayMs: 5000,
  isRetryable: () => true,
  delayHintMs: (err) => {
    const seconds = err instanceof RetriableAnswer ? Number(err.result.headers['retry-after']) : NaN;
    return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, MAX_RETRY_AFTER_S) * 1000 : undefined;
  },
};

function isRetriableStatus(status: number): boolean {
  return status === 409 || status === 429 || status >= 500;
}

/** A client for the kubeconfig's current cluster, with room for `maxSockets` requests at once. */
export async function createApiClient(kc: KubeConfig, maxSockets: number): Promise<ApiClient> {
  const cluster = kc.getCurrentCluster();
  if (cluster === null) {
    throw new AtrestError('ERR_CONFIG_UNREADABLE', 'the kubeconfig has no current cluster');
  }
  const server = new URL(cluster.server);
  const secure = server.protocol === 'https:';
  const agent = await createAgent(kc, secure, maxSockets);
  const prefix = server.pathname.replace(/\/$/, '');
  return {
    async request(method, path, headers, options = {}) {
      const url = new URL(prefix + path, server);
      const send = async (): Promise<HttpResult> => {
        const all = { ...(await authHeaders(kc)), ...headers };
        const res = await sendOnce(secure, agent, url, method, all, options);
        if (isRetriableStatus(res.status)) throw new RetriableAnswer(res);
        return res;
      };
      const signal = options.signal === undefined ? {} : { signal: options.signal };
      try {
        return await withRetry(send, { ...API_RETRY, ...signal });
      } catch (err) {
        if (err instanceof RetriableAnswer) return err.result;
        throw err;
      }
    },
    close() {
      agent.destroy();
    },
  };
}

/** One pooled agent with the kubeconfig's TLS material (ca, client cert, skip-verify, server name). */
async function createAgent(kc: KubeConfig, secure: boolean, maxSockets: number): Promise<http.Agent> {
  const agentOptions = { keepAlive: true, maxSockets };
  if (!secure) return new http.Agent(agentOptions);
  const tls: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(tls);
  return new https.Agent({
    ...agentOptions,
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    ...(tls.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: tls.rejectUnauthorized }),
    ...(tls.servername === undefined ? {} : { servername: tls.servername }),
  });
}

/** The Authorization header the kubeconfig gives now (a bearer token or basic auth), if any. */
async function authHeaders(kc: KubeConfig): Promise<http.OutgoingHttpHeaders> {
  const auth: https.RequestOptions = { headers: {} };
  await kc.applyToHTTPSOptions(auth);
  const out: http.OutgoingHttpHeaders = {};
  const given = (auth.headers ?? {}) as http.OutgoingHttpHeaders;
  if (given['Authorization'] !== undefined) out['Authorization'] = given['Authorization'];
  if (auth.auth !== undefined && auth.auth !== null) {
    out['Authorization'] = `Basic ${Buffer.from(auth.auth).toString('base64')}`;
  }
  return out;
}

function sendOnce(
  secure: boolean,
  agent: http.Agent,
  url: URL,
  method: string,
  headers: http.OutgoingHttpHeaders,
  { body, signal }: { readonly body?: string; readonly signal?: AbortSignal },
): Promise<HttpResult> {
  return new Promise<HttpResult>((resolve, reject) => {
    const req = (secure ? https : http).request(
      url,
      {
        method,
        agent,
        headers: {
          ...headers,
          'User-Agent': 'atrest-rewrite-via-api',
          ...(body === undefined ? {} : { 'Content-Length': Buffer.byteLength(body) }),
        },
        timeout: REQUEST_TIMEOUT_MS,
        ...(signal === undefined ? {} : { signal }),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${url.pathname} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Status.message of an API error body, or the HTTP status text. Never echoes object data. */
export function apiReason(result: HttpResult): string {
  try {
    const status = JSON.parse(result.body.toString('utf8')) as { message?: unknown; reason?: unknown };
    if (typeof status.message === 'string') return status.message;
    if (typeof status.reason === 'string') return status.reason;
  } catch {
    // not a Status object
  }
  return http.STATUS_CODES[result.status] ?? `HTTP ${result.status}`;
}

/** GET a JSON document; anything but 200 is an ERR_API naming `what`. */
export async function getJson(client: ApiClient, path: string, what: string): Promise<unknown> {
  const res = await client.request('GET', path, { Accept: 'application/json' });
  if (res.status !== 200) {
    throw new AtrestError('ERR_API', `cannot read ${what}: ${res.status} ${apiReason(res)}`);
  }
  return JSON.parse(res.body.toString('utf8'));
}
