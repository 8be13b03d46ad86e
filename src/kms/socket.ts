// The plugin's UNIX socket: preparing the path (parent directory 0700, stale socket removal, refusal
// of live sockets and non-sockets), binding with mode 0600 from the first instant (umask around
// bind), optional mode/group for a non-root kube-apiserver, refusal of abstract names, removal on close.

import { promises as fsp } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { AtrestError } from '../errors.js';
import type { UnixEndpoint } from '../grpc/endpoint.js';

/** sun_path is 108 bytes on Linux, including the terminating NUL. */
export const UNIX_PATH_MAX_BYTES = 107;
export const DEFAULT_SOCKET_MODE = 0o600;

export interface UnixListenOptions {
  /** Permission bits set once bound (the socket is 0600 until then). */
  readonly mode?: number;
  /** Group id to give the socket (for a kube-apiserver running as a non-root group member). */
  readonly gid?: number;
}

export interface UnixListener {
  readonly endpoint: UnixEndpoint;
  /** Whether our socket file is still at the path. */
  present(): Promise<boolean>;
  /** Re-binds the path if our socket file was deleted or replaced; true if it did. */
  restore(): Promise<boolean>;
  /** Stops accepting; resolves once the socket file is removed (existing connections stay open). */
  close(): Promise<void>;
}

/** Parses an octal mode like 0600 or 660; only rw bits for user/group/other make sense for a socket. */
export function parseSocketMode(text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `socket mode "${text}" is not an octal mode like 0600`,
    );
  }
  const mode = parseInt(text, 8);
  if ((mode & 0o600) !== 0o600) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `socket mode ${text} must give the owner read and write`,
    );
  }
  if ((mode & 0o006) !== 0) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `socket mode ${text} gives others access; use --socket-group with 0660 instead`,
    );
  }
  return mode;
}

/** Resolves a group name (from /etc/group) or a numeric gid. */
export async function resolveGroup(group: string, groupFile = '/etc/group'): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = await fsp.readFile(groupFile, 'utf8');
  } catch (err) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `cannot read ${groupFile} to resolve group ${group}`,
      {
        cause: err,
      },
    );
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new AtrestError('ERR_CONFIG_INVALID', `unknown group "${group}"`);
}

/** Resolves true if something accepts connections at `address`, false if the socket is dead. */
function probeListener(address: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket: Socket = createConnection({ path: address });
    const timer = setTimeout(() => {
      socket.destroy();
      // A listener whose backlog is full still counts as alive: never delete it.
      resolve(true);
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else reject(err);
    });
  });
}

function inUse(endpoint: UnixEndpoint): AtrestError {
  return new AtrestError(
    'ERR_SOCKET_IN_USE',
    `another plugin is listening on ${endpoint.path}; stop it first (or choose another --listen)`,
  );
}

/**
 * Refuses a socket directory someone else controls: owned by another (non-root) user, or writable by
 * group/others without the sticky bit (they could swap our socket for theirs). /tmp (1777) is fine.
 */
async function checkDirectory(dir: string): Promise<void> {
  const st = await fsp.stat(dir);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
    throw new AtrestError(
      'ERR_SOCKET_ENDPOINT',
      `socket directory ${dir} belongs to uid ${st.uid}, not to this user or root; refusing to use it`,
    );
  }
  if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
    throw new AtrestError(
      'ERR_SOCKET_ENDPOINT',
      `socket directory ${dir} is writable by group or others (mode ${(st.mode & 0o7777).toString(8)}); ` +
        'use a directory only root (or this user) can write to',
    );
  }
}

/**
 * Makes `endpoint` bindable: creates a missing parent directory with mode 0700, removes a socket
 * nobody answers on, and refuses a live socket or anything that is not a socket.
 */
export async function prepareSocketPath(endpoint: UnixEndpoint): Promise<void> {
  if (endpoint.abstract) throw abstractNotSupported(endpoint);
  const path = endpoint.path;
  if (Buffer.byteLength(path, 'utf8') > UNIX_PATH_MAX_BYTES) {
    throw new AtrestError(
      'ERR_SOCKET_ENDPOINT',
      `socket path ${path} is longer than ${UNIX_PATH_MAX_BYTES} bytes, the Linux limit`,
    );
  }
  await fsp.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await checkDirectory(dirname(path));
  let st;
  try {
    st = await fsp.lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) {
    throw new AtrestError(
      'ERR_SOCKET_NOT_A_SOCKET',
      `${path} exists and is not a socket; refusing to remove it`,
    );
  }
  if (await probeListener(path)) throw inUse(endpoint);
  try {
    await fsp.unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Node.js 20 binds a Linux abstract socket with its name NUL-padded to the full sockaddr_un size
 * (`/proc/net/unix` shows `@name@@@…`), while kube-apiserver (Go) connects to the exact name: the
 * API server could never reach us. So `unix:///@name` is refused rather than served unreachably.
 */
function abstractNotSupported(endpoint: UnixEndpoint): AtrestError {
  return new AtrestError(
    'ERR_SOCKET_ENDPOINT',
    `abstract socket ${endpoint.path} is not supported: Node.js binds abstract names NUL-padded, ` +
      'so kube-apiserver could not connect; use a socket file such as unix:///var/run/kms/atrest.sock',
  );
}

function listenOnce(server: Server, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.once('listening', () => {
      server.off('error', onError);
      resolve();
    });
    // bind(2) runs synchronously inside listen(); the umask makes the socket 0600 from birth.
    const previous = process.umask(0o177);
    try {
      server.listen(address);
    } finally {
      process.umask(previous);
    }
  });
}

