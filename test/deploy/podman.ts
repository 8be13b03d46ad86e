// Runs the image scripts/build-image.sh builds the way a kubelet runs the static Pod: the podman
// arguments come from the Pod spec in deploy/kubernetes/ (image, command, args, securityContext,
// host network, volumes), with host paths moved under a test directory. Only the fields the
// manifest uses are understood; anything else fails the test instead of being silently ignored.

import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export interface ImageInfo {
  readonly reference: string;
  readonly version: string;
  readonly oci: string;
  readonly docker: string;
  readonly rootfsBytes: number;
  readonly ociArchiveBytes: number;
}

/** Builds the image (cached by its inputs hash) and loads it into podman's store. */
export async function buildAndLoadImage(): Promise<ImageInfo> {
  const { stdout } = await exec('bash', ['scripts/build-image.sh'], {
    maxBuffer: 16 << 20,
    timeout: 20 * 60_000,
  });
  const info = JSON.parse(readFileSync(stdout.trim().split('\n').pop()!, 'utf8')) as ImageInfo;
  const loaded = await exec('podman', ['load', '--input', info.oci], { maxBuffer: 16 << 20 });
  if (!`${loaded.stdout}${loaded.stderr}`.includes(info.reference)) {
    throw new Error(`podman load did not report ${info.reference}:\n${loaded.stdout}${loaded.stderr}`);
  }
  // Earlier builds of the image, untagged by this load: drop them so the store does not grow.
  await exec('podman', ['image', 'prune', '--force', '--filter', 'label=org.opencontainers.image.title=atrest']);
  return info;
}

/**
 * Resource limits podman sets by default exceed what an unprivileged (no CAP_SYS_RESOURCE) root
 * may raise to on some hosts, and runc then refuses to start: keep them at or below this process's.
 */
export function ulimitArgs(): string[] {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const hard = (name: string, cap: number): number => {
    const line = limits.split('\n').find((l) => l.startsWith(name));
    const v = line?.slice(name.length).trim().split(/\s+/)[1];
    return v === undefined || v === 'unlimited' ? cap : Math.min(Number(v), cap);
  };
  const nofile = hard('Max open files', 65536);
  const nproc = hard('Max processes', 32768);
  return ['--ulimit', `nofile=${nofile}:${nofile}`, '--ulimit', `nproc=${nproc}:${nproc}`];
}

export interface PodRun {
  /** `podman run` arguments up to and including the image. */
  readonly podmanArgs: string[];
  /** The container's arguments (the Pod's `args`) after the image. */
  readonly args: string[];
  /** host path of each volume, by the container path it is mounted at. */
  readonly hostPathOf: ReadonlyMap<string, string>;
}

/**
 * Translates the first container of a Pod into `podman run` arguments. Volumes of type hostPath are
 * bind-mounted from `hostRoot` + path (created for DirectoryOrCreate, required for Directory),
 * emptyDir with medium Memory becomes a tmpfs of its sizeLimit.
 */
