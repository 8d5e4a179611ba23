/**
 * A unified diff of two texts (as `diff -u` prints it), from Myers' O(ND)
 * line diff: the differing outputs of a reproducibility check are usually
 * small text files (a stamp, a generated header), and showing their lines
 * needs no process and no dependency.
 */

export interface UnifiedDiffOptions {
  /** the `---` header's name */
  oldName: string;
  /** the `+++` header's name */
  newName: string;
  /** lines of context around each change; 3 like diff -u */
  context?: number;
}

/**
 * Beyond this many differing lines the diff stops searching for the
 * shortest edit script (its trace grows with the square of it) and shows the
 * rest of the texts as replaced: still a correct diff, only not minimal.
 */
const MAX_EDIT_DISTANCE = 2_000;

type Op = { kind: ' ' | '-' | '+'; line: string };

/** Lines with their terminators, so that a missing final newline is a difference as in diff -u. */
function linesOf(text: string): string[] {
  const lines = text.split(/(?<=\n)/);
  return lines.length === 1 && lines[0] === '' ? [] : lines;
}

/** The shortest edit script between a and b (both without their common prefix and suffix), or undefined beyond MAX_EDIT_DISTANCE. */
function myers(a: readonly string[], b: readonly string[]): Op[] | undefined {
  const n = a.length;
  const m = b.length;
  const max = Math.min(n + m, MAX_EDIT_DISTANCE);
  const offset = max + 1;
  const v = new Int32Array(2 * max + 3);
  // trace[d] = v's diagonals -d..d after step d, kept for the walk back
  const trace: Int32Array[] = [];
  let found = -1;
  for (let d = 0; d <= max && found < 0; d++) {
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[offset + k - 1]! < v[offset + k + 1]!) ? v[offset + k + 1]! : v[offset + k - 1]! + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
      v[offset + k] = x;
      if (x >= n && y >= m) {
        found = d;
        break;
      }
    }
    trace.push(v.slice(offset - d, offset + d + 1));
  }
  if (found < 0) return undefined;
  const ops: Op[] = [];
  let x = n;
  let y = m;
  for (let d = found; d > 0; d--) {
    const prev = trace[d - 1]!;
    const at = (k: number) => prev[k + d - 1]!;
    const k = x - y;
    const down = k === -d || (k !== d && at(k - 1) < at(k + 1));
    const prevK = down ? k + 1 : k - 1;
    const prevX = at(prevK);
    const prevY = prevX - prevK;
    for (; x > prevX && y > prevY; y--) ops.push({ kind: ' ', line: a[--x]! });
    if (down) ops.push({ kind: '+', line: b[--y]! });
    else ops.push({ kind: '-', line: a[--x]! });
  }
  while (x > 0) ops.push({ kind: ' ', line: a[--x]! });
  return ops.reverse();
}

function editScript(a: readonly string[], b: readonly string[]): Op[] {
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  for (; endA > start && endB > start && a[endA - 1] === b[endB - 1]; endB--) endA--;
  const midA = a.slice(start, endA);
  const midB = b.slice(start, endB);
  const middle = myers(midA, midB) ?? [...midA.map((line): Op => ({ kind: '-', line })), ...midB.map((line): Op => ({ kind: '+', line }))];
  const same = (line: string): Op => ({ kind: ' ', line });
  return [...a.slice(0, start).map(same), ...middle, ...a.slice(endA).map(same)];
}

/** diff -u's range: `start,count`, `start` alone for one line, the line before for none. */
function range(start: number, count: number): string {
  if (count === 1) return `${start + 1}`;
  return `${count === 0 ? start : start + 1},${count}`;
}

function render(op: Op): string {
  return op.line.endsWith('\n') ? `${op.kind}${op.line}` : `${op.kind}${op.line}\n\\ No newline at end of file\n`;
}

/** The unified diff of two texts; '' when they are equal. */
export function unifiedDiff(oldText: string, newText: string, options: UnifiedDiffOptions): string {
  if (oldText === newText) return '';
  const context = options.context ?? 3;
  const ops = editScript(linesOf(oldText), linesOf(newText));
  // positions of each op in the old and new texts
  const oldAt: number[] = [];
  const newAt: number[] = [];
  let o = 0;
  let n = 0;
  for (const op of ops) {
    oldAt.push(o);
    newAt.push(n);
    if (op.kind !== '+') o++;
    if (op.kind !== '-') n++;
  }
  const changed = ops.flatMap((op, i) => (op.kind === ' ' ? [] : [i]));
  let out = `--- ${options.oldName}\n+++ ${options.newName}\n`;
  let h = 0;
  while (h < changed.length) {
    // a hunk: changes whose context windows touch
    let last = h;
    while (last + 1 < changed.length && changed[last + 1]! - changed[last]! <= 2 * context + 1) last++;
    const from = Math.max(0, changed[h]! - context);
    const to = Math.min(ops.length, changed[last]! + context + 1);
    const hunk = ops.slice(from, to);
    const oldCount = hunk.filter((op) => op.kind !== '+').length;
    const newCount = hunk.filter((op) => op.kind !== '-').length;
    out += `@@ -${range(oldAt[from]!, oldCount)} +${range(newAt[from]!, newCount)} @@\n`;
    for (const op of hunk) out += render(op);
    h = last + 1;
  }
  return out;
}
