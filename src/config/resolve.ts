// Which providers handle a resource (exact, then `*.<group>`, then `*.*`, else identity that refuses
// encrypted data), and which resource an etcd key belongs to. Pure functions over a parsed config.

import type { EncryptionConfiguration, ProviderConfiguration } from './types.js';

export interface GroupResource {
  /** '' for the core group, '*' for any group */
  readonly group: string;
  /** '*' for any resource of the group */
  readonly resource: string;
}

/**
 * `secrets` -> ('', secrets); `*.` -> ('', *); `*.apps` -> (apps, *); `*.*` -> (*, *);
 * `pandas.awesome.bears.example` -> (awesome.bears.example, pandas): split at the FIRST dot.
 */
export function parseGroupResource(text: string): GroupResource {
  const dot = text.indexOf('.');
  if (dot < 0) return { group: '', resource: text };
  return { group: text.slice(dot + 1), resource: text.slice(0, dot) };
}

/** The config-file spelling of a GroupResource: `secrets`, `deployments.apps`, `*.`, `*.*`. */
export function formatGroupResource(gr: GroupResource): string {
  if (gr.group === '' && gr.resource === '*') return '*.';
  return gr.group === '' ? gr.resource : `${gr.resource}.${gr.group}`;
}

export interface ResolvedResource {
  /** The rule that matched (`secrets`, `*.apps`, `*.*`), or null when nothing did. */
  readonly rule: string | null;
  /**
   * Providers in order: the first writes, all read. Entries listing the same exact resource are
   * concatenated in file order. When nothing matched: a single identity provider, which writes
   * plaintext and refuses to read anything that starts with `k8s:enc:`.
   */
  readonly providers: readonly ProviderConfiguration[];
}

const IDENTITY_FALLBACK: readonly ProviderConfiguration[] = Object.freeze([Object.freeze({ identity: {} })]);

function grKey(gr: GroupResource): string {
  return `${gr.group}\u0000${gr.resource}`;
}

/** Every configured rule (exact or wildcard) with its concatenated provider list, in file order. */
export function indexRules(config: EncryptionConfiguration): Map<string, { rule: string; providers: ProviderConfiguration[] }> {
  const index = new Map<string, { rule: string; providers: ProviderConfiguration[] }>();
  for (const entry of config.resources) {
    for (const res of entry.resources) {
      const gr = parseGroupResource(res);
      const k = grKey(gr);
      const found = index.get(k);
      if (found) found.providers.push(...entry.providers);
      else index.set(k, { rule: formatGroupResource(gr), providers: [...entry.providers] });
    }
  }
  return index;
}

export function resolveResource(config: EncryptionConfiguration, gr: GroupResource): ResolvedResource {
  const index = indexRules(config);
  for (const candidate of [gr, { group: gr.group, resource: '*' }, { group: '*', resource: '*' }]) {
    const hit = index.get(grKey(candidate));
    if (hit) return { rule: hit.rule, providers: hit.providers };
  }
  return { rule: null, providers: IDENTITY_FALLBACK };
}

/**
 * Resources whose etcd path is not `<resource>` (core) or `<group>/<resource>`. kube-apiserver's
 * default storage locations; anything else in this table is stored under its plain resource name.
 */
