// The plugin's health and metrics HTTP listener, separate from the KMS socket: /livez (the process
// answers; never fails because a key backend is down), /healthz and /readyz (every readiness check
// passes), /metrics (Prometheus text). Answers in the style of kube-apiserver's own health endpoints.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AtrestError } from '../errors.js';
import type { Logger } from '../logger.js';

/** 127.0.0.1 only; 9787 is not used by kube-apiserver (6443), kubelet (10248/10250/10255),
 *  etcd (2379/2380/2381), scheduler (10259), controller-manager (10257) or kube-proxy (10249/10256). */
export const DEFAULT_HEALTH_LISTEN = '127.0.0.1:9787';

export interface ReadinessCheck {
  readonly name: string;
  /** undefined when healthy, else the reason (no secrets). */
  check(): string | undefined | Promise<string | undefined>;
}

export interface HealthServerOptions {
  readonly host: string;
  readonly port: number;
  readonly checks: readonly ReadinessCheck[];
  readonly metrics: () => string;
  readonly logger: Logger;
}

export interface HealthServer {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Parses `HOST:PORT` (`[::1]:9787` for IPv6) or `off` (→ undefined). */
export function parseHealthListen(text: string): { host: string; port: number } | undefined {
  if (text === 'off') return undefined;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `--health-listen "${text}" is not HOST:PORT (e.g. ${DEFAULT_HEALTH_LISTEN}) or off`,
    );
  }
  return { host: (m[1] ?? m[2])!, port };
}

async function runChecks(
  checks: readonly ReadinessCheck[],
): Promise<{ name: string; failure?: string }[]> {
  return Promise.all(
    checks.map(async (c) => {
      try {
        const failure = await c.check();
        return failure === undefined ? { name: c.name } : { name: c.name, failure };
      } catch (err) {
        return { name: c.name, failure: err instanceof Error ? err.message : String(err) };
      }
    }),
  );
}

export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://health');
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    switch (url.pathname) {
      case '/livez':
        return send(
          200,
          url.searchParams.has('verbose') ? '[+]ping ok\nlivez check passed\n' : 'ok',
        );
      case '/healthz':
      case '/readyz': {
        const results = await runChecks(options.checks);
        const failed = results.filter((r) => r.failure !== undefined);
        const what = url.pathname.slice(1);
        if (failed.length === 0 && !url.searchParams.has('verbose')) return send(200, 'ok');
        const lines = results.map((r) =>
          r.failure === undefined ? `[+]${r.name} ok` : `[-]${r.name} failed: ${r.failure}`,
        );
        lines.push(failed.length === 0 ? `${what} check passed` : `${what} check failed`);
        return send(failed.length === 0 ? 200 : 503, lines.join('\n') + '\n');
      }
      case '/metrics':
        return send(200, options.metrics(), 'text/plain; version=0.0.4; charset=utf-8');
      default:
        return send(404, 'not found\n');
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      options.logger.error('health endpoint failed', { error: String(err) });
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new AtrestError(
          'ERR_CONFIG_INVALID',
          `cannot listen for health checks on ${options.host}:${options.port}: ${err.code ?? err.message}`,
          { cause: err },
        ),
      ),
    );
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    host: address.address,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
