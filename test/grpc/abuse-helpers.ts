// Test helper for the HTTP/2 abuse suites: a real `atrest serve` child under a 256 MB V8 heap (as the
// issue's reproduction ran it), its peak RSS from /proc, its JSON log lines as events, and a raw
// attacking HTTP/2 connection that writes whatever bytes it is given (with socket back-pressure, and
// stopping once the server closes) and records what the server answers: GOAWAY, RST_STREAM codes,
// WINDOW_UPDATEs, response HEADERS.

import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createGrpcClient } from '../../src/grpc/client.js';
import * as v2 from '../../src/proto/kms-v2.js';
import { CLI, newKeyringFile, tempDir, type Cleanup } from '../kms/helpers.js';
import { FRAME, PREFACE, frame } from './raw-h2.js';

/** The V8 heap limit the reproduction used. */
export const HEAP_LIMIT_MB = 256;
/** Peak RSS every attack must stay under. */
export const PEAK_RSS_LIMIT_MB = 200;
/** Generous failure deadline for "the server answers": the 2-core CI machine may be very busy. */
export const ANSWER_DEADLINE_MS = 15_000;

export type LogLine = Record<string, unknown>;

export interface Plugin {
  readonly child: ChildProcess;
  readonly socket: string;
  readonly logs: LogLine[];
  /** Resolves with the first log line (already seen or future) that matches. */
  waitForLog(what: string, match: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  alive(): boolean;
  /** VmHWM of the plugin process, in MB. */
  peakRssMb(): number;
  stderrTail(): string;
}

export async function startPlugin(t: Cleanup, backendArgs?: readonly string[], env?: NodeJS.ProcessEnv): Promise<Plugin> {
  const dir = await tempDir(t, 'atrest-abuse-');
  const socket = join(dir, 'kms.sock');
  const backend = backendArgs ?? ['--keyring', await newKeyringFile(dir)];
  const child = spawn(
    process.execPath,
    [`--max-old-space-size=${HEAP_LIMIT_MB}`, CLI, 'serve', '--listen', `unix://${socket}`, '--health-listen', 'off', ...backend],
    { stdio: ['ignore', 'ignore', 'pipe'], env: env ?? process.env },
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const logs: LogLine[] = [];
  const waiters = new Set<() => void>();
  let partial = '';
  let tail = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    tail = (tail + d).slice(-4000);
    const lines = (partial + d).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        // not ours
      }
    }
    for (const w of [...waiters]) w();
  });
  child.once('exit', () => {
    for (const w of [...waiters]) w();
  });
  const plugin: Plugin = {
    child,
    socket,
    logs,
    waitForLog(what, match, timeoutMs = ANSWER_DEADLINE_MS) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const hit = logs.find(match);
          if (hit !== undefined) return done(() => resolve(hit));
          if (child.exitCode !== null || child.signalCode !== null) {
            return done(() => reject(new Error(`atrest exited before ${what}:\n${tail}`)));
          }
        };
        const timer = setTimeout(() => done(() => reject(new Error(`no log line for ${what} within ${timeoutMs} ms:\n${tail}`))), timeoutMs);
        const done = (f: () => void): void => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
    alive: () => child.exitCode === null && child.signalCode === null,
    peakRssMb() {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
      return kb / 1024;
    },
    stderrTail: () => tail,
  };
  await plugin.waitForLog('"serving"', (l) => l['msg'] === 'serving');
  return plugin;
}

/** One Status (v2) call on a fresh connection: the plugin accepts connections and answers. */
export async function statusOnNewConnection(plugin: Plugin): Promise<string> {
  const client = createGrpcClient({ address: plugin.socket });
  try {
    const out = await client.unary(v2.V2_METHODS.status, Buffer.alloc(0), { timeoutMs: ANSWER_DEADLINE_MS });
    return v2.StatusResponse.decode(out).healthz;
  } finally {
    await client.close();
  }
}

