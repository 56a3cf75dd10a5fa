// When a failed attempt is tried again, and after how long.
//
// The rule:
// - Retried: 429 (after the node's Retry-After, seconds or an HTTP date, plus up to 10% jitter;
//   without one, like a 503), 503 (no_route, shutting_down...) and connection failures, with
//   exponential backoff and jitter: base * 2^attempt, capped, of which a random half is waited.
// - At most `maxRetries` retries (default 3: four attempts in all); a Retry-After longer than
//   `maxRetryAfterMs` is not waited for: the RateLimited error is thrown at once.
// - Never retried: other statuses (400, 403, 404...), a timed-out attempt, the caller's abort,
//   and anything after a stream's first byte (the chunks already delivered cannot be unsent).
// - Money calls (stake, unstake, channels) only on 429: the node refuses it before the call
//   reaches the token log, so nothing moved; after a 503 or a cut connection the event may
//   have been sealed, and a retry could move HYDRA twice.
// - Probes (health, readiness) are never retried: their answer is the point.

import { ConnectionFailed, HydraAPIError, parseRetryAfter, RateLimited, ServiceUnavailable } from "./errors.js";

export { parseRetryAfter };

/** How a call may be retried: see the rule above. */
export type CallKind = "default" | "money" | "probe";

export interface RetryPolicy {
  /** Retries after the first attempt. */
  maxRetries: number;
  /** The first backoff's ceiling; each retry doubles it. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** The longest Retry-After worth waiting for. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxRetries: 3,
  baseDelayMs: 500,
  maxDelayMs: 8_000,
  maxRetryAfterMs: 60_000,
};

/** Exponential backoff with "equal jitter": between half and all of base * 2^attempt (capped),
 *  so clients that failed together do not all come back together. */
export function backoff(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  return ceiling / 2 + (random() * ceiling) / 2;
}

/** Milliseconds to wait before retrying after `error` on attempt `attempt` (0: the first),
 *  or null to give up and throw it. */
export function retryDelay(
  error: unknown,
  attempt: number,
  kind: CallKind,
  policy: RetryPolicy,
  random: () => number = Math.random,
): number | null {
  if (attempt >= policy.maxRetries || kind === "probe") return null;
  if (error instanceof RateLimited) {
    if (error.retryAfter === null) return backoff(attempt, policy, random);
    const wait = error.retryAfter * 1000;
    if (wait > policy.maxRetryAfterMs) return null;
    return wait + random() * Math.min(wait / 10, 1_000); // never sooner than the node said
  }
  if (kind === "money") return null;
  if (error instanceof ConnectionFailed) return error.timedOut ? null : backoff(attempt, policy, random);
  if (error instanceof ServiceUnavailable) {
    const said = retryAfterOf(error);
    return said !== null && said <= policy.maxRetryAfterMs ? said : backoff(attempt, policy, random);
  }
  return null;
}

/** A 503 may carry Retry-After too (the node's do not today). */
function retryAfterOf(error: HydraAPIError): number | null {
  return parseRetryAfter(error.headers?.get("retry-after") ?? null);
}
