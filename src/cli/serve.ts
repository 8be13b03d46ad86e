// `atrest serve`: the KMS plugin. Composes the key backend (backend-factory.ts), the KMS service and
// its gRPC adapter on the UNIX socket (src/kms/), the health/metrics listener (src/health/), JSON logs
// on stderr, and the signals: SIGHUP reloads keys, SIGTERM/SIGINT shut down cleanly and exit 0. A
// failed start-up releases what it had started, newest first (cleanup-stack.ts).

import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { AtrestError } from '../errors.js';
import { EXIT_FAILURE, EXIT_OK } from './exit.js';
import { parsePositiveDurationMs } from '../duration.js';
import { createJsonLogger, isLogLevel, type Logger, type LogLevel } from '../logger.js';
import { parseUnixEndpoint, type UnixEndpoint } from '../grpc/endpoint.js';
import { grpcCodeName } from '../grpc/status.js';
import { createKmsService, type KmsService } from '../kms/service.js';
import { startKmsServer, type KmsServer } from '../kms/server.js';
import { parseSocketMode, resolveGroup, DEFAULT_SOCKET_MODE } from '../kms/socket.js';
import { createPluginMetrics, type PluginMetrics } from '../health/plugin-metrics.js';
import {
  DEFAULT_V2_STATUS_VERSION,
  V2_STATUS_VERSIONS,
  type V2StatusVersion,
} from '../proto/kms-v2.js';
import {
  DEFAULT_HEALTH_LISTEN,
  parseHealthListen,
  startHealthServer,
  type HealthServer,
  type ReadinessCheck,
} from '../health/server.js';
import type { KeyBackend } from '../backends/backend.js';
import { addBackendOptions, createBackend } from './backend-factory.js';
import { createCleanupStack, type CleanupStack } from './cleanup-stack.js';
import { withRecoveryLayer } from '../recovery/backend.js';
import { parsePublicKeyPem } from '../recovery/keys.js';
import type { RecoveryPublicKey } from '../recovery/seal.js';
import { DEV_KEYRING, DEV_LISTEN, devBanner, ensureDevKeyring } from './dev.js';

interface ServeFlags {
  readonly listen?: string;
  readonly backend: string;
  readonly keyring?: string;
  readonly socketMode: string;
  readonly socketGroup?: string;
  readonly healthListen: string;
  readonly logLevel: string;
  readonly shutdownGrace: string;
  readonly selfTestInterval: string;
  readonly statusVersion: V2StatusVersion;
  readonly socketCheckInterval: string;
  readonly dev: boolean;
  readonly recoveryPublicKey?: string;
  readonly [flag: string]: unknown;
}

/** A duration flag: a Go duration (`30s`, `1m`, `500ms`) or a bare number of seconds (`30`). */
function seconds(flag: string, text: string): number {
  const ms = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) * 1000 : parsePositiveDurationMs(text);
  if (ms === undefined || !(ms > 0)) {
    throw new AtrestError(
      'ERR_CONFIG_INVALID',
      `${flag} "${text}" is not a positive duration (30s, 1m, 500ms, or a number of seconds)`,
    );
  }
  return ms;
}

export function registerServe(program: Command, version: string): void {
  const serve = program
    .command('serve')
    .description('run the KMS plugin (v1beta1 and v2 on one UNIX socket) for kube-apiserver')
    .option('--listen <endpoint>', 'socket endpoint, unix:///PATH (a socket file)')
    .option('--socket-mode <mode>', 'permission bits of the socket (octal)', '0600')
    .option(
      '--socket-group <group>',
      'group (name or gid) to own the socket, for a non-root kube-apiserver',
    )
    .option(
      '--health-listen <host:port>',
      '/livez /healthz /readyz /metrics listener, or "off"',
      DEFAULT_HEALTH_LISTEN,
    )
    .addOption(
      new Option('--log-level <level>', 'JSON log level on stderr')
        .choices(['debug', 'info', 'warn', 'error'])
        .default('info'),
    )
    .option('--shutdown-grace <seconds>', 'how long in-flight calls may finish on SIGTERM', '5')
    .option(
      '--self-test-interval <seconds>',
      'period of the background wrap/unwrap self-test',
      '30',
    )
    .addOption(
      new Option(
        '--status-version <version>',
        'version KMS v2 Status answers: v2beta1 is accepted by kube-apiserver 1.27+, v2 only by 1.29+',
      )
        .choices(V2_STATUS_VERSIONS)
        .default(DEFAULT_V2_STATUS_VERSION),
    )
    .option(
      '--socket-check-interval <seconds>',
      'how often to check that the socket file still exists (re-created if deleted)',
      '10',
    )
    .option(
      '--recovery-public-key <file>',
      'also seal every DEK/seed to this offline recovery key ("atrest recovery init"; docs/operations.md)',
    )
    .option(
      '--dev',
      `development quick start: creates ${DEV_KEYRING} on first run, listens on ${DEV_LISTEN}`,
      false,
    );
  addBackendOptions(serve).action(async (flags: ServeFlags) => {
    await runServe(flags, version);
  });
}

