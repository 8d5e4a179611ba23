import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: LevelWithSilent;
  /** component name, added to every line */
  name: string;
  /** where JSON lines go; stderr by default so stdout stays for results */
  destination?: number;
}

/** One logger for the whole process: JSON lines on stderr, structured fields. */
export function createLogger(options: LoggerOptions): Logger {
  const level = options.level ?? (process.env.NIXFARM_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info';
  return pino({ name: options.name, level, base: { pid: process.pid } }, pino.destination({ fd: options.destination ?? 2, sync: false }));
}
