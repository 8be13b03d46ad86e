// The remote backends' configuration file (`atrest serve --backend NAME --backend-config FILE`): one
// YAML section per backend, validated at once with every problem and its path. Secrets (PIN, tokens,
// AppRole secret id) are never written in the file nor passed on the command line: the file names a
// file (`pinFile`) or an environment variable (`pinEnv`) holding them, read at login time.
//
//   pkcs11:
//     module: /usr/lib/softhsm/libsofthsm2.so
//     tokenLabel: atrest
//     keyLabel: atrest-kek
//     pinFile: /etc/atrest/pkcs11-pin
//   aws-kms:
//     keyId: alias/atrest
//     region: eu-west-1
//     encryptionContext: { cluster: prod }
//     localKEK: { maxUses: 100000, maxAge: 1h }
//   vault-transit:
//     address: https://bao.example:8200
//     keyName: atrest
//     auth: { method: token, tokenFile: /etc/atrest/bao-token }
//   kmip:
//     address: kmip.example:5696
//     keyName: atrest-kek
//     clientCertFile: /etc/atrest/kmip.pem
//     clientKeyFile: /etc/atrest/kmip-key.pem

import { parsePositiveDurationMs } from '../duration.js';
import { parse as parseYaml } from 'yaml';
import { ConfigInvalidError, type ConfigProblem } from '../errors.js';
import type { LocalKekOptions } from './local-kek.js';

export const REMOTE_BACKENDS = ['pkcs11', 'aws-kms', 'vault-transit', 'kmip'] as const;
export type RemoteBackendName = (typeof REMOTE_BACKENDS)[number];

/** Where a secret lives: a file (trailing newline dropped) or an environment variable. */
export type SecretRef = { readonly file: string } | { readonly env: string };

export interface CommonConfig {
  /** false, or the tier's settings (missing fields take the defaults). */
  readonly localKEK: false | Partial<LocalKekOptions>;
  readonly refreshIntervalMs?: number;
  readonly callTimeoutMs?: number;
}

export interface Pkcs11Section extends CommonConfig {
  readonly backend: 'pkcs11';
  readonly module: string;
  readonly tokenLabel: string;
  readonly keyLabel: string;
  readonly pin: SecretRef;
  readonly sessions?: number;
}

export interface AwsKmsSection extends CommonConfig {
  readonly backend: 'aws-kms';
  readonly keyId: string;
  readonly region?: string;
  readonly endpoint?: string;
  readonly encryptionContext?: Readonly<Record<string, string>>;
}

/** TLS files (paths; read at start). */
export interface TlsFiles {
  readonly caFile?: string;
  readonly clientCertFile?: string;
  readonly clientKeyFile?: string;
  readonly serverName?: string;
}

export type VaultAuthSection =
  | { readonly method: 'token'; readonly token: SecretRef }
  | {
      readonly method: 'approle';
      readonly mount: string;
      readonly roleId: SecretRef;
      readonly secretId: SecretRef;
    }
  | { readonly method: 'cert'; readonly mount: string; readonly role?: string };

export interface VaultTransitSection extends CommonConfig, TlsFiles {
  readonly backend: 'vault-transit';
  readonly address: string;
  readonly mount: string;
  readonly keyName: string;
  readonly namespace?: string;
  readonly auth: VaultAuthSection;
}

export interface KmipSection extends CommonConfig, TlsFiles {
  readonly backend: 'kmip';
  /** host:port */
  readonly address: string;
  readonly keyName: string;
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
}

export type BackendSection = Pkcs11Section | AwsKmsSection | VaultTransitSection | KmipSection;