/** Every flag resolved and checked before anything is started. */
interface ServeOptions {
  readonly listen: string;
  readonly endpoint: UnixEndpoint;
  readonly socketMode: number;
  readonly socketGid: number | undefined;
  readonly health: { host: string; port: number } | undefined;
  readonly graceMs: number;
  readonly selfTestIntervalMs: number;
  readonly socketCheckMs: number;
  readonly recoveryKey: RecoveryPublicKey | undefined;
  /** --dev without --keyring: the development keyring (created on first run). */
  readonly devKeyring: { path: string; created: boolean } | undefined;
}

async function resolveServeOptions(flags: ServeFlags): Promise<ServeOptions> {
  let listen = flags.listen;
  let devKeyring: ServeOptions['devKeyring'];
  if (flags.dev) {
    listen ??= DEV_LISTEN;
    if (flags.backend === 'keyring' && flags.keyring === undefined) {
      devKeyring = await ensureDevKeyring();
    }
  }
  if (listen === undefined) {
    throw new AtrestError('ERR_CONFIG_INVALID', 'serve needs --listen unix:///PATH (or --dev)');
  }
  return {
    listen,
    endpoint: parseUnixEndpoint(listen),
    socketMode:
      flags.socketMode === undefined ? DEFAULT_SOCKET_MODE : parseSocketMode(flags.socketMode),
    socketGid: flags.socketGroup === undefined ? undefined : await resolveGroup(flags.socketGroup),
    health: parseHealthListen(flags.healthListen),
    graceMs: seconds('--shutdown-grace', flags.shutdownGrace),
    selfTestIntervalMs: seconds('--self-test-interval', flags.selfTestInterval),
    socketCheckMs: seconds('--socket-check-interval', flags.socketCheckInterval),
    recoveryKey:
      flags.recoveryPublicKey === undefined
        ? undefined
        : await readRecoveryPublicKey(flags.recoveryPublicKey),
    devKeyring,
  };
}

/** The running plugin's parts, as the signal handlers and the start-up log need them. */
interface Plugin {
  readonly backend: KeyBackend;
  readonly metrics: PluginMetrics;
  readonly service: KmsService;
  readonly kms: KmsServer;
  readonly healthServer: HealthServer | undefined;
  /** False once shutdown has begun: /readyz then says "not listening". */
  socketBound: boolean;
}