/** A raw HTTP/2 connection for attacks: writes bytes as given, records the server's answers. */
export class AttackConn {
  readonly socket: net.Socket;
  goaway: { lastStreamId: number; code: number; debug: string } | undefined;
  /** RST_STREAM code per stream id. */
  readonly rst = new Map<number, number>();
  /** Streams that received HEADERS (a response or trailers-only status). */
  readonly answered = new Set<number>();
  /** Connection-level WINDOW_UPDATE increments received. */
  connWindowUpdates = 0;
  closed = false;
  /** Acknowledge the server's SETTINGS (off for connections that never finish their preface). */
  autoAck = true;
  /** Bytes this side managed to hand to the socket before it closed. */
  written = 0;
  private buf = Buffer.alloc(0);
  private readonly waiters = new Set<() => void>();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.notify();
    });
  }

  /** Connects; `handshake` sends the preface and an empty SETTINGS (plus `settings` pairs). */
  static async connect(address: string, handshake = true, settings: readonly [number, number][] = []): Promise<AttackConn> {
    // A UNIX socket whose accept backlog is full refuses with EAGAIN (1,000 connections at once on a
    // busy machine): back off and try again, as a real client would.
    for (let attempt = 0; ; attempt++) {
      try {
        return await AttackConn.connectOnce(address, handshake, settings);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || attempt >= 500) throw err;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  }

  private static connectOnce(address: string, handshake: boolean, settings: readonly [number, number][]): Promise<AttackConn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(address);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.removeListener('error', reject);
        const c = new AttackConn(socket);
        c.autoAck = handshake;
        if (handshake) {
          const payload = Buffer.alloc(6 * settings.length);
          settings.forEach(([k, v], i) => {
            payload.writeUInt16BE(k, 6 * i);
            payload.writeUInt32BE(v, 6 * i + 2);
          });
          c.socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0, payload)]));
        }
        resolve(c);
      });
    });
  }

  /** Writes each buffer in turn, waiting for 'drain' when needed; stops quietly once the server closed. */
  async writeAll(parts: Iterable<Buffer>): Promise<void> {
    for (const p of parts) {
      if (this.closed || this.socket.destroyed) return;
      this.written += p.length;
      if (!this.socket.write(p)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            this.socket.off('drain', done);
            this.socket.off('close', done);
            resolve();
          };
          this.socket.on('drain', done);
          this.socket.on('close', done);
        });
      }
    }
  }

  /** Resolves once `cond` holds (checked after every frame and on close); rejects after timeoutMs. */
  waitFor(what: string, cond: () => boolean, timeoutMs = ANSWER_DEADLINE_MS): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (cond()) done(resolve);
      };
      const timer = setTimeout(() => done(() => reject(new Error(`${what}: not seen within ${timeoutMs} ms`))), timeoutMs);
      const done = (f: () => void): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        f();
      };
      this.waiters.add(check);
      check();
    });
  }

  countRst(code: number): number {
    let n = 0;
    for (const c of this.rst.values()) if (c === code) n++;
    return n;
  }

  close(): void {
    this.socket.destroy();
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  private onData(d: Buffer): void {
    let buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const type = buf[3]!;
      const flags = buf[4]!;
      const id = buf.readUInt32BE(5) & 0x7fffffff;
      const payload = buf.subarray(9, 9 + len);
      if (type === FRAME.GOAWAY) {
        this.goaway = {
          lastStreamId: payload.readUInt32BE(0) & 0x7fffffff,
          code: payload.readUInt32BE(4),
          debug: payload.subarray(8).toString('latin1'),
        };
      } else if (type === FRAME.RST_STREAM) this.rst.set(id, payload.readUInt32BE(0));
      else if (type === FRAME.HEADERS) this.answered.add(id);
      else if (type === FRAME.WINDOW_UPDATE && id === 0) this.connWindowUpdates++;
      else if (type === FRAME.SETTINGS && (flags & 1) === 0 && this.autoAck) this.socket.write(frame(FRAME.SETTINGS, 1, 0, Buffer.alloc(0)));
      buf = buf.subarray(9 + len);
    }
    this.buf = Buffer.from(buf);
    this.notify();
  }
}

/** RST_STREAM / GOAWAY error codes (RFC 9113 §7). */
export const H2 = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  FLOW_CONTROL_ERROR: 3,
  STREAM_CLOSED: 5,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  ENHANCE_YOUR_CALM: 0xb,
} as const;
