import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { logOutputTo } from './child-log.js';
import { freePort } from './free-port.js';
import { PROMETHEUS_BIN } from './monitoring-files.js';
import { killGroup, onProcessExit, removeTreeSync, terminateGroup, withParentDeathSignal } from './process-cleanup.js';

export interface PrometheusServerOptions {
  /** host:port of the coordinator, scraped at /metrics by the job `nixfarm` */
  target: string;
  /** the coordinator's read token, copied into the server's dir as its credentials_file */
  tokenFile: string;
  /** rule files, as a deployment lists them under rule_files */
  ruleFiles: readonly string[];
}

/** One sample series of a query: its labels and [unixSeconds, value] pairs (a vector's one value as a single pair). */
export interface PromSeries {
  metric: Record<string, string>;
  values: Array<[number, string]>;
}

/** The HTTP API's error, with the query it was for. */
class PrometheusQueryError extends Error {
  constructor(what: string, answer: string) {
    super(`Prometheus refused ${what}: ${answer}`);
    this.name = 'PrometheusQueryError';
  }
}

/**
 * Debian's prometheus on a free loopback port with a private TSDB dir,
 * scraping one coordinator every second (and evaluating rules as often), so
 * a test of a farm's real run sees the series a deployment would, seconds later.
 */
export class PrometheusServer {
  private constructor(
    readonly url: string,
    private readonly dir: string,
    private readonly stopProcess: () => Promise<void>,
  ) {}

  static async start(options: PrometheusServerOptions): Promise<PrometheusServer> {
    if (!existsSync(PROMETHEUS_BIN))
      throw new Error(`${PROMETHEUS_BIN} not found: install Debian's prometheus package (node scripts/ensure-machine.mjs --tests)`);
    const dir = mkdtempSync(join(tmpdir(), 'nixfarm-prometheus-'));
    mkdirSync(join(dir, 'data'));
    const token = join(dir, 'nixfarm-token');
    copyFileSync(options.tokenFile, token);
    const config = join(dir, 'prometheus.yml');
    // JSON is YAML: no YAML writer needed for the config.
    writeFileSync(
      config,
      JSON.stringify({
        global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
        rule_files: options.ruleFiles,
        scrape_configs: [{ job_name: 'nixfarm', authorization: { credentials_file: token }, static_configs: [{ targets: [options.target] }] }],
      }),
    );
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const { command, args } = withParentDeathSignal(PROMETHEUS_BIN, [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ]);
    const child = spawn(command, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const log = join(dir, 'prometheus.log');
    logOutputTo(child, log);
    const unregister = onProcessExit(() => {
      killGroup(child.pid, 'SIGKILL');
      removeTreeSync(dir);
    });
    const stop = async () => {
      await terminateGroup(child);
      removeTreeSync(dir);
      unregister();
    };
    const deadline = Date.now() + 20_000;
    while (
      !(await fetch(`${url}/-/ready`).then(
        (r) => r.ok,
        () => false,
      ))
    ) {
      if (child.exitCode !== null || Date.now() > deadline) {
        const output = existsSync(log) ? readFileSync(log, 'utf8') : '';
        await stop();
        throw new Error(`prometheus did not become ready on ${url}:\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const server = new PrometheusServer(url, dir, stop);
    // Prometheus hands new targets to its scrapers every 5 s: a run before the first scrape would be missed.
    while ((await server.query('up{job="nixfarm"}').catch(() => [])).length === 0) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`prometheus did not scrape ${options.target} within 20 s:\n${server.logText()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return server;
  }

  /** GET an /api/v1 endpoint; the `data` of a success, or a PrometheusQueryError. */
  async api<T>(path: string, params: Record<string, string | string[]> = {}): Promise<T> {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) for (const one of Array.isArray(v) ? v : [v]) query.append(k, one);
    const response = await fetch(`${this.url}/api/v1/${path}?${query}`);
    const body = (await response.json()) as { status: string; data?: T; error?: string };
    if (body.status !== 'success') throw new PrometheusQueryError(`${path} ${JSON.stringify(params)}`, body.error ?? JSON.stringify(body));
    return body.data as T;
  }

  /** An instant query: its series, each with its one value. */
  async query(expr: string): Promise<PromSeries[]> {
    const data = await this.api<{ resultType: string; result: Array<{ metric: Record<string, string>; value?: [number, string] }> }>('query', { query: expr });
    if (data.resultType === 'scalar') return [{ metric: {}, values: [data.result as unknown as [number, string]] }];
    return data.result.map((r) => ({ metric: r.metric, values: r.value === undefined ? [] : [r.value] }));
  }

  async queryRange(expr: string, startSeconds: number, endSeconds: number, stepSeconds: number): Promise<PromSeries[]> {
    const data = await this.api<{ result: PromSeries[] }>('query_range', {
      query: expr,
      start: String(startSeconds),
      end: String(endSeconds),
      step: String(stepSeconds),
    });
    return data.result;
  }

  /** Series of a metric name stored so far. */
  async series(name: string): Promise<Array<Record<string, string>>> {
    return this.api<Array<Record<string, string>>>('series', { 'match[]': name });
  }

  /** Prometheus's own log, for a failure message. */
  logText(): string {
    const log = join(this.dir, 'prometheus.log');
    return existsSync(log) ? readFileSync(log, 'utf8') : '';
  }

  stop(): Promise<void> {
    return this.stopProcess();
  }
}
