// Parses a KMS endpoint the way kube-apiserver does (Go url.Parse, then the URL *path* is the dial
// address): unix:///var/run/kms.sock -> /var/run/kms.sock; unix:///@name -> the abstract socket @name.
// Like Go, unix://tmp/kms.sock has host "tmp" and path "/kms.sock" -- surprising, but what the API
// server dials, so the plugin must listen on the same thing.

import { AtrestError } from '../errors.js';

export interface UnixEndpoint {
  /** As the API server reads it: '/var/run/kms.sock' or '@name'. */
  readonly path: string;
  readonly abstract: boolean;
  /** What net.connect / net.Server.listen take: the path, or '\0name' for an abstract socket. */
  readonly address: string;
}

function invalid(endpoint: string, why: string): AtrestError {
  return new AtrestError('ERR_SOCKET_ENDPOINT', `invalid KMS endpoint ${JSON.stringify(endpoint)}: ${why}`);
}

export function parseUnixEndpoint(endpoint: string): UnixEndpoint {
  const colon = endpoint.indexOf(':');
  const scheme = colon > 0 ? endpoint.slice(0, colon) : '';
  if (!/^[A-Za-z][A-Za-z0-9+.-]*$/.test(scheme)) {
    throw invalid(endpoint, 'expected unix:///path/to/socket');
  }
  if (scheme.toLowerCase() !== 'unix') {
    throw invalid(endpoint, `unsupported scheme "${scheme}", only unix is supported`);
  }
  let rest = endpoint.slice(colon + 1);
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);
  const query = rest.indexOf('?');
  if (query >= 0) rest = rest.slice(0, query);

  let rawPath: string;
  if (rest.startsWith('//')) {
    const slash = rest.indexOf('/', 2);
    rawPath = slash >= 0 ? rest.slice(slash) : '';
  } else if (rest.startsWith('/')) {
    rawPath = rest;
  } else {
    // Go treats "unix:kms.sock" as an opaque URL with an empty path.
    throw invalid(endpoint, 'the socket path must be absolute, e.g. unix:///var/run/kms.sock');
  }
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch (cause) {
    throw new AtrestError('ERR_SOCKET_ENDPOINT', `invalid KMS endpoint ${JSON.stringify(endpoint)}: bad percent-escape in the path`, { cause });
  }
  if (path === '' || path === '/') throw invalid(endpoint, 'no socket path');
  if (path.includes('\0')) throw invalid(endpoint, 'the socket path contains a NUL byte');

  if (path.startsWith('/@')) {
    const name = path.slice(1);
    if (name.length < 2) throw invalid(endpoint, 'empty abstract socket name');
    return { path: name, abstract: true, address: '\0' + name.slice(1) };
  }
  return { path, abstract: false, address: path };
}
