/** @module CLI output helpers: tables for people, JSON for programs, errors with code and hint. */
import { CrabError, EXIT_CODE_BY_KIND, asCrabError } from '../core/errors.js';

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}

export function printTable(rows: Array<Record<string, string | number | null | undefined>>, columns: string[]): void {
  const cells = [columns, ...rows.map((r) => columns.map((c) => String(r[c] ?? '-')))];
  const widths = columns.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  for (const row of cells) process.stdout.write(row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n');
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** Prints an error the way users need it (code, message, what to do) and returns the exit code. */
export function reportError(err: unknown, json: boolean): number {
  const e = err instanceof CrabError ? err : asCrabError(err);
  if (json) {
    process.stderr.write(JSON.stringify({ error: e.toJSON() }) + '\n');
  } else {
    process.stderr.write(`crab: error ${e.code}: ${e.message}\n`);
    if (e.hint) process.stderr.write(`hint: ${e.hint}\n`);
    if (e.kind === 'internal' && process.env.CRAB_DEBUG) process.stderr.write(`${e.stack}\n`);
  }
  return EXIT_CODE_BY_KIND[e.kind];
}