export async function podmanRunFromPod(pod: any, hostRoot: string, name: string): Promise<PodRun> {
  const spec = pod.spec;
  const known = new Set([
    'priorityClassName', 'hostNetwork', 'dnsPolicy', 'containers', 'securityContext',
    'terminationGracePeriodSeconds', 'volumes',
  ]);
  for (const k of Object.keys(spec)) if (!known.has(k)) throw new Error(`pod.spec.${k} is not translated`);
  if (spec.containers.length !== 1) throw new Error('one container expected');
  const c = spec.containers[0];
  const a: string[] = ['run', '--rm', '--name', name, '--runtime', 'runc', ...ulimitArgs()];

  if (spec.hostNetwork === true) a.push('--network', 'host');
  // dnsPolicy Default: the node's resolv.conf, which is what podman gives a host-network container.
  if (spec.dnsPolicy !== 'Default') throw new Error(`dnsPolicy ${spec.dnsPolicy} is not translated`);

  const sc = c.securityContext ?? {};
  if (sc.runAsUser !== undefined) a.push('--user', `${sc.runAsUser}:${sc.runAsGroup ?? sc.runAsUser}`);
  if (sc.readOnlyRootFilesystem === true) a.push('--read-only', '--read-only-tmpfs=false');
  if (sc.allowPrivilegeEscalation === false) a.push('--security-opt', 'no-new-privileges');
  for (const cap of sc.capabilities?.drop ?? []) a.push(`--cap-drop=${cap}`);
  for (const cap of sc.capabilities?.add ?? []) a.push(`--cap-add=${cap}`);
  if (sc.seccompProfile !== undefined && sc.seccompProfile.type !== 'RuntimeDefault') {
    throw new Error('only the RuntimeDefault seccomp profile is translated');
  }
  for (const g of spec.securityContext?.supplementalGroups ?? []) a.push('--group-add', String(g));

  const hostPathOf = new Map<string, string>();
  for (const m of c.volumeMounts) {
    const v = spec.volumes.find((x: any) => x.name === m.name);
    if (v === undefined) throw new Error(`volumeMount ${m.name} has no volume`);
    if (v.hostPath !== undefined) {
      const host = join(hostRoot, v.hostPath.path);
      if (v.hostPath.type === 'DirectoryOrCreate') await mkdir(host, { recursive: true, mode: 0o755 });
      else if (v.hostPath.type !== 'Directory') {
        throw new Error(`hostPath type ${v.hostPath.type} is not translated`);
      }
      a.push('--volume', `${host}:${m.mountPath}:${m.readOnly === true ? 'ro' : 'rw'}`);
      hostPathOf.set(m.mountPath, host);
    } else if (v.emptyDir?.medium === 'Memory') {
      const size = String(v.emptyDir.sizeLimit ?? '16Mi').replace(/i$/, '').toLowerCase();
      a.push('--tmpfs', `${m.mountPath}:rw,nosuid,nodev,size=${size}`);
    } else {
      throw new Error(`volume ${v.name} is not translated`);
    }
  }
  if (c.command !== undefined) {
    a.push('--entrypoint', JSON.stringify(c.command));
  }
  a.push(c.image);
  return { podmanArgs: a, args: [...(c.args ?? [])], hostPathOf };
}

export interface Container {
  /** Resolves with the first JSON log line whose msg is `msg` (from now on or already seen). */
  waitForLog(msg: string, after?: number): Promise<Record<string, unknown>>;
  logCount(): number;
  exited(): Promise<number>;
  output(): string;
}

/** Starts `podman ARGS` in the foreground and follows the plugin's JSON log lines on stderr. */
export function startContainer(podmanArgs: readonly string[]): Container {
  const child = spawn('podman', podmanArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const lines: Record<string, unknown>[] = [];
  const waiters: Array<() => void> = [];
  const wake = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  let partial = '';
  const onData = (d: string): void => {
    text += d;
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const p of parts) {
      try {
        const o = JSON.parse(p);
        if (o !== null && typeof o === 'object') lines.push(o);
      } catch {
        // not a log line (podman's own messages)
      }
    }
    wake();
  };
  child.stdout!.setEncoding('utf8').on('data', onData);
  child.stderr!.setEncoding('utf8').on('data', onData);
  let code: number | undefined;
  const exit = new Promise<number>((resolve) =>
    child.once('exit', (c, s) => {
      code = c ?? (s === null ? -1 : 128);
      wake();
      resolve(code);
    }),
  );
  return {
    waitForLog(msg, after = 0) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const hit = lines.slice(after).find((l) => l['msg'] === msg);
          if (hit !== undefined) return resolve(hit);
          if (code !== undefined) {
            return reject(new Error(`container exited (${code}) before "${msg}":\n${text}`));
          }
          waiters.push(check);
        };
        check();
      });
    },
    logCount: () => lines.length,
    exited: () => exit,
    output: () => text,
  };
}

export async function podman(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return exec('podman', args, { maxBuffer: 16 << 20 });
}
