// Which kms v2 key_id each kube-apiserver writes with, read from its /metrics (kubeconfig credentials).
// kube-apiserver records, per kms provider and per key_id hash ("sha256:" + hex sha256 of the key_id):
//   apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{provider_name, key_id_hash, apiserver_id_hash}
//     the last time its Status poll returned that key_id (right after it, a new key_id makes it
//     generate a new DEK seed and write with the new key_id);
//   apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds{transformation_type="to_storage", ...}
//     the last time it wrote a value with that key_id.
// A server is ready when its newest Status key_id is the plugin's current one and it has not written
// with another key_id since. This is what must hold before an older key is retired.

import * as http from 'node:http';
import * as https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { AtrestError } from '../errors.js';
import { keyIDHash } from '../key-id.js';

/** /metrics of a busy API server is a few MiB; anything far beyond is not an API server. */
const MAX_METRICS_BYTES = 256 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 30_000;
const STATUS_METRIC = 'apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds';
const USE_METRIC = 'apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds';

export interface ApiServerTarget {
  /** Loaded by the caller (src/cli/kubeconfig.ts). */
  readonly kubeConfig: KubeConfig;
  /** Each API server's URL when several serve behind one address; default: the kubeconfig's server. */
  readonly servers?: readonly string[];
}

export interface ExpectedKey {
  /** kms v2 provider name (the metrics' provider_name). */
  readonly provider: string;
  readonly keyID: string;
}

export interface ApiServerKeyState {
  readonly server: string;
  readonly provider: string;
  readonly ok: boolean;
  /** Why not, in words an operator can act on. */
  readonly problem?: string;
  readonly apiserverIdHash?: string;
  /** The key_id hash of its newest Status answer, and when (seconds since the epoch). */
  readonly statusKeyIdHash?: string;
  readonly statusAt?: number;
}

interface Sample {
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** Parses the two envelope metrics out of a Prometheus text exposition. */
export function parseKeyIdMetrics(text: string): { status: Sample[]; use: Sample[] } {
  const status: Sample[] = [];
  const use: Sample[] = [];
  for (const line of text.split('\n')) {
    const target = line.startsWith(`${STATUS_METRIC}{`) ? status : line.startsWith(`${USE_METRIC}{`) ? use : undefined;
    if (target === undefined) continue;
    const open = line.indexOf('{');
    const close = line.lastIndexOf('}');
    if (close < open) continue;
    const labels: Record<string, string> = {};
    for (const m of line.slice(open + 1, close).matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[m[1]!] = m[2]!.replace(/\\(.)/g, '$1');
    }
    const value = Number(line.slice(close + 1).trim().split(/\s+/)[0]);
    if (Number.isFinite(value)) target.push({ labels, value });
  }
  return { status, use };
}

/** The verdict for one API server's metrics and one expected provider key. */
export function judgeKeyUse(server: string, metrics: { status: Sample[]; use: Sample[] }, expected: ExpectedKey): ApiServerKeyState {
  const want = keyIDHash(expected.keyID);
  const statuses = metrics.status.filter((s) => s.labels['provider_name'] === expected.provider);
  const base = { server, provider: expected.provider };
  if (statuses.length === 0) {
    return {
      ...base,
      ok: false,
      problem:
        `reports no Status answer from kms provider "${expected.provider}": it does not run with this provider ` +
        '(deploy the EncryptionConfiguration on it and restart it), or it has not polled the plugin yet',
    };
  }
  const newest = statuses.reduce((a, b) => (b.value > a.value ? b : a));
  const state = {
    ...base,
    statusKeyIdHash: newest.labels['key_id_hash'] ?? '',
    statusAt: newest.value,
    ...(newest.labels['apiserver_id_hash'] ? { apiserverIdHash: newest.labels['apiserver_id_hash'] } : {}),
  };
  if (state.statusKeyIdHash !== want) {
    return {
      ...state,
      ok: false,
      problem:
        `its last Status poll of "${expected.provider}" (${new Date(newest.value * 1000).toISOString()}) returned ` +
        `another key_id (hash ${state.statusKeyIdHash.slice(0, 19)}…), so it still writes with the old key. ` +
        'It polls about once a minute (and on /readyz): wait, or restart it, then rerun',
    };
  }
  const laterOldWrite = metrics.use.find(
    (u) =>
      u.labels['provider_name'] === expected.provider &&
      u.labels['transformation_type'] === 'to_storage' &&
      u.labels['key_id_hash'] !== want &&
      u.value > newest.value,
  );
  if (laterOldWrite) {
    return {
      ...state,
      ok: false,
      problem:
        `it wrote with another key_id (hash ${String(laterOldWrite.labels['key_id_hash']).slice(0, 19)}…) after its Status ` +
        'poll returned the current one (its Encrypt of a new DEK seed failed?): see its log, then rerun',
    };
  }
  return { ...state, ok: true };
}

/** GET <server>/metrics with the kubeconfig's credentials; keeps only the envelope key_id lines. */
async function fetchKeyIdMetrics(kc: KubeConfig, server: string): Promise<string> {
  const opts: https.RequestOptions = { headers: {} };
  await kc.applyToHTTPSOptions(opts);
  const url = new URL(`${server.replace(/\/$/, '')}/metrics`);
  const secure = url.protocol === 'https:';
  return await new Promise<string>((resolve, reject) => {
    const req = (secure ? https : http).request(
      url,
      { ...opts, method: 'GET', timeout: REQUEST_TIMEOUT_MS, agent: false },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new AtrestError('ERR_API', `GET ${url.href}: HTTP ${res.statusCode} (the user needs "get" on the non-resource URL /metrics)`));
          return;
        }
        let size = 0;
        let rest = '';
        const kept: string[] = [];
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          size += chunk.length;
          if (size > MAX_METRICS_BYTES) {
            req.destroy(new AtrestError('ERR_API', `GET ${url.href}: more than ${MAX_METRICS_BYTES} bytes`));
            return;
          }
          const lines = (rest + chunk).split('\n');
          rest = lines.pop() ?? '';
          for (const l of lines) if (l.startsWith('apiserver_envelope_encryption_key_id_hash')) kept.push(l);
        });
        res.on('end', () => resolve([...kept, rest].join('\n')));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new AtrestError('ERR_API', `GET ${url.href} timed out`)));
    req.on('error', (err) =>
      reject(err instanceof AtrestError ? err : new AtrestError('ERR_API', `GET ${url.href}: ${err.message}`, { cause: err })),
    );
    req.end();
  });
}

