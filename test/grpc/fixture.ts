// Test helper: a real net.Server on a temporary UNIX socket serving createGrpcServer.

import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGrpcServer, type GrpcServer, type GrpcServerOptions } from '../../src/grpc/server.js';

export interface Fixture {
  readonly dir: string;
  readonly address: string;
  server: GrpcServer;
  listener: net.Server;
  /** Stops the listener and the gRPC server (grace 0 unless given). */
  stop(graceMs?: number): Promise<void>;
  /** Starts a fresh listener + server on the same address. */
  restart(options?: Partial<GrpcServerOptions>): Promise<void>;
  cleanup(): Promise<void>;
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'atrest-grpc-'));
}

export async function listen(address: string, server: GrpcServer): Promise<net.Server> {
  const listener = net.createServer((socket) => server.handleConnection(socket));
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(address, () => resolve());
  });
  return listener;
}

export async function startFixture(options: GrpcServerOptions, address?: string): Promise<Fixture> {
  const dir = tempDir();
  const addr = address ?? join(dir, 'kms.sock');
  const fx: Fixture = {
    dir,
    address: addr,
    server: createGrpcServer(options),
    listener: undefined as unknown as net.Server,
    async stop(graceMs = 0) {
      const closed = new Promise<void>((resolve) => fx.listener.close(() => resolve()));
      await fx.server.close(graceMs);
      await closed;
    },
    async restart(more) {
      fx.server = createGrpcServer({ ...options, ...more });
      fx.listener = await listen(addr, fx.server);
    },
    async cleanup() {
      if (fx.listener.listening) await fx.stop(0);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  fx.listener = await listen(addr, fx.server);
  return fx;
}

export const echo = async (call: { message: Buffer }): Promise<Uint8Array> => call.message;
