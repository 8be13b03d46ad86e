// KMIP over TLS (port 5696, client certificate): a small pool of connections, each carrying one
// request at a time (KMIP servers answer in order; not every server multiplexes). Frames messages by
// the TTLV length in their first 8 bytes; a response larger than KMIP_RESPONSE_MAX_BYTES, a socket
// error or an abort destroys the connection. Errors leave as BackendError; no socket error escapes.

import { connect, type TLSSocket } from 'node:tls';
import { BackendError, type BackendErrorKind } from '../../errors.js';
import { isNetworkError } from '../network-error.js';
import { decodeTtlv, encodeTtlv, ttlvMessageLength, type TtlvItem } from './ttlv.js';

export const KMIP_BACKEND = 'kmip';
/** Our responses are a few hundred bytes; a server sending more is refused. */
export const KMIP_RESPONSE_MAX_BYTES = 64 * 1024;
/** Connections kept open at most (each carries one request at a time). */
export const KMIP_MAX_CONNECTIONS = 4;

export interface KmipConnectionConfig {
  readonly host: string;
  readonly port: number;
  /** PEM text. */
  readonly cert: string;
  readonly key: string;
  readonly ca?: string;
  readonly serverName?: string;
}

export interface KmipPool {
  send(request: TtlvItem, signal: AbortSignal): Promise<TtlvItem>;
  close(): void;
}

/** Socket and TLS errors: the network is unavailable; a refused certificate is the operator's to fix. */
export function classifySocketError(err: unknown): BackendErrorKind {
  const code = (err as { code?: string })?.code ?? '';
  if (isNetworkError(err)) return 'unavailable';
  if (
    code.startsWith('ERR_SSL_') ||
    code.startsWith('ERR_TLS_') ||
    code.includes('CERT') ||
    code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' ||
    code === 'SELF_SIGNED_CERT_IN_CHAIN'
  ) {
    return 'user-induced';
  }
  return 'unavailable';
}

function socketError(err: unknown): BackendError {
  const kind = classifySocketError(err);
  const code = (err as { code?: string })?.code ?? (err as Error)?.name ?? 'error';
  const hint =
    kind === 'user-induced'
      ? 'the TLS handshake failed: check the CA, the client certificate and key, and the server name'
      : 'cannot reach the KMIP server';
  return new BackendError(KMIP_BACKEND, kind, `${hint} (${code})`, { cause: err });
}

class Connection {
  private readonly socket: TLSSocket;
  private readonly ready: Promise<void>;
  private buffered: Buffer[] = [];
  private size = 0;
  private waiting:
    { resolve: (b: Buffer) => void; reject: (e: unknown) => void; expect?: number } | undefined;
  private failure: unknown;
  dead = false;

  constructor(config: KmipConnectionConfig) {
    this.socket = connect({
      host: config.host,
      port: config.port,
      cert: config.cert,
      key: config.key,
      ...(config.ca !== undefined ? { ca: config.ca } : {}),
      ...(config.serverName !== undefined ? { servername: config.serverName } : {}),
      minVersion: 'TLSv1.2',
    });
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('secureConnect', resolve);
      this.socket.once('error', reject);
    });
    this.ready.catch(() => undefined);
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.socket.on('error', (err) => this.fail(socketError(err)));
    this.socket.on('close', () =>
      this.fail(
        new BackendError(KMIP_BACKEND, 'unavailable', 'the KMIP server closed the connection'),
      ),
    );
  }

  private fail(err: unknown): void {
    this.dead = true;
    this.failure ??= err;
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(this.failure);
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffered.push(chunk);
    this.size += chunk.length;
    const w = this.waiting;
    if (w === undefined) {
      if (this.size > 0) this.fail(new BackendError(KMIP_BACKEND, 'other', 'unsolicited data'));
      return;
    }
    if (w.expect === undefined && this.size >= 8) {
      const all = Buffer.concat(this.buffered);
      this.buffered = [all];
      try {
        w.expect = ttlvMessageLength(all.subarray(0, 8));
      } catch (err) {
        this.fail(new BackendError(KMIP_BACKEND, 'other', 'not a KMIP response', { cause: err }));
        return;
      }
      if (w.expect > KMIP_RESPONSE_MAX_BYTES) {
        this.fail(
          new BackendError(
            KMIP_BACKEND,
            'other',
            `response of ${w.expect} bytes exceeds ${KMIP_RESPONSE_MAX_BYTES}`,
          ),
        );
        return;
      }
    }
    if (w.expect !== undefined && this.size >= w.expect) {
      const all = Buffer.concat(this.buffered);
      if (all.length > w.expect) {
        this.fail(new BackendError(KMIP_BACKEND, 'other', 'data after the response'));
        return;
      }
      this.buffered = [];
      this.size = 0;
      this.waiting = undefined;
      w.resolve(all);
    }
  }

  async exchange(request: Buffer, signal: AbortSignal): Promise<Buffer> {
    const onAbort = (): void =>
      this.fail(new BackendError(KMIP_BACKEND, 'unavailable', 'the KMIP call timed out'));
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      try {
        await this.ready;
      } catch (err) {
        throw this.failure ?? socketError(err);
      }
      if (this.dead) throw this.failure;
      const response = new Promise<Buffer>((resolve, reject) => {
        this.waiting = { resolve, reject };
      });
      this.socket.write(request);
      return await response;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  destroy(): void {
    this.dead = true;
    this.socket.destroy();
  }
}

export function createKmipPool(config: KmipConnectionConfig): KmipPool {
  const idle: Connection[] = [];
  let open = 0;
  const queue: ((c: Connection) => void)[] = [];
  let closed = false;

  function acquire(): Promise<Connection> {
    while (idle.length > 0) {
      const c = idle.pop()!;
      if (!c.dead) return Promise.resolve(c);
      open--;
    }
    if (open < KMIP_MAX_CONNECTIONS) {
      open++;
      return Promise.resolve(new Connection(config));
    }
    return new Promise((resolve) => queue.push(resolve));
  }

  function release(c: Connection): void {
    if (c.dead || closed) {
      open--;
      c.destroy();
      const next = queue.shift();
      if (next !== undefined) {
        open++;
        next(new Connection(config));
      }
      return;
    }
    const next = queue.shift();
    if (next !== undefined) next(c);
    else idle.push(c);
  }

  return {
    async send(request, signal) {
      if (closed) throw new BackendError(KMIP_BACKEND, 'other', 'the KMIP client is closed');
      const c = await acquire();
      try {
        const bytes = await c.exchange(encodeTtlv(request), signal);
        return decodeTtlv(bytes);
      } catch (err) {
        c.dead = true;
        if (err instanceof BackendError) throw err;
        throw new BackendError(KMIP_BACKEND, 'other', 'unreadable KMIP response', { cause: err });
      } finally {
        release(c);
      }
    },
    close() {
      closed = true;
      for (const c of idle.splice(0)) c.destroy();
    },
  };
}