export const ETCD_PATH_RESOURCES: Readonly<Record<string, GroupResource>> = {
  // core, stored under a different name
  'services/specs': { group: '', resource: 'services' },
  'services/endpoints': { group: '', resource: 'endpoints' },
  minions: { group: '', resource: 'nodes' },
  controllers: { group: '', resource: 'replicationcontrollers' },
  // core, under their own name
  secrets: { group: '', resource: 'secrets' },
  configmaps: { group: '', resource: 'configmaps' },
  pods: { group: '', resource: 'pods' },
  namespaces: { group: '', resource: 'namespaces' },
  serviceaccounts: { group: '', resource: 'serviceaccounts' },
  persistentvolumes: { group: '', resource: 'persistentvolumes' },
  persistentvolumeclaims: { group: '', resource: 'persistentvolumeclaims' },
  events: { group: '', resource: 'events' },
  limitranges: { group: '', resource: 'limitranges' },
  resourcequotas: { group: '', resource: 'resourcequotas' },
  podtemplates: { group: '', resource: 'podtemplates' },
  // apps
  deployments: { group: 'apps', resource: 'deployments' },
  replicasets: { group: 'apps', resource: 'replicasets' },
  statefulsets: { group: 'apps', resource: 'statefulsets' },
  daemonsets: { group: 'apps', resource: 'daemonsets' },
  controllerrevisions: { group: 'apps', resource: 'controllerrevisions' },
  // batch, autoscaling, policy
  jobs: { group: 'batch', resource: 'jobs' },
  cronjobs: { group: 'batch', resource: 'cronjobs' },
  horizontalpodautoscalers: { group: 'autoscaling', resource: 'horizontalpodautoscalers' },
  poddisruptionbudgets: { group: 'policy', resource: 'poddisruptionbudgets' },
  // networking
  ingress: { group: 'networking.k8s.io', resource: 'ingresses' },
  ingressclasses: { group: 'networking.k8s.io', resource: 'ingressclasses' },
  networkpolicies: { group: 'networking.k8s.io', resource: 'networkpolicies' },
  endpointslices: { group: 'discovery.k8s.io', resource: 'endpointslices' },
  // rbac
  roles: { group: 'rbac.authorization.k8s.io', resource: 'roles' },
  rolebindings: { group: 'rbac.authorization.k8s.io', resource: 'rolebindings' },
  clusterroles: { group: 'rbac.authorization.k8s.io', resource: 'clusterroles' },
  clusterrolebindings: { group: 'rbac.authorization.k8s.io', resource: 'clusterrolebindings' },
  // storage, scheduling, coordination, certificates, node
  storageclasses: { group: 'storage.k8s.io', resource: 'storageclasses' },
  volumeattachments: { group: 'storage.k8s.io', resource: 'volumeattachments' },
  csidrivers: { group: 'storage.k8s.io', resource: 'csidrivers' },
  csinodes: { group: 'storage.k8s.io', resource: 'csinodes' },
  csistoragecapacities: { group: 'storage.k8s.io', resource: 'csistoragecapacities' },
  priorityclasses: { group: 'scheduling.k8s.io', resource: 'priorityclasses' },
  leases: { group: 'coordination.k8s.io', resource: 'leases' },
  certificatesigningrequests: { group: 'certificates.k8s.io', resource: 'certificatesigningrequests' },
  runtimeclasses: { group: 'node.k8s.io', resource: 'runtimeclasses' },
  // admission
  mutatingwebhookconfigurations: {
    group: 'admissionregistration.k8s.io',
    resource: 'mutatingwebhookconfigurations',
  },
  validatingwebhookconfigurations: {
    group: 'admissionregistration.k8s.io',
    resource: 'validatingwebhookconfigurations',
  },
  validatingadmissionpolicies: { group: 'admissionregistration.k8s.io', resource: 'validatingadmissionpolicies' },
  validatingadmissionpolicybindings: {
    group: 'admissionregistration.k8s.io',
    resource: 'validatingadmissionpolicybindings',
  },
  // flow control
  flowschemas: { group: 'flowcontrol.apiserver.k8s.io', resource: 'flowschemas' },
  prioritylevelconfigurations: { group: 'flowcontrol.apiserver.k8s.io', resource: 'prioritylevelconfigurations' },
};

/** `--etcd-prefix` normalised as kube-apiserver does: leading and trailing `/`. */
export function normalizeEtcdPrefix(prefix: string): string {
  let p = prefix.startsWith('/') ? prefix : `/${prefix}`;
  if (!p.endsWith('/')) p += '/';
  return p;
}

/**
 * The GroupResource an etcd key belongs to, or undefined when the key is not under `prefix` or its
 * path is not one atrest knows. Known: the table above (`/registry/services/specs/...`,
 * `/registry/deployments/...`); anything whose first segment contains a dot is `<group>/<resource>`
 * (custom resources, `apiregistration.k8s.io/apiservices`, `apiextensions.k8s.io/customresourcedefinitions`).
 */
export function groupResourceForEtcdKey(key: string, prefix = '/registry'): GroupResource | undefined {
  const p = normalizeEtcdPrefix(prefix);
  if (!key.startsWith(p)) return undefined;
  const segments = key.slice(p.length).split('/');
  const [first = '', second] = segments;
  if (first === '' || second === undefined || second === '') return undefined;
  if (first.includes('.')) {
    // `<group>/<resource>/[<namespace>/]<name>`: needs a name after the resource
    return segments.length >= 3 && segments[2] !== '' ? { group: first, resource: second } : undefined;
  }
  const twoSegment = ETCD_PATH_RESOURCES[`${first}/${second}`];
  if (twoSegment !== undefined) return segments.length >= 3 && segments[2] !== '' ? twoSegment : undefined;
  if (first === 'services') return undefined;
  return ETCD_PATH_RESOURCES[first];
}
