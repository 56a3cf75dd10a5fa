// The client an app holds: one per node it talks to.

import { type CallOptions, type FetchLike, normalizeBaseUrl, type Sleep, sleep, Transport } from "./http.js";
import { DEFAULT_RETRY, type RetryPolicy } from "./retry.js";
import { ChunkStream, DEGRADATION_HEADER } from "./stream.js";
import type {
  AccountResult,
  Balance,
  ChatCompletion,
  ChatCompletionChunk,
  ChatParams,
  Completion,
  CompletionChunk,
  CompletionParams,
  Health,
  HydraAmount,
  Model,
  NetworkStatus,
  OpenedChannel,
  Readiness,
  StreamOptions,
} from "./types.js";

export const DEFAULT_BASE_URL = "http://127.0.0.1:8080";

export interface ClientOptions {
  /** The node's API, default http://127.0.0.1:8080 (a trailing `/v1` is dropped). */
  baseUrl?: string;
  /** The model when a call names none; else the node's default (its `/readyz` names it). */
  model?: string;
  /** The operator's HYDRA_MONEY_TOKEN, sent (as a bearer token) with money calls only. Not
   *  needed on the node's own machine. */
  moneyToken?: string;
  /** Retries after a failed attempt (see retry.ts for which); default 3. */
  maxRetries?: number;
  /** Per attempt: until the whole answer, or for a stream until it begins. Default 10 min. */
  timeoutMs?: number;
  /** Backoff tuning; `maxRetries` above wins over `retry.maxRetries`. */
  retry?: Partial<RetryPolicy>;
  fetch?: FetchLike;
  sleep?: Sleep;
  /** Jitter's source (tests make it deterministic). */
  random?: () => number;
}

export class Client {
  private readonly transport: Transport;
  private readonly model: string | undefined;
  private defaultModel: Promise<string> | undefined;

  constructor(options: ClientOptions = {}) {
    // looked up at each call, so a fetch installed after the client was made is used
    const fetchImpl = options.fetch ?? ((url: string, init: RequestInit) => globalThis.fetch(url, init));
    this.model = options.model;
    this.transport = new Transport({
      baseUrl: normalizeBaseUrl(options.baseUrl ?? DEFAULT_BASE_URL),
      fetch: fetchImpl,
      sleep: options.sleep ?? sleep,
      retry: {
        ...DEFAULT_RETRY,
        ...options.retry,
        maxRetries: options.maxRetries ?? options.retry?.maxRetries ?? DEFAULT_RETRY.maxRetries,
      },
      timeoutMs: options.timeoutMs ?? 600_000,
      moneyToken: options.moneyToken,
      random: options.random ?? Math.random,
    });
  }

  get baseUrl(): string {
    return this.transport.config.baseUrl;
  }

  // --- generation -----------------------------------------------------------------------------

  async chat(params: ChatParams, options?: CallOptions): Promise<ChatCompletion> {
    return this.generate<ChatCompletion>("/v1/chat/completions", params, options);
  }

  /** The reply as it is generated: see `ChunkStream` for errors and cancelling. */
  chatStream(params: ChatParams & StreamOptions, options?: CallOptions): ChunkStream<ChatCompletionChunk> {
    return this.generateStream<ChatCompletionChunk>("/v1/chat/completions", params, options);
  }

  async complete(params: CompletionParams, options?: CallOptions): Promise<Completion> {
    return this.generate<Completion>("/v1/completions", params, options);
  }

  completeStream(params: CompletionParams & StreamOptions, options?: CallOptions): ChunkStream<CompletionChunk> {
    return this.generateStream<CompletionChunk>("/v1/completions", params, options);
  }

  // --- the catalog and the node -----------------------------------------------------------------

  /** Every catalog model, those a complete route serves now first (`routable`). */
  async models(options?: CallOptions): Promise<Model[]> {
    const { data } = await this.transport.json<{ data: Model[] }>(
      { method: "GET", path: "/v1/models", kind: "default" },
      options,
    );
    return data.data;
  }

