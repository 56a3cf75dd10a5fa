// @openhydra/sdk: a typed client for an OpenHydra node's HTTP API.

export { Client, type ClientOptions, DEFAULT_BASE_URL } from "./client.js";
export {
  BadRequest,
  ConnectionFailed,
  type ErrorDetails,
  errorFromResponse,
  Forbidden,
  HydraAPIError,
  NoRoute,
  NotFound,
  RateLimited,
  ServiceUnavailable,
  StreamError,
} from "./errors.js";
export type { CallOptions, FetchLike, Sleep } from "./http.js";
export { backoff, type CallKind, DEFAULT_RETRY, parseRetryAfter, type RetryPolicy, retryDelay } from "./retry.js";
export { parseSSE, type ServerSentEvent } from "./sse.js";
export { ChunkStream, DEGRADATION_HEADER } from "./stream.js";
export type * from "./types.js";
