#!/usr/bin/env node
// The h2spec step of the conformance suite (conformance/run.sh): runs h2spec 2.x (built by
// scripts/setup/55-h2spec.sh) against `atrest serve` and against the grpc-go reference plugin
// (conformance/refplugin) in the same run, each behind a TCP-to-UNIX-socket bridge (h2spec speaks TCP
// only), then checks that
//   1. atrest passes at least as many h2spec tests as grpc-go, and
//   2. every test atrest fails is on the allowlist in docs/grpc.md ("HTTP/2 conformance (h2spec)"), where
//      each entry says why a gRPC-only server fails it. Anything else is printed as UNEXPLAINED.
// An unexplained failure is run once more on its own with a longer timeout (h2spec's verdicts are
// timeouts: a starved machine must not turn a slow answer into a failure); at most MAX_RETRIES of them.
//
//   node conformance/h2spec.mjs
// Environment: ATREST_CMD (default `node dist/src/cli/main.js`), REFPLUGIN (the reference plugin binary,
// set by conformance/tools.sh), H2SPEC (default $ATREST_CACHE_BIN/h2spec), H2SPEC_KEEP=1 keeps the
// work directory (reports, logs). Exit 0 when both checks hold, 1 otherwise, 2 when it could not run.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cacheBin =
  process.env.ATREST_CACHE_BIN ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'atrest', 'bin');
const H2SPEC = process.env.H2SPEC ?? join(cacheBin, 'h2spec');
const ATREST_CMD = (process.env.ATREST_CMD ?? `node ${join(root, 'dist', 'src', 'cli', 'main.js')}`).split(/\s+/);
const REFPLUGIN = process.env.REFPLUGIN;
const DOC = join(root, 'docs', 'grpc.md');
const DOC_SECTION = '## HTTP/2 conformance (h2spec)';

/** Seconds h2spec waits for each expected frame (its verdicts are timeouts). */
const TIMEOUT_S = 3;
const RETRY_TIMEOUT_S = 8;
const MAX_RETRIES = 5;
/** h2spec 2.2.1 has 145 tests; far fewer means it did not really run. */
const MIN_TESTS = 140;
const START_TIMEOUT_MS = 60_000;

/** Could not run (as opposed to: ran and found a problem): exit code 2. */
function die(message) {
  throw new Error(message);
}

// --- the allowlist, read from docs/grpc.md so the check and its documentation cannot drift apart ---

/** Map of test id -> reason, from the rows "| `http2/6.9/2` | what | why |" of the doc section. */
function readAllowlist() {
  const text = readFileSync(DOC, 'utf8');
  const start = text.indexOf(`\n${DOC_SECTION}\n`);
  if (start < 0) die(`${DOC} has no "${DOC_SECTION}" section`);
  const next = text.indexOf('\n## ', start + 1);
  const section = text.slice(start, next < 0 ? undefined : next);
  const allow = new Map();
  for (const line of section.split('\n')) {
    const m = /^\|\s*`((?:generic|http2|hpack)\/[\d.]+\/\d+)`\s*\|([^|]*)\|([^|]*)\|/.exec(line);
    if (m === null) continue;
    const reason = m[3].trim();
    if (reason === '') die(`${DOC}: allowlist entry ${m[1]} has no reason`);
    allow.set(m[1], { what: m[2].trim(), reason });
  }
  if (allow.size === 0) die(`${DOC}: the "${DOC_SECTION}" section lists no test`);
  return allow;
}

// --- processes, sockets, the bridge ---

