// The kubeconfig of the commands that talk to the Kubernetes API (`rewrite --via-api`, the check that
// every kube-apiserver writes with the current key_id). --kubeconfig FILE, else client-node's default
// resolution ($KUBECONFIG, ~/.kube/config, the in-cluster service account), which reads the
// environment: so it happens here, in the composition root, and api/ receives a loaded KubeConfig.
// @kubernetes/client-node is an optional dependency (54 MB that `atrest serve` never needs): it is
// loaded on demand, with a clear error when it is not installed.

import type { KubeConfig } from '@kubernetes/client-node';
import { AtrestError } from '../errors.js';

export const KUBERNETES_CLIENT_PACKAGE = '@kubernetes/client-node';

async function importClientNode(): Promise<typeof import('@kubernetes/client-node')> {
  try {
    return await import('@kubernetes/client-node');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') {
      throw new AtrestError(
        'ERR_NOT_SUPPORTED',
        `talking to the Kubernetes API needs the optional package ${KUBERNETES_CLIENT_PACKAGE}, which is ` +
          `not installed: npm install ${KUBERNETES_CLIENT_PACKAGE}@1.4 (atrest serve does not need it)`,
        { cause: err },
      );
    }
    throw err;
  }
}

export async function loadKubeConfig(path: string | undefined, context: string | undefined): Promise<KubeConfig> {
  const { KubeConfig } = await importClientNode();
  const kc = new KubeConfig();
  const source = path ?? 'the default kubeconfig ($KUBECONFIG, ~/.kube/config or in-cluster)';
  try {
    if (path !== undefined) kc.loadFromFile(path);
    else kc.loadFromDefault();
    if (context !== undefined) kc.setCurrentContext(context);
  } catch (err) {
    throw new AtrestError('ERR_CONFIG_UNREADABLE', `cannot load ${source}: ${(err as Error).message}`, { cause: err });
  }
  if (kc.getCurrentCluster() === null) {
    throw new AtrestError('ERR_CONFIG_UNREADABLE', `${source} has no current cluster`);
  }
  return kc;
}
