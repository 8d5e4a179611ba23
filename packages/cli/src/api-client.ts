import { apiErrorSchema, runEventSchema, type RunEvent, type RunView, type SubmitRunRequest } from '@nixfarm/shared';
import { CliError, EXIT_USAGE } from './exit-codes.js';
import { resolveApiToken } from './api-token-source.js';

export const DEFAULT_COORDINATOR_URL = process.env.NIXFARM_COORDINATOR ?? 'http://127.0.0.1:8420';

/** The HTTP API as the CLI uses it. */
export class ApiClient {
  /** @param token the bearer token; without one the coordinator answers 401, which says how to give one */
  constructor(
    readonly baseUrl: string,
    private readonly token?: string,
  ) {}

  /** A client for a command's --coordinator and --token flags (and their environment defaults). */
  static async connect(flags: { coordinator?: string; token?: string }): Promise<ApiClient> {
    return new ApiClient(flags.coordinator ?? DEFAULT_COORDINATOR_URL, await resolveApiToken(flags.token));
  }

  /** The Authorization header, for requests made outside this class (the log stream). */
  authHeaders(): Record<string, string> {
    return this.token === undefined ? {} : { authorization: `Bearer ${this.token}` };
  }

  /** The answer's text; ApiRequestError (with the API's code) for a refusal, CliError when the coordinator cannot be reached. */
  private async exchange(method: string, path: string, body?: unknown): Promise<string> {
    let response: Response;
    try {
      response = await fetch(new URL(path, this.baseUrl), {
        method,
        headers: { ...this.authHeaders(), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new CliError(
        `cannot reach the coordinator at ${this.baseUrl} (${(error as Error & { cause?: Error }).cause?.message ?? (error as Error).message}): is \`nixfarm coordinator\` running? (set --coordinator or NIXFARM_COORDINATOR)`,
        EXIT_USAGE,
      );
    }
    const text = await response.text();
    if (!response.ok) {
      let parsed: ReturnType<typeof apiErrorSchema.safeParse> | undefined;
      try {
        parsed = apiErrorSchema.safeParse(JSON.parse(text));
      } catch {
        // not JSON: the text is the message
      }
      throw new ApiRequestError(response.status, parsed?.success ? parsed.data.error.code : 'http-error', parsed?.success ? parsed.data.error.message : text);
    }
    return text;
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const text = await this.exchange(method, path, body);
    return (text.length > 0 ? JSON.parse(text) : undefined) as T;
  }

  /** A text answer (a build log from /api/logs). */
  getText(path: string): Promise<string> {
    return this.exchange('GET', path);
  }

  submitRun(request: SubmitRunRequest): Promise<RunView> {
    return this.request('POST', '/api/runs', request);
  }

  getRun(id: string): Promise<RunView> {
    return this.request('GET', `/api/runs/${encodeURIComponent(id)}`);
  }

  get<T>(path: string): Promise<T> {
    return this.request('GET', path);
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request('POST', path, body);
  }

  delete<T>(path: string): Promise<T> {
    return this.request('DELETE', path);
  }

  /**
   * Follows a run's server-sent events until it finishes, resuming after the
   * last event seen when the connection drops (a coordinator restart). Gives
   * up after `patienceMs` without a connection; the run goes on regardless.
   */
  async *followRun(id: string, options: { patienceMs?: number; onReconnecting?: (reason: string) => void } = {}): AsyncGenerator<RunEvent> {
    let lastId = '0';
    let lostSince: number | undefined;
    for (;;) {
      let response: Response;
      try {
        response = await fetch(new URL(`/api/runs/${encodeURIComponent(id)}/events?after=${lastId}`, this.baseUrl), {
          headers: { ...this.authHeaders(), accept: 'text/event-stream' },
        });
        if (!response.ok || response.body === null) throw new Error(`HTTP ${response.status}`);
      } catch (error) {
        const reason = (error as Error & { cause?: Error }).cause?.message ?? (error as Error).message;
        if (lostSince === undefined) {
          lostSince = Date.now();
          options.onReconnecting?.(reason);
        }
        if (Date.now() - lostSince > (options.patienceMs ?? 300_000)) {
          throw new CliError(
            `lost the coordinator at ${this.baseUrl} (${reason}); the run goes on there: follow it later with \`nixfarm wait ${id}\``,
            EXIT_USAGE,
          );
        }
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      lostSince = undefined;
      const decoder = new TextDecoder();
      let buffer = '';
      try {
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
          buffer += decoder.decode(chunk, { stream: true });
          let sep;
          while ((sep = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, sep);
            buffer = buffer.slice(sep + 2);
            let eventId: string | undefined;
            let data: string | undefined;
            for (const line of block.split('\n')) {
              if (line.startsWith('id: ')) eventId = line.slice(4);
              else if (line.startsWith('data: ')) data = line.slice(6);
            }
            if (data === undefined) continue;
            if (eventId !== undefined) lastId = eventId;
            const parsed = runEventSchema.safeParse(JSON.parse(data));
            if (!parsed.success) continue;
            yield parsed.data;
            if (parsed.data.type === 'run-finished') return;
          }
        }
      } catch {
        // connection dropped: reconnect after the last event seen
      }
    }
  }
}

export class ApiRequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiRequestError';
  }
}