/** Identity leases renewed within this long of the newest one belong to running API servers (they renew every 10 s). */
const LEASE_FRESH_MS = 60_000;
/** Lease lists are a handful of small objects; a cap all the same. */
const MAX_LEASES_BYTES = 4 * 1024 * 1024;

interface LeaseList {
  items?: { metadata?: { name?: string; labels?: Record<string, string> }; spec?: { renewTime?: string } }[];
}

/** The hosts whose kube-apiserver renewed its identity lease (kube-system, label apiserver.kubernetes.io/identity) lately. */
export function freshApiServerHosts(list: LeaseList): string[] {
  const leases = (list.items ?? []).map((l) => ({
    host: l.metadata?.labels?.['kubernetes.io/hostname'] ?? l.metadata?.name ?? '?',
    renewed: Date.parse(l.spec?.renewTime ?? ''),
  }));
  const newest = Math.max(...leases.map((l) => l.renewed).filter(Number.isFinite));
  return leases.filter((l) => Number.isFinite(l.renewed) && newest - l.renewed <= LEASE_FRESH_MS).map((l) => l.host).sort();
}

async function getText(kc: KubeConfig, href: string, maxBytes: number): Promise<{ status: number; body: string }> {
  const opts: https.RequestOptions = { headers: {} };
  await kc.applyToHTTPSOptions(opts);
  const url = new URL(href);
  return await new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? https : http).request(
      url,
      { ...opts, method: 'GET', timeout: REQUEST_TIMEOUT_MS, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
          if (body.length > maxBytes) req.destroy(new AtrestError('ERR_API', `GET ${url.href}: more than ${maxBytes} bytes`));
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new AtrestError('ERR_API', `GET ${url.href} timed out`)));
    req.on('error', (err) => reject(err instanceof AtrestError ? err : new AtrestError('ERR_API', `GET ${url.href}: ${err.message}`, { cause: err })));
    req.end();
  });
}

/** Reads every API server's metrics and judges each expected provider key on each of them. */
export async function checkApiServerKeyIDs(target: ApiServerTarget, expected: readonly ExpectedKey[]): Promise<ApiServerKeyState[]> {
  const kc = target.kubeConfig;
  const base = kc.getCurrentCluster()!.server.replace(/\/$/, '');
  const servers = target.servers && target.servers.length > 0 ? target.servers : [base];
  const out: ApiServerKeyState[] = [];
  const seen = new Set<string>();
  for (const server of servers) {
    const metrics = parseKeyIdMetrics(await fetchKeyIdMetrics(kc, server));
    const ids = metrics.status.map((s) => s.labels['apiserver_id_hash']).filter((id) => id);
    // Before 1.29 the metrics carry no apiserver_id_hash: then each URL read counts as one server.
    if (ids.length === 0) seen.add(`url:${server}`);
    for (const id of ids) seen.add(id!);
    for (const e of expected) out.push(judgeKeyUse(server, metrics, e));
  }
  // Behind one address (a load balancer) only one server answers: the identity leases tell how many run.
  const leases = await getText(
    kc,
    `${base}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases?labelSelector=${encodeURIComponent('apiserver.kubernetes.io/identity=kube-apiserver')}`,
    MAX_LEASES_BYTES,
  );
  if (leases.status === 200) {
    const hosts = freshApiServerHosts(JSON.parse(leases.body) as LeaseList);
    const checked = seen.size;
    if (hosts.length > checked) {
      for (const e of expected) {
        out.push({
          server: `${hosts.length - checked} more kube-apiserver(s)`,
          provider: e.provider,
          ok: false,
          problem:
            `${hosts.length} hosts run a kube-apiserver (identity leases in kube-system: ${hosts.join(', ')}), ` +
            `but the metrics of ${checked} were read: list every one with --apiservers URL,URL,...`,
        });
      }
    }
  }
  return out;
}

/** The error when some API server does not write with the expected key_id yet. */
export function apiServerKeyIdError(what: string, states: readonly ApiServerKeyState[], expected: readonly ExpectedKey[]): AtrestError {
  const bad = states.filter((s) => !s.ok);
  const keys = expected.map((e) => `"${e.provider}" key_id ${e.keyID}`).join(', ');
  return new AtrestError(
    'ERR_APISERVER_KEY_ID',
    `${what}: not every kube-apiserver writes with the plugin's current key (${keys}) yet, ` +
      `so values it writes now would still need the old key:\n` +
      bad.map((s) => `  ${s.server}: ${s.problem}`).join('\n') +
      '\n  do not retire or remove any older key until this passes',
  );
}