/** "500ms", "30s", "5m", "1h30m" → milliseconds (Go syntax, positive); undefined if not a duration. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const ms = parsePositiveDurationMs(value);
  return ms === undefined ? undefined : Math.round(ms);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class Reader {
  readonly problems: ConfigProblem[] = [];
  private readonly section: Record<string, unknown>;
  private readonly at: string;

  constructor(section: Record<string, unknown>, at: string) {
    this.section = section;
    this.at = at;
  }

  problem(field: string, message: string): void {
    this.problems.push({ path: `${this.at}.${field}`, message });
  }

  string(field: string, required: true): string;
  string(field: string, required?: false): string | undefined;
  string(field: string, required = false): string | undefined {
    const v = this.section[field];
    if (v === undefined) {
      if (required) this.problem(field, 'is required');
      return undefined;
    }
    if (typeof v !== 'string' || v === '') {
      this.problem(field, 'must be a non-empty string');
      return undefined;
    }
    return v;
  }

  positiveInt(field: string): number | undefined {
    const v = this.section[field];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      this.problem(field, 'must be a positive integer');
      return undefined;
    }
    return v;
  }

  duration(field: string): number | undefined {
    const v = this.section[field];
    if (v === undefined) return undefined;
    const ms = parseDuration(v);
    if (ms === undefined || ms <= 0) {
      this.problem(field, 'must be a duration such as 500ms, 30s, 5m or 1h');
      return undefined;
    }
    return ms;
  }

  /** `<name>File` or `<name>Env`, exactly one; an inline `<name>` is refused without echoing it. */
  secret(name: string, label: string): SecretRef | undefined {
    if (this.section[name] !== undefined) {
      this.problem(
        name,
        `REDACTED: do not write the ${label} in the configuration; use ${name}File or ${name}Env`,
      );
    }
    const file = this.string(`${name}File`);
    const env = this.string(`${name}Env`);
    if (file !== undefined && env !== undefined) {
      this.problem(`${name}File`, `set ${name}File or ${name}Env, not both`);
      return undefined;
    }
    if (file !== undefined) return { file };
    if (env !== undefined) return { env };
    if (this.section[name] === undefined)
      this.problem(`${name}File`, `${name}File or ${name}Env is required`);
    return undefined;
  }

  common(defaultTier: boolean): CommonConfig {
    const raw = this.section['localKEK'];
    let localKEK: false | Partial<LocalKekOptions> = defaultTier ? {} : false;
    if (raw === false) localKEK = false;
    else if (raw === true) localKEK = {};
    else if (isRecord(raw)) {
      const sub = new Reader(raw, `${this.at}.localKEK`);
      const maxUses = sub.positiveInt('maxUses');
      const maxAgeMs = sub.duration('maxAge');
      const cacheSize = sub.positiveInt('cacheSize');
      for (const k of Object.keys(raw)) {
        if (!['maxUses', 'maxAge', 'cacheSize'].includes(k)) sub.problem(k, 'unknown field');
      }
      this.problems.push(...sub.problems);
      localKEK = {
        ...(maxUses !== undefined ? { maxUses } : {}),
        ...(maxAgeMs !== undefined ? { maxAgeMs } : {}),
        ...(cacheSize !== undefined ? { cacheSize } : {}),
      };
    } else if (raw !== undefined) {
      this.problem('localKEK', 'must be true, false or {maxUses, maxAge, cacheSize}');
    }
    const refreshIntervalMs = this.duration('refreshInterval');
    const callTimeoutMs = this.duration('timeout');
    return {
      localKEK,
      ...(refreshIntervalMs !== undefined ? { refreshIntervalMs } : {}),
      ...(callTimeoutMs !== undefined ? { callTimeoutMs } : {}),
    };
  }

  unknown(known: readonly string[]): void {
    for (const k of Object.keys(this.section)) {
      if (!known.includes(k)) this.problem(k, 'unknown field');
    }
  }
}

const COMMON_FIELDS = ['localKEK', 'refreshInterval', 'timeout'];

function parsePkcs11(r: Reader): Pkcs11Section | undefined {
  const module = r.string('module', true);
  const tokenLabel = r.string('tokenLabel', true);
  const keyLabel = r.string('keyLabel', true);
  const pin = r.secret('pin', 'PIN');
  const sessions = r.positiveInt('sessions');
  // An HSM is local to the node: the tier is opt-in there.
  const common = r.common(false);
  r.unknown([
    'module',
    'tokenLabel',
    'keyLabel',
    'pin',
    'pinFile',
    'pinEnv',
    'sessions',
    ...COMMON_FIELDS,
  ]);
  if (
    module === undefined ||
    tokenLabel === undefined ||
    keyLabel === undefined ||
    pin === undefined
  ) {
    return undefined;
  }
  return {
    backend: 'pkcs11',
    module,
    tokenLabel,
    keyLabel,
    pin,
    ...(sessions !== undefined ? { sessions } : {}),
    ...common,
  };
}

