// One call to a node: its attempts, each with a timeout and the caller's abort signal, retried
// by the policy in retry.ts; non-2xx answers become typed errors.

import { ConnectionFailed, errorFromResponse, HydraAPIError } from "./errors.js";
import { type CallKind, type RetryPolicy, retryDelay } from "./retry.js";

/** The subset of `fetch` the client uses (inject one to test, or to add a proxy or logging). */
export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/** Wait `ms`, rejecting with the signal's reason when it aborts first. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

/** Per-call overrides of the client's settings. */
export interface CallOptions {
  /** Aborts the call, its waits between retries, and a stream being read. */
  signal?: AbortSignal;
  timeoutMs?: number;
  maxRetries?: number;
}

export interface TransportConfig {
  baseUrl: string;
  fetch: FetchLike;
  sleep: Sleep;
  retry: RetryPolicy;
  timeoutMs: number;
  moneyToken: string | undefined;
  random: () => number;
}

export interface Call {
  method: "GET" | "POST";
  path: string;
  body?: unknown;
  kind: CallKind;
  /** Statuses besides 2xx whose body is the answer (`/readyz` answers 503 when not ready). */
  answers?: readonly number[];
}

export const sleep: Sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = (): void => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const aborted = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", aborted, { once: true });
  });

const MAX_TIMER_MS = 2 ** 31 - 1;

/** One attempt's abort controller: the caller's signal and the attempt's timeout both end it. */
export class Attempt {
  readonly controller = new AbortController();
  timedOut = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly forward = (): void => this.controller.abort(this.signal?.reason);

  constructor(
    private readonly signal: AbortSignal | undefined,
    timeoutMs: number,
  ) {
    signal?.addEventListener("abort", this.forward, { once: true });
    if (!(timeoutMs > 0 && timeoutMs < MAX_TIMER_MS)) return; // Infinity: no timeout (setTimeout would fire at once)
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.controller.abort(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
  }

  /** A stream has begun: its length is the generation's, not bounded by the timeout. */
  stopTimer(): void {
    clearTimeout(this.timer);
  }

  finish(): void {
    this.stopTimer();
    this.signal?.removeEventListener("abort", this.forward);
  }

  /** What a failure of this attempt means: the caller's abort is rethrown as it is. */
  failure(error: unknown): unknown {
    if (this.signal?.aborted) return this.signal.reason;
    if (error instanceof HydraAPIError) return error;
    if (this.timedOut) return new ConnectionFailed("the node did not answer in time", { cause: error, timedOut: true });
    const detail = error instanceof Error ? `: ${error.message}` : "";
    return new ConnectionFailed(`could not reach the node${detail}`, { cause: error });
  }
}

export interface Opened {
  response: Response;
  attempt: Attempt;
}

export class Transport {
  constructor(readonly config: TransportConfig) {}

  /** The JSON answer and the response's headers. */
  async json<T>(call: Call, options: CallOptions = {}): Promise<{ data: T; headers: Headers }> {
    const { result, attempt } = await this.send(call, options, "application/json", async (response) => ({
      data: await readJson<T>(response),
      headers: response.headers,
    }));
    attempt.finish();
    return result;
  }

  /** A successful response whose body is still to be read; the caller finishes its attempt. */
  async open(call: Call, options: CallOptions = {}): Promise<Opened> {
    const { result, attempt } = await this.send(call, options, "text/event-stream", async (response) => response);
    attempt.stopTimer();
    return { response: result, attempt };
  }

  private async send<T>(
    call: Call,
    options: CallOptions,
    accept: string,
    read: (response: Response) => Promise<T>,
  ): Promise<{ result: T; attempt: Attempt }> {
    const policy = { ...this.config.retry, maxRetries: options.maxRetries ?? this.config.retry.maxRetries };
    for (let attemptNumber = 0; ; attemptNumber++) {
      const attempt = new Attempt(options.signal, options.timeoutMs ?? this.config.timeoutMs);
      let error: unknown;
      try {
        const fetch = this.config.fetch; // called unbound: a browser's fetch refuses another `this`
        const response = await fetch(this.url(call.path), {
          ...this.init(call, accept),
          signal: attempt.controller.signal,
        });
        if (response.ok || call.answers?.includes(response.status)) {
          return { result: await read(response), attempt };
        }
        error = errorFromResponse(response.status, await readBody(response), response.headers);
      } catch (thrown) {
        error = attempt.failure(thrown);
      }
      attempt.finish();
      if (options.signal?.aborted) throw options.signal.reason;
      const wait = retryDelay(error, attemptNumber, call.kind, policy, this.config.random);
      if (wait === null) throw error;
      await this.config.sleep(wait, options.signal);
    }
  }

  private url(path: string): string {
    return this.config.baseUrl + path;
  }

  private init(call: Call, accept: string): RequestInit {
    const headers: Record<string, string> = { Accept: accept };
    if (call.body !== undefined) headers["Content-Type"] = "application/json";
    // the operator's token goes to the calls that need it only
    if (call.kind === "money" && this.config.moneyToken) headers.Authorization = `Bearer ${this.config.moneyToken}`;
    const init: RequestInit = { method: call.method, headers };
    if (call.body !== undefined) init.body = JSON.stringify(call.body);
    return init;
  }
}

/** `http://host:8080`, from what a user may write: a trailing slash, or OpenAI's `/v1`. */
export function normalizeBaseUrl(url: string): string {
  return url.replace(/\/+$/, "").replace(/\/v1$/, "");
}

async function readBody(response: Response): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

async function readJson<T>(response: Response): Promise<T> {
  const text = await response.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new HydraAPIError({
      status: response.status,
      message: `the node's answer is not JSON: ${text.slice(0, 200)}`,
      body: text,
      headers: response.headers,
    });
  }
}
