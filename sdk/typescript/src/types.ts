// The payloads an OpenHydra node sends and accepts, as hydra/api/*.py and hydra/node.py build
// them. Field names stay in the wire's snake_case so they match the JSON and the OpenAI docs.

// --- requests ---------------------------------------------------------------------------------

export type ChatRole = "system" | "developer" | "user" | "assistant" | "tool";

/** OpenAI's list-of-parts content: the node accepts text parts only (and joins them). */
export interface TextPart {
  type: "text";
  text: string;
}

export interface ChatMessage {
  role: ChatRole;
  content: string | TextPart[] | null;
}

/** Sampling and routing parameters common to chat and completions. */
export interface SamplingParams {
  /** A catalog id or alias; absent: the client's `model` option, else the node's default. */
  model?: string;
  max_tokens?: number;
  max_completion_tokens?: number;
  /** 0..2; the node defaults to 1 (sampling), as OpenAI does. Pass 0 for greedy answers. */
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  stop?: string | string[];
  /** Choices per request, 1..8. */
  n?: number;
  repetition_penalty?: number;
  /** Accepted and ignored by the node. */
  presence_penalty?: number;
  /** Accepted and ignored by the node. */
  frequency_penalty?: number;
  /** "priority" makes the node burn HYDRA so that full stages serve the request first. */
  service_tier?: "auto" | "default" | "flex" | "priority";
  kv_compaction?: "off" | "on" | "auto";
  kv_compaction_ratio?: number;
  user?: string;
}

export interface StreamOptions {
  stream_options?: { include_usage?: boolean };
}

export interface ChatParams extends SamplingParams {
  messages: ChatMessage[];
  logprobs?: boolean;
  /** 0..20, with `logprobs: true`. */
  top_logprobs?: number;
}

export interface CompletionParams extends SamplingParams {
  /** Text or token ids (one prompt per request). */
  prompt: string | number[] | [string] | [number[]];
  /** How many alternatives to report per token, 0..5. */
  logprobs?: number;
}

// --- responses --------------------------------------------------------------------------------

export type FinishReason = "stop" | "length" | (string & {});

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface TopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface ChatTokenLogprob extends TopLogprob {
  top_logprobs: TopLogprob[];
}

export interface ChatLogprobs {
  content: ChatTokenLogprob[];
  refusal: null;
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/** What the SDK adds: the node served a smaller model than asked (X-OpenHydra-Degradation-Reason). */
export interface Degradation {
  degradation_reason?: string;
}

interface ResponseMeta {
  id: string;
  created: number;
  /** The model that served the request (a smaller one than asked when degraded). */
  model: string;
  system_fingerprint: null;
}

export interface ChatCompletion extends ResponseMeta, Degradation {
  object: "chat.completion";
  choices: {
    index: number;
    message: { role: "assistant"; content: string; refusal: null };
    logprobs: ChatLogprobs | null;
    finish_reason: FinishReason;
  }[];
  usage: Usage;
}

export interface ChatCompletionChunk extends ResponseMeta {
  object: "chat.completion.chunk";
  /** Empty in the usage chunk (`stream_options.include_usage`). */
  choices: {
    index: number;
    /** The first chunk of a choice carries the role; its last an empty delta and the finish reason. */
    delta: { role?: "assistant"; content?: string };
    logprobs: ChatLogprobs | null;
    finish_reason: FinishReason | null;
  }[];
  /** Present (null until the usage chunk) only with `stream_options.include_usage`. */
  usage?: Usage | null;
}

export interface Completion extends ResponseMeta, Degradation {
  object: "text_completion";
  choices: {
    index: number;
    text: string;
    logprobs: CompletionLogprobs | null;
    finish_reason: FinishReason;
  }[];
  usage: Usage;
}

export interface CompletionChunk extends ResponseMeta {
  object: "text_completion";
  choices: {
    index: number;
    text: string;
    logprobs: CompletionLogprobs | null;
    finish_reason: FinishReason | null;
  }[];
  usage?: Usage | null;
}

export interface Model {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  /** A complete route serves it now (listed first). */
  routable: boolean;
}

export interface Health {
  status: "ok";
}

/** `/readyz`: whether a complete route for the node's default model exists. */
export interface Readiness {
  ready: boolean;
  model: string;
}

// --- economy ----------------------------------------------------------------------------------

export interface Barter {
  /** Earned serving minus spent consuming, decayed. */
  credits: number;
  micro_credits: number;
  decay_per_day: number;
}

export interface Channel {
  /** Hex; what `closeChannel` takes. */
  id: string;
  payer: string;
  payee: string;
  deposit: number;
  paid: number;
  nonce: number;
  /** Unix time a unilateral close's challenge window ends; null while open. */
  closing_until: number | null;
}

/** A node's HYDRA from its replica of the token log; amounts in HYDRA. */
export interface Account {
  hydra: number;
  staked: number;
  unbonding: number;
  unbonding_until: number | null;
  burned: number;
  slashed: number;
  channels: Channel[];
  supply: number;
  log_length: number;
}

/** No federation has answered this node: it holds no HYDRA. */
export interface NoFederation {
  federation: null;
}

export interface HydraHoldings extends Account {
  federation: { members: number; k: number };
}

export type HydraStatus = NoFederation | HydraHoldings;

export interface Balance {
  peer_id: string;
  barter: Barter;
  hydra: HydraStatus;
}

/** What stake, unstake and closeChannel answer: the new balance. */
export type AccountResult = Account;

/** What openChannel answers: the new channel's id and the new balance. */
export interface OpenedChannel extends Account {
  id: string;
}

/** A HYDRA amount: a number, or a decimal string (exact; at most six decimals). */
export type HydraAmount = number | string;

// --- /v1/network/status -------------------------------------------------------------------------

export interface StageStatus {
  model: string;
  layers: [number, number];
  precision: string;
  backend: string;
  compiled: boolean;
  sessions: number;
  cache_tokens_free: number;
  steps_served: number;
  tokens_served: number;
  compactions: number;
  prefix_cache: { blocks: number; bytes: number; kept: number; reused: number } | null;
  batching: { max_batch: number; batches: number; mean_rows: number; largest: number; busy_s: number };
  [key: string]: unknown;
}

export interface LiveRoute {
  model: string;
  position: number;
  failovers: number;
  route: { peer_id: string; layers: [number, number]; local: boolean }[];
}

export interface ReputationScore {
  peer_id: string;
  total: number;
  verification: number;
  uptime: number;
  latency: number;
  stake: number;
  checks_passed: number;
  checks_failed: number;
  admissible: boolean;
}

/** A node's status; the fields an app reads are typed, the rest (which grows) are `unknown`. */
export interface NetworkStatus {
  role: "node" | (string & {});
  peer_id: string;
  addrs: string[];
  version: string;
  uptime_s: number;
  routing_table: number;
  connections: number;
  records_held: number;
  signposts: { configured: number; answered: number };
  api: string;
  hardware: string;
  /** The model this node serves blocks of. */
  model: string;
  layers: [number, number];
  total_layers: number;
  throughput_tokens_s: number;
  stage: StageStatus;
  generations: LiveRoute[];
  reputation: ReputationScore[];
  economy: { barter: Barter; hydra: HydraStatus };
  [key: string]: unknown;
}