function parseAwsKms(r: Reader, section: Record<string, unknown>): AwsKmsSection | undefined {
  const keyId = r.string('keyId', true);
  const region = r.string('region');
  const endpoint = r.string('endpoint');
  if (endpoint !== undefined && !/^https?:\/\//.test(endpoint))
    r.problem('endpoint', 'must be an http(s) URL');
  let encryptionContext: Record<string, string> | undefined;
  const ec = section['encryptionContext'];
  if (ec !== undefined) {
    if (!isRecord(ec) || !Object.values(ec).every((v) => typeof v === 'string')) {
      r.problem('encryptionContext', 'must be a map of strings to strings');
    } else {
      encryptionContext = ec as Record<string, string>;
      if ('atrest:aad' in encryptionContext)
        r.problem('encryptionContext', '"atrest:aad" is reserved');
    }
  }
  const common = r.common(true);
  r.unknown(['keyId', 'region', 'endpoint', 'encryptionContext', ...COMMON_FIELDS]);
  if (keyId === undefined) return undefined;
  return {
    backend: 'aws-kms',
    keyId,
    ...(region !== undefined ? { region } : {}),
    ...(endpoint !== undefined ? { endpoint } : {}),
    ...(encryptionContext !== undefined ? { encryptionContext } : {}),
    ...common,
  };
}

/** Parses the configuration file and returns the section for `backend`; every problem at once. */
export function parseBackendConfig(text: string, source: string, backend: string): BackendSection {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigInvalidError(source, [
      { path: '(document)', message: `not valid YAML: ${(err as Error).message}` },
    ]);
  }
  if (!isRecord(doc)) {
    throw new ConfigInvalidError(source, [
      { path: '(document)', message: 'must be a map with one section per backend' },
    ]);
  }
  const problems: ConfigProblem[] = [];
  for (const k of Object.keys(doc)) {
    if (!(REMOTE_BACKENDS as readonly string[]).includes(k)) {
      problems.push({
        path: k,
        message: `unknown backend section (one of ${REMOTE_BACKENDS.join(', ')})`,
      });
    }
  }
  const section = doc[backend];
  if (!isRecord(section)) {
    problems.push({ path: backend, message: `the file has no "${backend}" section (a map)` });
    throw new ConfigInvalidError(source, problems);
  }
  const r = new Reader(section, backend);
  const parsed =
    backend === 'pkcs11'
      ? parsePkcs11(r)
      : backend === 'aws-kms'
        ? parseAwsKms(r, section)
        : backend === 'vault-transit'
          ? parseVaultTransit(r, section)
          : backend === 'kmip'
            ? parseKmip(r)
            : undefined;
  problems.push(...r.problems);
  if (parsed === undefined || problems.length > 0) throw new ConfigInvalidError(source, problems);
  return parsed;
}

const TLS_FIELDS = ['caFile', 'clientCertFile', 'clientKeyFile', 'serverName'];

function tlsFiles(r: Reader): TlsFiles {
  const caFile = r.string('caFile');
  const clientCertFile = r.string('clientCertFile');
  const clientKeyFile = r.string('clientKeyFile');
  const serverName = r.string('serverName');
  if ((clientCertFile === undefined) !== (clientKeyFile === undefined)) {
    r.problem(
      clientCertFile === undefined ? 'clientCertFile' : 'clientKeyFile',
      'clientCertFile and clientKeyFile go together',
    );
  }
  return {
    ...(caFile !== undefined ? { caFile } : {}),
    ...(clientCertFile !== undefined ? { clientCertFile } : {}),
    ...(clientKeyFile !== undefined ? { clientKeyFile } : {}),
    ...(serverName !== undefined ? { serverName } : {}),
  };
}

const VAULT_AUTH_FIELDS: Record<string, readonly string[]> = {
  token: ['method', 'token', 'tokenFile', 'tokenEnv'],
  approle: [
    'method',
    'mount',
    'roleId',
    'roleIdFile',
    'roleIdEnv',
    'secretId',
    'secretIdFile',
    'secretIdEnv',
  ],
  cert: ['method', 'mount', 'role'],
};

