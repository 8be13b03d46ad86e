// The two bits of Go syntax an EncryptionConfiguration borrows: `time.ParseDuration` strings for
// `timeout` (src/duration.ts), and what `net/url.Parse` makes of a KMS `endpoint` (its scheme, or why
// it failed). Written from the Go documentation's grammar; the parity tests compare verdicts with the
// real thing.

export { parseGoDuration } from '../duration.js';

export type GoUrlResult = { readonly scheme: string } | { readonly error: string };

const SCHEME_CHAR = /^[A-Za-z][A-Za-z0-9+.-]*$/;

/**
 * The scheme `net/url.Parse` would give `raw`, lower-cased as Go does, or the reason it would fail.
 * Covers the failures that matter for an endpoint: control characters, a missing scheme before `:`,
 * bad percent-escapes, and a malformed host:port after `//`.
 */
export function parseGoUrlScheme(raw: string): GoUrlResult {
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(raw)) return { error: 'invalid control character in URL' };
  let rest = raw;
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    if (!validEscapes(rest.slice(hash + 1))) return { error: 'invalid URL escape in fragment' };
    rest = rest.slice(0, hash);
  }
  let scheme = '';
  const colon = rest.indexOf(':');
  if (colon === 0) return { error: 'missing protocol scheme' };
  if (colon > 0 && SCHEME_CHAR.test(rest.slice(0, colon))) {
    scheme = rest.slice(0, colon).toLowerCase();
    rest = rest.slice(colon + 1);
  }
  const query = rest.indexOf('?');
  if (query >= 0) rest = rest.slice(0, query);
  if (scheme === '' && colon > 0) {
    // a relative reference whose first segment contains ':' is an error in Go
    const firstSlash = rest.indexOf('/');
    const firstSegment = firstSlash < 0 ? rest : rest.slice(0, firstSlash);
    if (firstSegment.includes(':')) return { error: 'first path segment in URL cannot contain colon' };
  }
  if (rest.startsWith('//') && (scheme !== '' || !rest.startsWith('///'))) {
    const afterSlashes = rest.slice(2);
    const slash = afterSlashes.indexOf('/');
    const authority = slash < 0 ? afterSlashes : afterSlashes.slice(0, slash);
    const problem = authorityProblem(authority);
    if (problem !== undefined) return { error: problem };
    rest = slash < 0 ? '' : afterSlashes.slice(slash);
  }
  if (!validEscapes(rest)) return { error: 'invalid URL escape' };
  return { scheme };
}

function validEscapes(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== '%') continue;
    if (!/^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) return false;
    i += 2;
  }
  return true;
}

function authorityProblem(authority: string): string | undefined {
  const at = authority.lastIndexOf('@');
  const host = at >= 0 ? authority.slice(at + 1) : authority;
  if (at >= 0 && !validEscapes(authority.slice(0, at))) return 'invalid userinfo';
  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    if (close < 0) return 'missing \']\' in host';
    return portProblem(host.slice(close + 1));
  }
  const colon = host.indexOf(':');
  if (colon >= 0) {
    const port = portProblem(host.slice(colon));
    if (port !== undefined) return port;
  }
  if (!validEscapes(host)) return 'invalid URL escape in host';
  return undefined;
}

function portProblem(colonPort: string): string | undefined {
  if (colonPort === '') return undefined;
  if (!/^:\d*$/.test(colonPort)) return `invalid port ${JSON.stringify(colonPort)} after host`;
  return undefined;
}