async function runServe(flags: ServeFlags, version: string): Promise<void> {
  const logger = startLogging(flags.logLevel);
  // SIGHUP's default action kills the process: ignore it until the real handler is installed (a
  // reload during start-up is moot, the keys are being read anyway).
  const ignoreHup = (): void => {};
  process.on('SIGHUP', ignoreHup);

  const options = await resolveServeOptions(flags);
  const cleanup = createCleanupStack();
  let plugin: Plugin;
  try {
    plugin = await startPlugin(flags, version, options, logger, cleanup);
  } catch (err) {
    for (const f of await cleanup.unwind()) {
      logger.error('start-up rollback step failed', { step: f.name, error: errorMessage(f.error) });
    }
    throw err;
  }
  const { backend, service, kms, healthServer } = plugin;

  // A remote key manager may be down at start: serve anyway; Status and /readyz report it until it
  // returns, and the background self-test notices when it does.
  const activeKeyID = await backend.currentKeyID().catch(() => undefined);
  const keyringFingerprint = activeKeyID === undefined ? undefined : await noteKeySet(plugin);
  const healthAddress =
    healthServer === undefined ? undefined : `${healthServer.host}:${healthServer.port}`;
  if (flags.dev) {
    process.stdout.write(
      devBanner({
        endpoint: options.listen,
        socketPath: options.endpoint.path,
        keyringPath: options.devKeyring?.path ?? String(flags.keyring),
        keyringCreated: options.devKeyring?.created ?? false,
        activeKeyID: activeKeyID ?? '(key backend unavailable)',
        health: healthAddress,
      }),
    );
  }

  const stopWatchdog = startSocketWatchdog(
    kms,
    options.endpoint.path,
    options.socketCheckMs,
    logger,
  );
  const { graceMs } = options;
  installSignals({
    logger,
    reload: () => reloadKeys(plugin, logger),
    shutdown: async (signal) => {
      logger.info('shutting down', { signal, graceMs });
      stopWatchdog();
      service.stop();
      plugin.socketBound = false;
      await kms.close(graceMs);
      await healthServer?.close();
      await backend.close();
      logger.info('stopped', { signal });
    },
    hardDeadlineMs: graceMs + 5_000,
  });
  process.off('SIGHUP', ignoreHup);
  logger.info('serving', {
    endpoint: options.listen,
    socket: options.endpoint.path,
    backend: backend.name,
    activeKeyID,
    keyringFingerprint,
    statusVersion: flags.statusVersion,
    health: healthAddress ?? 'off',
    version,
    development: flags.dev,
    recoveryKey: options.recoveryKey?.recipient.toString('hex') ?? 'off',
  });
}

/** JSON logs on stderr, one object per line. */
function startLogging(logLevel: string): Logger {
  const level: LogLevel = isLogLevel(logLevel) ? logLevel : 'info';
  const logger = createJsonLogger((line) => process.stderr.write(line), level);
  // Keep stderr one JSON object per line: process warnings (e.g. an SDK's Node.js support notice)
  // become log lines instead of Node's multi-line default output.
  process.removeAllListeners('warning');
  process.on('warning', (w) => logger.warn('process warning', { name: w.name, warning: w.message }));
  return logger;
}

/**
 * Starts the key backend, the KMS service, the socket and the health listener, in that order; each
 * pushes its undo on `cleanup`, so a failure at any step releases what came before it, newest first.
 */
async function startPlugin(
  flags: ServeFlags,
  version: string,
  options: ServeOptions,
  logger: Logger,
  cleanup: CleanupStack,
): Promise<Plugin> {
  const backendFlags =
    options.devKeyring === undefined ? flags : { ...flags, keyring: options.devKeyring.path };
  // The recovery layer is always there: values sealed earlier stay readable with sealing switched off.
  const backend = withRecoveryLayer(
    await createBackend(flags.backend, { flags: backendFlags, logger }),
    options.recoveryKey === undefined ? {} : { publicKey: options.recoveryKey },
  );
  cleanup.push('close the key backend', () => backend.close());
  const metrics = createPluginMetrics({ version, backend: backend.name });
  const service = createKmsService({
    backend,
    version,
    logger,
    observer: metrics,
    selfTestIntervalMs: options.selfTestIntervalMs,
    statusVersion: flags.statusVersion,
  });
  await service.start();
  cleanup.push('stop the KMS service', () => service.stop());
  const kms = await startKmsServer({
    endpoint: options.endpoint,
    service,
    logger,
    socketMode: options.socketMode,
    ...(options.socketGid === undefined ? {} : { socketGid: options.socketGid }),
    onCall: (r) => metrics.recordCall(r.method, grpcCodeName(r.code), r.durationSeconds),
  });
  cleanup.push('close the KMS socket', () => kms.close(0));
  const plugin: Plugin = { backend, metrics, service, kms, healthServer: undefined, socketBound: true };
  if (options.health === undefined) return plugin;
  const healthServer = await startHealthServer({
    ...options.health,
    logger,
    metrics: () => metrics.registry.render(),
    checks: readinessChecks(plugin, options.endpoint.path),
  });
  cleanup.push('close the health listener', () => healthServer.close());
  return Object.assign(plugin, { healthServer });
}