function parseVaultAuth(
  r: Reader,
  raw: unknown,
  at: string,
  tls: TlsFiles,
): VaultAuthSection | undefined {
  if (!isRecord(raw)) {
    r.problem('auth', 'is required: {method: token | approle | cert, ...}');
    return undefined;
  }
  const a = new Reader(raw, `${at}.auth`);
  const method = a.string('method', true);
  let out: VaultAuthSection | undefined;
  if (method === 'token') {
    const token = a.secret('token', 'token');
    if (token !== undefined) out = { method, token };
  } else if (method === 'approle') {
    const roleId = a.secret('roleId', 'role id');
    const secretId = a.secret('secretId', 'secret id');
    const mount = a.string('mount') ?? 'approle';
    if (roleId !== undefined && secretId !== undefined) out = { method, mount, roleId, secretId };
  } else if (method === 'cert') {
    const mount = a.string('mount') ?? 'cert';
    const role = a.string('role');
    if (tls.clientCertFile === undefined) {
      a.problem('method', 'cert auth needs clientCertFile and clientKeyFile in the section');
    } else out = { method, mount, ...(role !== undefined ? { role } : {}) };
  } else if (method !== undefined) {
    a.problem('method', 'must be token, approle or cert');
  }
  if (method !== undefined && VAULT_AUTH_FIELDS[method] !== undefined) {
    a.unknown(VAULT_AUTH_FIELDS[method]!);
  }
  r.problems.push(...a.problems);
  return out;
}

function parseVaultTransit(
  r: Reader,
  section: Record<string, unknown>,
): VaultTransitSection | undefined {
  const address = r.string('address', true);
  if (address !== undefined && !/^https?:\/\/[^/]+\/?$/.test(address)) {
    r.problem('address', 'must be an http(s) URL with no path, such as https://vault.example:8200');
  }
  const mount = r.string('mount') ?? 'transit';
  const keyName = r.string('keyName', true);
  const namespace = r.string('namespace');
  const tls = tlsFiles(r);
  const auth = parseVaultAuth(r, section['auth'], 'vault-transit', tls);
  const common = r.common(true);
  r.unknown(['address', 'mount', 'keyName', 'namespace', 'auth', ...TLS_FIELDS, ...COMMON_FIELDS]);
  if (address === undefined || keyName === undefined || auth === undefined) return undefined;
  return {
    backend: 'vault-transit',
    address,
    mount,
    keyName,
    ...(namespace !== undefined ? { namespace } : {}),
    ...tls,
    auth,
    ...common,
  };
}

function parseKmip(r: Reader): KmipSection | undefined {
  const address = r.string('address', true);
  if (address !== undefined && !/^[^:/\s]+:\d{1,5}$/.test(address)) {
    r.problem('address', 'must be host:port, such as kmip.example:5696');
  }
  const keyName = r.string('keyName', true);
  const tls = tlsFiles(r);
  if (tls.clientCertFile === undefined && tls.clientKeyFile === undefined) {
    r.problem('clientCertFile', 'is required: KMIP servers authenticate clients by certificate');
  }
  const common = r.common(true);
  r.unknown(['address', 'keyName', ...TLS_FIELDS, ...COMMON_FIELDS]);
  if (
    address === undefined ||
    keyName === undefined ||
    tls.clientCertFile === undefined ||
    tls.clientKeyFile === undefined
  ) {
    return undefined;
  }
  return {
    backend: 'kmip',
    address,
    keyName,
    ...tls,
    clientCertFile: tls.clientCertFile,
    clientKeyFile: tls.clientKeyFile,
    ...common,
  };
}

/** Reads a secret; the file or variable is named in errors, the value never. */
export async function resolveSecret(
  ref: SecretRef,
  io: {
    readonly env: Readonly<Record<string, string | undefined>>;
    readonly readFile: (path: string) => Promise<string>;
  },
): Promise<string> {
  if ('file' in ref) {
    let text: string;
    try {
      text = await io.readFile(ref.file);
    } catch (err) {
      throw new ConfigInvalidError('secret', [
        {
          path: ref.file,
          message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
        },
      ]);
    }
    const value = text.replace(/\r?\n$/, '');
    if (value === '')
      throw new ConfigInvalidError('secret', [{ path: ref.file, message: 'is empty' }]);
    return value;
  }
  const value = io.env[ref.env];
  if (value === undefined || value === '') {
    throw new ConfigInvalidError('secret', [{ path: `$${ref.env}`, message: 'is not set' }]);
  }
  return value;
}
