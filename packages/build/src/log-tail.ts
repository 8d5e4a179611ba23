/** Keeps the last N lines of a build log, bounded in memory whatever the build prints. */
export class LogTail {
  private readonly lines: string[] = [];
  constructor(
    private readonly limit: number,
    private readonly maxLineLength = 4096,
  ) {}

  push(line: string): void {
    this.lines.push(line.length > this.maxLineLength ? `${line.slice(0, this.maxLineLength)}…` : line);
    if (this.lines.length > this.limit) this.lines.shift();
  }

  toArray(): string[] {
    return [...this.lines];
  }
}