async function bindOnce(
  endpoint: UnixEndpoint,
  options: UnixListenOptions,
  onConnection: (socket: Socket) => void,
): Promise<{ server: Server; ino: number }> {
  const server = createServer({ pauseOnConnect: false }, onConnection);
  try {
    await listenOnce(server, endpoint.address);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw inUse(endpoint);
    throw new AtrestError(
      'ERR_SOCKET_ENDPOINT',
      `cannot listen on ${endpoint.path}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  try {
    if (options.gid !== undefined) await fsp.chown(endpoint.path, -1, options.gid);
    await fsp.chmod(endpoint.path, options.mode ?? DEFAULT_SOCKET_MODE);
    return { server, ino: (await fsp.lstat(endpoint.path)).ino };
  } catch (err) {
    server.close();
    if ((err as NodeJS.ErrnoException).code === 'EPERM' && options.gid !== undefined) {
      // Without CAP_CHOWN a process may only hand a file to a group it belongs to.
      throw new AtrestError(
        'ERR_SOCKET_ENDPOINT',
        `cannot give ${endpoint.path} to group ${options.gid}: this process is not in that group ` +
          `and has no CAP_CHOWN; run it with the group as a supplementary group ` +
          `(supplementalGroups in a Pod, SupplementaryGroups= in systemd)`,
        { cause: err },
      );
    }
    throw new AtrestError(
      'ERR_SOCKET_ENDPOINT',
      `cannot set owner/mode of ${endpoint.path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/**
 * Closes a listening server without losing someone else's file: libuv unlinks the bound path when the
 * handle closes, whatever is there by then. If the path no longer holds our socket, a hard link keeps
 * the other file and is renamed back after the close.
 */
async function closeKeepingOthers(
  server: Server,
  endpoint: UnixEndpoint,
  ino: number,
): Promise<void> {
  let foreign = false;
  try {
    const st = await fsp.lstat(endpoint.path);
    foreign = !(st.isSocket() && st.ino === ino);
  } catch {
    // nothing at the path: nothing to protect
  }
  if (!foreign) return void server.close();
  const keep = `${endpoint.path}.atrest-keep-${process.pid}`;
  try {
    await fsp.link(endpoint.path, keep);
  } catch {
    return void server.close(); // e.g. a directory, which unlink cannot remove anyway
  }
  server.close();
  await fsp.rename(keep, endpoint.path);
}

/** Binds `endpoint` (after prepareSocketPath) and hands every accepted connection to `onConnection`. */
export async function listenUnix(
  endpoint: UnixEndpoint,
  options: UnixListenOptions,
  onConnection: (socket: Socket) => void,
): Promise<UnixListener> {
  if (endpoint.abstract) throw abstractNotSupported(endpoint);
  let bound = await bindOnce(endpoint, options, onConnection);
  let closing: Promise<void> | undefined;

  async function present(): Promise<boolean> {
    try {
      const st = await fsp.lstat(endpoint.path);
      return st.isSocket() && st.ino === bound.ino;
    } catch {
      return false;
    }
  }

  return {
    endpoint,
    present,
    async restore() {
      if (closing !== undefined || (await present())) return false;
      // Someone deleted (or replaced) our socket file: the API server can no longer reach us. Bind
      // a fresh socket at the path, after the same checks as at start-up (never steal a live one).
      await prepareSocketPath(endpoint);
      // Close the old handle first: libuv unlinks its path on close, which must not hit the new one.
      // Connections already accepted stay open.
      await closeKeepingOthers(bound.server, endpoint, bound.ino);
      bound = await bindOnce(endpoint, options, onConnection);
      return true;
    },
    close() {
      closing ??= (async () => {
        const { server, ino } = bound;
        await closeKeepingOthers(server, endpoint, ino);
        // libuv unlinks our path when the listening handle closes; make sure, but never remove a
        // socket another process has bound at the same path since.
        try {
          const st = await fsp.lstat(endpoint.path);
          if (st.ino === ino && st.isSocket()) await fsp.unlink(endpoint.path);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      })();
      return closing;
    },
  };
}
