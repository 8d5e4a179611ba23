/** A plain-text table: columns padded to their widest cell, a dashed rule under the header; the columns in `rightAligned` are right-aligned. */
export function textTable(header: readonly string[], rows: ReadonlyArray<readonly string[]>, rightAligned: ReadonlySet<number>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** Every column but the first right-aligned: numbers beside a name. */
export function allButFirst(columns: number): ReadonlySet<number> {
  return new Set(Array.from({ length: columns - 1 }, (_, i) => i + 1));
}

/** A part of a bench's report: its title line, its table (numbers right-aligned), its goals. */
export function benchSection(
  title: string,
  header: readonly string[],
  rows: ReadonlyArray<readonly string[]>,
  goals: ReadonlyArray<{ goal: string; measured: string; met: boolean }>,
): string {
  return [title, textTable(header, rows, allButFirst(header.length)), ...goalLines(goals), ''].join('\n');
}

/** One line per goal of a bench: met or MISSED, what it asks, what was measured. */
export function goalLines(goals: ReadonlyArray<{ goal: string; measured: string; met: boolean }>): string[] {
  return goals.map((g) => `${g.met ? 'met   ' : 'MISSED'}  ${g.goal}: ${g.measured}`);
}