  /** One model by id or alias (NotFound lists the available ones). */
  async retrieveModel(name: string, options?: CallOptions): Promise<Model> {
    const path = `/v1/models/${encodeURIComponent(name)}`;
    return (await this.transport.json<Model>({ method: "GET", path, kind: "default" }, options)).data;
  }

  async networkStatus(options?: CallOptions): Promise<NetworkStatus> {
    const call = { method: "GET", path: "/v1/network/status", kind: "default" } as const;
    return (await this.transport.json<NetworkStatus>(call, options)).data;
  }

  /** Liveness; not rate limited, never retried. */
  async health(options?: CallOptions): Promise<Health> {
    return (await this.transport.json<Health>({ method: "GET", path: "/health", kind: "probe" }, options)).data;
  }

  /** Whether a complete route for the node's default model exists (no error when not). */
  async ready(options?: CallOptions): Promise<Readiness> {
    const call = { method: "GET", path: "/readyz", kind: "probe", answers: [503] } as const;
    return (await this.transport.json<Readiness>(call, options)).data;
  }

  // --- the economy ------------------------------------------------------------------------------

  /** Barter credits and HYDRA (`hydra.federation` null: the node holds none). Open to anyone. */
  async balance(options?: CallOptions): Promise<Balance> {
    return (
      await this.transport.json<Balance>({ method: "GET", path: "/v1/account/balance", kind: "default" }, options)
    ).data;
  }

  /** Stake HYDRA (operator only): the new balance. Retried only on 429 (see retry.ts). */
  async stake(amount: HydraAmount, options?: CallOptions): Promise<AccountResult> {
    return this.money<AccountResult>("/v1/hydra/stake", { amount }, options);
  }

  async unstake(amount: HydraAmount, options?: CallOptions): Promise<AccountResult> {
    return this.money<AccountResult>("/v1/hydra/unstake", { amount }, options);
  }

  /** Open a payment channel to `peer` (a peer id) locking `deposit` HYDRA; its id and the balance. */
  async openChannel(peer: string, deposit: HydraAmount, options?: CallOptions): Promise<OpenedChannel> {
    return this.money<OpenedChannel>("/v1/hydra/channels/open", { peer, deposit }, options);
  }

  /** Close a channel by its hex id (cooperatively when the payee answers, else unilaterally). */
  async closeChannel(id: string, options?: CallOptions): Promise<AccountResult> {
    return this.money<AccountResult>("/v1/hydra/channels/close", { id }, options);
  }

  // --- helpers ----------------------------------------------------------------------------------

  private async generate<T extends object>(
    path: string,
    params: ChatParams | CompletionParams,
    options?: CallOptions,
  ): Promise<T & { degradation_reason?: string }> {
    const body = { ...params, model: await this.modelFor(params.model, options), stream: false };
    const { data, headers } = await this.transport.json<T>({ method: "POST", path, body, kind: "default" }, options);
    const reason = headers.get(DEGRADATION_HEADER);
    return reason === null ? data : { ...data, degradation_reason: reason };
  }

  private generateStream<T>(
    path: string,
    params: ChatParams | CompletionParams,
    options?: CallOptions,
  ): ChunkStream<T> {
    return new ChunkStream<T>(async () => {
      const body = { ...params, model: await this.modelFor(params.model, options), stream: true };
      return this.transport.open({ method: "POST", path, body, kind: "default" }, options);
    }, options?.signal);
  }

  private async money<T>(path: string, body: object, options?: CallOptions): Promise<T> {
    return (await this.transport.json<T>({ method: "POST", path, body, kind: "money" }, options)).data;
  }

  /** The call's model, the client's, or the node's default (asked once; /readyz is not rate limited). */
  private async modelFor(model: string | undefined, options?: CallOptions): Promise<string> {
    if (model !== undefined) return model;
    if (this.model !== undefined) return this.model;
    this.defaultModel ??= this.ready(options).then(
      (readiness) => readiness.model,
      (error: unknown) => {
        this.defaultModel = undefined; // ask again next time
        throw error;
      },
    );
    return this.defaultModel;
  }
}
