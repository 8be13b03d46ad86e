// Reads the runbook steps the HA scenario runs straight out of docs/operations.md, so the documented
// procedure and the tested one cannot drift apart. Markers are HTML comments (invisible when rendered):
//
//   <!-- e2e:section NAME -->      the steps that follow belong to section NAME (until the next one)
//   <!-- e2e:run a|all -->         run the `$ ` commands of the next fenced block on node a / every node
//   <!-- e2e:deploy FILE -->       every API server: FILE as --encryption-provider-config, restarted one
//                                  at a time ("[API server] Deploy FILE on every control-plane node")
//   <!-- e2e:copy PATH -->         copy PATH from node a to the same path on every other node
//   <!-- e2e:start-plugins -->     start `atrest serve` on every node
//   <!-- e2e:reload -->            SIGHUP every plugin
//   <!-- e2e:same-fingerprint -->  every plugin reports the same keyring (atrest_keyring_info)
//   <!-- e2e:wait-key-id -->       every API server writes with the plugins' active key id
//
// A command is a `$ ` line plus its continuation lines (trailing `\`) or here-document body; the lines
// after it, up to the next command, are the output the docs show.

import { readFileSync } from 'node:fs';

export interface DocCommand {
  readonly text: string;
  /** The output lines shown under the command in the docs. */
  readonly shown: readonly string[];
  /** docs line number of the `$ ` line (1-based). */
  readonly line: number;
}

export type DocStep =
  | { readonly kind: 'run'; readonly on: 'a' | 'all'; readonly commands: readonly DocCommand[] }
  | { readonly kind: 'deploy'; readonly file: string; readonly line: number }
  | { readonly kind: 'copy'; readonly path: string; readonly line: number }
  | {
      readonly kind: 'start-plugins' | 'reload' | 'same-fingerprint' | 'wait-key-id';
      readonly line: number;
    };

const MARKER = /^<!--\s*e2e:(\S+)(?:\s+(.*?))?\s*-->\s*$/;

export function parseCommands(block: readonly string[], firstLine: number): DocCommand[] {
  const commands: { text: string[]; shown: string[]; line: number }[] = [];
  for (let i = 0; i < block.length; i++) {
    const line = block[i]!;
    if (!line.startsWith('$ ')) {
      commands[commands.length - 1]?.shown.push(line);
      continue;
    }
    const text = [line.slice(2)];
    const at = firstLine + i;
    for (;;) {
      const last = text[text.length - 1]!;
      const heredoc = /<<-?\s*'?"?(\w+)'?"?/.exec(last);
      if (last.endsWith('\\') && i + 1 < block.length) {
        text.push(block[++i]!);
      } else if (heredoc !== null) {
        const end = heredoc[1]!;
        while (i + 1 < block.length && block[i + 1] !== end) text.push(block[++i]!);
        if (i + 1 >= block.length)
          throw new Error(`docs line ${at}: here-document ${end} never ends`);
        text.push(block[++i]!);
        break;
      } else {
        break;
      }
    }
    commands.push({ text, shown: [], line: at });
  }
  return commands.map((c) => ({ text: c.text.join('\n'), shown: c.shown, line: c.line }));
}

/** Sections in document order, each with its steps. */
export function parseDocSteps(path: string): Map<string, DocStep[]> {
  const lines = readFileSync(path, 'utf8').split('\n');
  const sections = new Map<string, DocStep[]>();
  let current: DocStep[] | undefined;
  const add = (step: DocStep, line: number): void => {
    if (current === undefined)
      throw new Error(`${path}:${line}: e2e marker before any e2e:section`);
    current.push(step);
  };
  for (let i = 0; i < lines.length; i++) {
    const m = MARKER.exec(lines[i]!);
    if (m === null) continue;
    const [, kind, arg = ''] = m;
    const line = i + 1;
    switch (kind) {
      case 'section':
        if (sections.has(arg)) throw new Error(`${path}:${line}: section ${arg} twice`);
        current = [];
        sections.set(arg, current);
        break;
      case 'run': {
        if (arg !== 'a' && arg !== 'all') throw new Error(`${path}:${line}: e2e:run a|all`);
        let j = i + 1;
        while (j < lines.length && lines[j]!.trim() === '') j++;
        if (!lines[j]?.startsWith('```'))
          throw new Error(`${path}:${line}: no code block after e2e:run`);
        const start = j + 1;
        let end = start;
        while (end < lines.length && !lines[end]!.startsWith('```')) end++;
        const commands = parseCommands(lines.slice(start, end), start + 1);
        if (commands.length === 0) throw new Error(`${path}:${line}: the block has no $ command`);
        add({ kind: 'run', on: arg, commands }, line);
        i = end;
        break;
      }
      case 'deploy':
      case 'copy':
        if (arg === '') throw new Error(`${path}:${line}: e2e:${kind} needs an argument`);
        add(kind === 'deploy' ? { kind, file: arg, line } : { kind, path: arg, line }, line);
        break;
      case 'start-plugins':
      case 'reload':
      case 'same-fingerprint':
      case 'wait-key-id':
        add({ kind, line }, line);
        break;
      default:
        throw new Error(`${path}:${line}: unknown marker e2e:${kind}`);
    }
  }
  return sections;
}
