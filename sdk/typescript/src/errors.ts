// Typed errors for what a node refuses. The node answers errors in one of three shapes
// (hydra/api/errors.py): OpenAI's {"error": {message, type, param, code}} under /v1, its own
// {"error": {code, message}} on /v1/network/status and /health, Ollama's {"error": "..."} under
// /api; `errorFromResponse` reads all three.

export interface ErrorDetails {
  status: number;
  message: string;
  code?: string | null;
  type?: string | null;
  param?: string | null;
  body?: unknown;
  headers?: Headers;
}

export class HydraAPIError extends Error {
  /** The HTTP status; 0 when no response came (ConnectionFailed). */
  readonly status: number;
  /** The server's machine-readable code (`no_route`, `model_not_found`...); it may be null. */
  readonly code: string | null;
  /** OpenAI's error type (`invalid_request_error`, `service_unavailable`...), when given. */
  readonly type: string | null;
  /** The request field at fault, when the server names one. */
  readonly param: string | null;
  /** The parsed error body (or its text when it was not JSON). */
  readonly body: unknown;
  readonly headers: Headers | undefined;

  constructor(details: ErrorDetails, options?: { cause?: unknown }) {
    super(details.message, options);
    this.name = new.target.name;
    this.status = details.status;
    this.code = details.code ?? null;
    this.type = details.type ?? null;
    this.param = details.param ?? null;
    this.body = details.body;
    this.headers = details.headers;
  }
}

/** 400 (and 413, a body over the node's limit): bad input, `param` names the field. */
export class BadRequest extends HydraAPIError {}

/** 403: a money call from another machine without the operator's token (`operator_only`). */
export class Forbidden extends HydraAPIError {}

/** 404: an unknown model (`model_not_found`, listing the available ones) or path. */
export class NotFound extends HydraAPIError {}

/** 429: over the node's per-client rate limit. */
export class RateLimited extends HydraAPIError {
  /** Seconds the node asked to wait (`Retry-After`), null when it did not say. */
  readonly retryAfter: number | null;

  constructor(details: ErrorDetails & { retryAfter: number | null }) {
    super(details);
    this.retryAfter = details.retryAfter;
  }
}

/** 503: the node cannot serve now (`shutting_down`, no HYDRA federation, ...). */
export class ServiceUnavailable extends HydraAPIError {}

/** 503 `no_route`: no peers cover the model nor a smaller one; the message names those that do. */
export class NoRoute extends ServiceUnavailable {}

/** An error the node sent as an SSE payload after the stream began (status: that of the
 *  response carrying it, 200). The chunks before it were delivered; it is never retried. */
export class StreamError extends HydraAPIError {}

/** No usable response: the connection failed or was cut, or the attempt timed out. */
export class ConnectionFailed extends HydraAPIError {
  /** The attempt ran past `timeoutMs` (not retried: the next would likely run as long). */
  readonly timedOut: boolean;

  constructor(message: string, options: { cause?: unknown; timedOut?: boolean } = {}) {
    const timedOut = options.timedOut ?? false;
    super({ status: 0, message, code: timedOut ? "timeout" : "connection_failed" }, { cause: options.cause });
    this.timedOut = timedOut;
  }
}

/** The `error` of any of the node's shapes, as far as it can be read. */
export function readErrorBody(body: unknown): Pick<ErrorDetails, "message" | "code" | "type" | "param"> | null {
  if (typeof body !== "object" || body === null || !("error" in body)) return null;
  const error: unknown = body.error;
  if (typeof error === "string") return { message: error };
  if (typeof error !== "object" || error === null) return null;
  const field = (name: string): string | null => {
    const value: unknown = (error as Record<string, unknown>)[name];
    return typeof value === "string" ? value : null;
  };
  return { message: field("message") ?? "error", code: field("code"), type: field("type"), param: field("param") };
}

/** The typed error for a non-2xx response whose body has been read (`body`: JSON or text). */
export function errorFromResponse(status: number, body: unknown, headers: Headers, now = Date.now()): HydraAPIError {
  const read = readErrorBody(body);
  const message = read?.message ?? (typeof body === "string" && body ? body.slice(0, 500) : `HTTP ${status}`);
  const details: ErrorDetails = { ...read, message, status, body, headers };
  switch (status) {
    case 400:
    case 413:
      return new BadRequest(details);
    case 403:
      return new Forbidden(details);
    case 404:
      return new NotFound(details);
    case 429: {
      const wait = parseRetryAfter(headers.get("retry-after"), now);
      return new RateLimited({ ...details, retryAfter: wait === null ? null : wait / 1000 });
    }
    case 503:
      return details.code === "no_route" ? new NoRoute(details) : new ServiceUnavailable(details);
    default:
      return new HydraAPIError(details);
  }
}

/** `Retry-After` in milliseconds: delay-seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  // HTTP dates (all three forms) begin with the day's name; Date.parse alone reads "-1" as a year
  const at = /^[A-Za-z]{3}/.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - now);
}