/** What /readyz and /healthz check: the socket file, an active key, the background self-test. */
function readinessChecks(plugin: Plugin, socketPath: string): ReadinessCheck[] {
  const { backend, service, kms } = plugin;
  return [
    {
      name: 'socket',
      check: async () =>
        !plugin.socketBound
          ? 'not listening'
          : (await kms.socketPresent())
            ? undefined
            : `socket ${socketPath} was removed`,
    },
    {
      name: `${backend.name}-loaded`,
      check: async () => ((await backend.currentKeyID()) === '' ? 'no active key' : undefined),
    },
    {
      name: 'self-test',
      check: () => {
        const s = service.selfTestState();
        return s.healthy ? undefined : s.reason;
      },
    },
  ];
}

/**
 * Socket watchdog: a deleted socket file (a cleanup script, a hostPath mix-up) silently cuts the API
 * server off; re-create it, with the same checks as at start-up. Returns how to stop it.
 */
function startSocketWatchdog(
  kms: KmsServer,
  socketPath: string,
  intervalMs: number,
  logger: Logger,
): () => void {
  const watchdog = setInterval(() => {
    kms
      .restoreSocket()
      .then((restored) => {
        if (restored) {
          logger.warn('socket file was deleted or replaced; re-created it', { socket: socketPath });
        }
      })
      .catch((err: unknown) =>
        logger.error('socket file is missing and cannot be re-created', {
          socket: socketPath,
          error: errorMessage(err),
        }),
      );
  }, intervalMs);
  watchdog.unref();
  return () => clearInterval(watchdog);
}

/** Publishes the loaded key set's fingerprint (backends that have one) and returns it. */
async function noteKeySet(plugin: Plugin): Promise<string | undefined> {
  const set = plugin.backend.keySet?.();
  if (set === undefined) return undefined;
  plugin.metrics.keySet({ ...set, activeKeyID: await plugin.backend.currentKeyID() });
  return set.fingerprint;
}

/** SIGHUP: re-read the keys; on failure the previously loaded keys stay in service. */
async function reloadKeys(plugin: Plugin, logger: Logger): Promise<void> {
  const { backend, metrics, service } = plugin;
  try {
    await service.reload();
    metrics.keyringReload(true);
    logger.info('reloaded keys', {
      backend: backend.name,
      activeKeyID: await backend.currentKeyID().catch(() => undefined),
      keyringFingerprint: await noteKeySet(plugin),
    });
  } catch (err) {
    metrics.keyringReload(false);
    logger.error('reload failed; the previously loaded keys stay in service', {
      backend: backend.name,
      error: errorMessage(err),
    });
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function readRecoveryPublicKey(path: string): Promise<RecoveryPublicKey> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new AtrestError('ERR_CONFIG_UNREADABLE', `cannot read --recovery-public-key ${path}`, { cause: err });
  }
  return parsePublicKeyPem(text, path);
}

function installSignals(options: {
  readonly logger: Logger;
  readonly reload: () => Promise<void>;
  readonly shutdown: (signal: string) => Promise<void>;
  readonly hardDeadlineMs: number;
}): void {
  let reloading: Promise<void> = Promise.resolve();
  let stopping = false;
  process.on('SIGHUP', () => {
    if (stopping) return;
    reloading = reloading.then(options.reload);
  });
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      options.logger.warn('second signal: exiting now', { signal });
      process.exit(EXIT_FAILURE);
    }
    stopping = true;
    const deadline = setTimeout(() => {
      options.logger.error('shutdown did not finish in time; exiting', { signal });
      process.exit(EXIT_FAILURE);
    }, options.hardDeadlineMs);
    deadline.unref();
    options
      .shutdown(signal)
      .then(() => process.exit(EXIT_OK))
      .catch((err: unknown) => {
        options.logger.error('shutdown failed', { error: errorMessage(err) });
        process.exit(EXIT_FAILURE);
      });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
