// Function size in src/: no function has more than MAX_OWN_LINES lines of its own (the lines of
// functions nested in it are theirs, not its). A long function is split along its seams; an
// exception is a decision and is listed in EXCEPTIONS with its reason.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');
const MAX_OWN_LINES = 80;

/** `file:name` → why it may be longer. Stale entries (now short enough, or gone) fail the test. */
const EXCEPTIONS: Readonly<Record<string, string>> = {
};

interface FunctionSize {
  readonly id: string;
  readonly where: string;
  readonly ownLines: number;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

type FunctionNode = ts.FunctionLikeDeclaration & { body: ts.Node };

function isFunctionWithBody(n: ts.Node): n is FunctionNode {
  return (
    (ts.isFunctionDeclaration(n) ||
      ts.isMethodDeclaration(n) ||
      ts.isArrowFunction(n) ||
      ts.isFunctionExpression(n) ||
      ts.isConstructorDeclaration(n) ||
      ts.isGetAccessor(n) ||
      ts.isSetAccessor(n)) &&
    n.body !== undefined
  );
}

function nameOf(n: FunctionNode, src: ts.SourceFile): string {
  if (n.name) return n.name.getText(src);
  const p = n.parent;
  if (ts.isVariableDeclaration(p) || ts.isPropertyAssignment(p) || ts.isPropertyDeclaration(p)) return p.name.getText(src);
  if (ts.isCallExpression(p)) {
    // e.g. program.command('decrypt')…action(async () => …): name it after the call it is passed to
    return `${p.expression.getText(src).replace(/\s+/g, '').slice(-40)}(…)`;
  }
  return '<anonymous>';
}

/** Every function in `text` with its own line count. */
export function functionSizes(file: string, text: string): FunctionSize[] {
  const src = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const line = (pos: number): number => src.getLineAndCharacterOfPosition(pos).line;
  const span = (n: ts.Node): number => line(n.getEnd()) - line(n.getStart(src)) + 1;
  const out: FunctionSize[] = [];
  const visit = (n: ts.Node): void => {
    if (isFunctionWithBody(n)) {
      let nested = 0;
      const inner = (m: ts.Node): void => {
        if (isFunctionWithBody(m)) nested += span(m);
        else ts.forEachChild(m, inner);
      };
      ts.forEachChild(n.body, inner);
      const rel = relative(SRC, file);
      out.push({ id: `${rel}:${nameOf(n, src)}`, where: `${rel}:${line(n.getStart(src)) + 1}`, ownLines: span(n) - nested });
    }
    ts.forEachChild(n, visit);
  };
  visit(src);
  return out;
}

const sizes = sourceFiles(SRC).flatMap((f) => functionSizes(f, readFileSync(f, 'utf8')));

describe('function size in src/', () => {
  it(`no function has more than ${MAX_OWN_LINES} lines of its own`, () => {
    const long = sizes
      .filter((s) => s.ownLines > MAX_OWN_LINES && !(s.id in EXCEPTIONS))
      .map((s) => `${s.where} ${s.id}: ${s.ownLines} own lines`);
    assert.deepEqual(long, []);
  });

  it('every exception is still needed', () => {
    const stale = Object.keys(EXCEPTIONS).filter((id) => !sizes.some((s) => s.id === id && s.ownLines > MAX_OWN_LINES));
    assert.deepEqual(stale, []);
  });

  it('counts own lines: a nested function is not its parent’s', () => {
    const body = Array.from({ length: 90 }, (_, i) => `    const v${i} = ${i};`).join('\n');
    const text = `export function outer() {\n  const inner = () => {\n${body}\n  };\n  return inner;\n}\n`;
    const found = functionSizes(join(SRC, 'planted.ts'), text);
    const outer = found.find((s) => s.id === 'planted.ts:outer')!;
    const inner = found.find((s) => s.id === 'planted.ts:inner')!;
    assert.equal(inner.ownLines, 92);
    assert.equal(outer.ownLines, 3);
    assert.ok(inner.ownLines > MAX_OWN_LINES && outer.ownLines <= MAX_OWN_LINES);
  });
});