function waitForSocket(path, child, name) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (child.exitCode !== null) return reject(new Error(`${name} exited with ${child.exitCode} before serving`));
      const s = net.connect(path);
      s.once('connect', () => {
        s.destroy();
        resolve();
      });
      s.once('error', () => {
        if (Date.now() > deadline) reject(new Error(`${name} never listened on ${path}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/** A TCP listener on 127.0.0.1 that forwards each connection to the UNIX socket, byte for byte. */
function bridge(socketPath) {
  const server = net.createServer((tcp) => {
    const unix = net.connect(socketPath);
    const closeBoth = () => {
      tcp.destroy();
      unix.destroy();
    };
    tcp.on('error', closeBoth);
    unix.on('error', closeBoth);
    tcp.on('close', closeBoth);
    unix.on('close', closeBoth);
    tcp.pipe(unix);
    unix.pipe(tcp);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function run(cmd, args, logFile) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = [];
    child.stdout.on('data', (b) => out.push(b));
    child.stderr.on('data', (b) => out.push(b));
    child.once('error', reject);
    child.once('close', (code) => {
      const text = Buffer.concat(out).toString('utf8');
      if (logFile !== undefined) writeFileSync(logFile, text);
      resolve({ code, text });
    });
  });
}

// --- h2spec and its JUnit report ---

const ENTITIES = { '&lt;': '<', '&gt;': '>', '&amp;': '&', '&quot;': '"', '&apos;': "'" };
function unescapeXml(s) {
  return s.replace(/&#(\d+);|&#x([0-9a-f]+);|&(lt|gt|amp|quot|apos);/gi, (m, dec, hex) =>
    dec !== undefined ? String.fromCodePoint(Number(dec)) : hex !== undefined ? String.fromCodePoint(parseInt(hex, 16)) : ENTITIES[m],
  );
}

/**
 * Parses h2spec's JUnit report into [{ id, desc, status: 'passed'|'failed'|'skipped', detail }]. The id is
 * the h2spec section id plus the test's 1-based position, e.g. http2/5.1/6 (what `h2spec ID` runs).
 */
function parseJunit(xml) {
  const tests = [];
  for (const suite of xml.matchAll(/<testsuite\b[^>]*\bpackage="([^"]+)"[^>]*>([\s\S]*?)<\/testsuite>/g)) {
    let n = 0;
    for (const tc of suite[2].matchAll(/<testcase\b[^>]*\bclassname="([^"]*)"[^>]*?(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
      n++;
      const body = tc[2] ?? '';
      const status = /<skipped/.test(body) ? 'skipped' : /<(error|failure)\b/.test(body) ? 'failed' : 'passed';
      // The error element holds the expected frames, one per line, then what arrived instead.
      const lines = unescapeXml(body.replace(/<[^>]+>/g, '')).split('\n').map((l) => l.trim()).filter((l) => l !== '');
      const detail = lines.length === 0 ? '' : `expected ${lines.slice(0, -1).join(' | ') || '?'}; got ${lines.at(-1)}`;
      tests.push({ id: `${unescapeXml(suite[1])}/${n}`, desc: unescapeXml(tc[1]), status, detail });
    }
  }
  return tests;
}

async function h2spec(port, work, label, timeoutS, ids = []) {
  const report = join(work, `${label}.xml`);
  const { code, text } = await run(
    H2SPEC,
    ['-h', '127.0.0.1', '-p', String(port), '-o', String(timeoutS), '-j', report, ...ids],
    join(work, `${label}.txt`),
  );
  if (!existsSync(report)) die(`h2spec wrote no report for ${label} (exit ${code}):\n${text.slice(-2000)}`);
  return parseJunit(readFileSync(report, 'utf8'));
}

const count = (tests, status) => tests.filter((t) => t.status === status).length;

// --- main ---

const work = mkdtempSync(join(tmpdir(), 'atrest-h2spec-'));
const children = [];
const bridges = [];
let exitCode = 2;
try {
  if (!existsSync(H2SPEC)) die(`${H2SPEC} not found: run scripts/setup/55-h2spec.sh`);
  if (REFPLUGIN === undefined || !existsSync(REFPLUGIN)) {
    die('REFPLUGIN (the grpc-go reference plugin) is not set or missing: conformance/run.sh sets it from conformance/tools.sh');
  }
  const allow = readAllowlist();
  const keyring = join(work, 'keyring');
  const init = await run(ATREST_CMD[0], [...ATREST_CMD.slice(1), 'keys', 'init', '--keyring', keyring]);
  if (init.code !== 0) die(`atrest keys init failed:\n${init.text}`);
  const atrestSock = join(work, 'atrest.sock');
  const refSock = join(work, 'ref.sock');
  const atrest = spawn(
    ATREST_CMD[0],
    [...ATREST_CMD.slice(1), 'serve', '--listen', `unix://${atrestSock}`, '--keyring', keyring, '--health-listen', 'off', '--log-level', 'warn'],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  const ref = spawn(REFPLUGIN, ['serve', '--listen', `unix://${refSock}`], { stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(atrest, ref);
  await Promise.all([waitForSocket(atrestSock, atrest, 'atrest serve'), waitForSocket(refSock, ref, 'refplugin')]);
  const [atrestBridge, refBridge] = await Promise.all([bridge(atrestSock), bridge(refSock)]);
  bridges.push(atrestBridge, refBridge);

  const started = Date.now();
  console.log(`h2spec: ${H2SPEC} against atrest (${ATREST_CMD.join(' ')}) and grpc-go (${REFPLUGIN}), -o ${TIMEOUT_S}`);
  const [ours, theirs] = await Promise.all([
    h2spec(atrestBridge.address().port, work, 'atrest', TIMEOUT_S),
    h2spec(refBridge.address().port, work, 'grpc-go', TIMEOUT_S),
  ]);
  for (const [label, tests] of [['atrest', ours], ['grpc-go', theirs]]) {
    if (tests.length < MIN_TESTS) die(`the ${label} report has ${tests.length} tests, expected at least ${MIN_TESTS}`);
  }

  // A second chance, alone and with a longer timeout, for what would otherwise be unexplained.
  const unexplained = ours.filter((t) => t.status === 'failed' && !allow.has(t.id));
  const retried = [];
  if (unexplained.length > 0 && unexplained.length <= MAX_RETRIES) {
    const again = await h2spec(atrestBridge.address().port, work, 'atrest-retry', RETRY_TIMEOUT_S, unexplained.map((t) => t.id));
    for (const t of unexplained) {
      const r = again.find((x) => x.id === t.id);
      if (r?.status === 'passed') {
        t.status = 'passed';
        retried.push(t.id);
      }
    }
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (atrest.exitCode !== null) die(`atrest serve exited (${atrest.exitCode}) during h2spec`);

  const row = (label, tests) =>
    `  ${label.padEnd(8)} ${String(count(tests, 'passed')).padStart(4)} passed ${String(count(tests, 'failed')).padStart(4)} failed ${String(count(tests, 'skipped')).padStart(4)} skipped (of ${tests.length})`;
  console.log(`h2spec finished in ${secs}s`);
  console.log(row('atrest', ours));
  console.log(row('grpc-go', theirs));
  if (retried.length > 0) console.log(`  passed only on the retry with -o ${RETRY_TIMEOUT_S}: ${retried.join(', ')}`);

  const goStatus = new Map(theirs.map((t) => [t.id, t.status]));
  const failed = ours.filter((t) => t.status === 'failed');
  const bad = failed.filter((t) => !allow.has(t.id));
  console.log(`\natrest failures (${failed.length}; allowlist: docs/grpc.md "${DOC_SECTION}"):`);
  for (const t of failed) {
    const tag = allow.has(t.id) ? 'gRPC-only  ' : 'UNEXPLAINED';
    console.log(`  ${tag} ${t.id.padEnd(16)} ${t.desc} [grpc-go: ${goStatus.get(t.id) ?? '?'}]`);
    if (!allow.has(t.id)) console.log(`              h2spec: ${t.detail}`);
  }
  const stale = [...allow.keys()].filter((id) => ours.find((t) => t.id === id)?.status !== 'failed');
  if (stale.length > 0) console.log(`\nallowlisted but not failing now (remove them from docs/grpc.md?): ${stale.join(', ')}`);

  const problems = [];
  if (count(ours, 'passed') < count(theirs, 'passed')) {
    problems.push(`atrest passed ${count(ours, 'passed')} tests, fewer than grpc-go's ${count(theirs, 'passed')}`);
  }
  if (bad.length > 0) problems.push(`${bad.length} atrest failure(s) are not explained as gRPC-only: ${bad.map((t) => t.id).join(', ')}`);
  if (problems.length > 0) {
    console.log(`\nh2spec: FAILED\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    exitCode = 1;
  } else {
    console.log('\nh2spec: ok (atrest passes at least as many tests as grpc-go; every failure is explained as gRPC-only)');
    exitCode = 0;
  }
} catch (err) {
  console.error(`h2spec: ${err instanceof Error ? err.message : String(err)}`);
  exitCode = 2;
} finally {
  for (const b of bridges) b.close();
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
  if (process.env.H2SPEC_KEEP === '1') console.log(`work directory kept: ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
process.exit(exitCode);
