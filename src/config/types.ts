// The typed EncryptionConfiguration, after parsing, defaulting and validation. Field names are the
// upstream JSON names (`cachesize`, `endpoint`, ...) so operators can read them beside their YAML.

export const API_VERSION = 'apiserver.config.k8s.io/v1';
export const KIND = 'EncryptionConfiguration';
/** Registered upstream as an alias of the same type "due to a docs bug" (1.10–1.12 documentation). */
export const LEGACY_API_VERSION = 'v1';
export const LEGACY_KIND = 'EncryptionConfig';

export const DEFAULT_KMS_API_VERSION = 'v1';
export const DEFAULT_KMS_CACHESIZE = 1000;
export const DEFAULT_KMS_TIMEOUT = '3s';

export interface EncryptionConfiguration {
  readonly apiVersion: typeof API_VERSION | typeof LEGACY_API_VERSION;
  readonly kind: typeof KIND | typeof LEGACY_KIND;
  readonly resources: readonly ResourceConfiguration[];
}

export interface ResourceConfiguration {
  /** `secrets`, `deployments.apps`, `*.` (all core), `*.apps`, `*.*` */
  readonly resources: readonly string[];
  /** Ordered: the first one writes, every one of them reads. */
  readonly providers: readonly ProviderConfiguration[];
}

/** Exactly one member is present; narrow with `'aesgcm' in p` or {@link providerType}. */
export type ProviderConfiguration =
  | { readonly aesgcm: AESConfiguration }
  | { readonly aescbc: AESConfiguration }
  | { readonly secretbox: SecretboxConfiguration }
  | { readonly identity: IdentityConfiguration }
  | { readonly kms: KMSConfiguration };

export type ProviderType = 'aesgcm' | 'aescbc' | 'secretbox' | 'identity' | 'kms';

export interface AESConfiguration {
  readonly keys: readonly Key[];
}

export interface SecretboxConfiguration {
  readonly keys: readonly Key[];
}

export type IdentityConfiguration = Readonly<Record<string, never>>;

/**
 * A named key. `secret` (standard base64, as written in the file) is a non-enumerable property so that
 * logging or JSON-serialising a parsed configuration never prints key material.
 */
export interface Key {
  readonly name: string;
  readonly secret: string;
}

export interface KMSConfiguration {
  /** `v1` (the default when absent) or `v2`. */
  readonly apiVersion: 'v1' | 'v2';
  /** Part of the stored prefix `k8s:enc:kms:<apiVersion>:<name>:`; must never change. */
  readonly name: string;
  /** kms v1 only: DEK cache entries (default 1000, negative disables). Absent for v2. */
  readonly cachesize?: number;
  /** `unix:///path/to.sock` */
  readonly endpoint: string;
  /** Per-call timeout in milliseconds (default 3000). */
  readonly timeout: number;
  /** The timeout as written (Go duration syntax), or `3s` when defaulted. */
  readonly timeoutText: string;
}

export function providerType(p: ProviderConfiguration): ProviderType {
  if ('aesgcm' in p) return 'aesgcm';
  if ('aescbc' in p) return 'aescbc';
  if ('secretbox' in p) return 'secretbox';
  if ('identity' in p) return 'identity';
  return 'kms';
}

export function createKey(name: string, secret: string): Key {
  const key = { name } as { name: string; secret: string };
  Object.defineProperty(key, 'secret', { value: secret, enumerable: false });
  return Object.freeze(key);
}

/** What parsing and building may be told about the API server being imitated. */
export interface ConfigOptions {
  /**
   * `--encryption-provider-config-automatic-reload`: when true, kms v1 names must be unique too
   * (v2 names always are). Default false.
   */
  readonly reload?: boolean;
  /**
   * The `KMSv1` feature gate. Upstream it is off by default since 1.29; atrest allows it by default
   * because its tools read clusters that still hold kms v1 data. Default true.
   */
  readonly kmsV1?: boolean;
}
