// A streamed chat or completion: the typed chunks of the node's SSE stream, lazily opened.

import { ConnectionFailed, HydraAPIError, readErrorBody, StreamError } from "./errors.js";
import type { Opened } from "./http.js";
import { parseSSE, type ServerSentEvent } from "./sse.js";

export const DEGRADATION_HEADER = "X-OpenHydra-Degradation-Reason";

/**
 * `for await (const chunk of stream)`. The request is sent when iteration begins, so errors
 * before the stream starts (404, 503 after retries...) are thrown by the loop. Once the first
 * byte arrived nothing is retried: a mid-stream error is thrown as `StreamError`, a cut
 * connection (or an end without `data: [DONE]`) as `ConnectionFailed`. Leaving the loop early
 * closes the connection, which cancels the generation on the node. Iterable once.
 */
export class ChunkStream<T> implements AsyncIterable<T> {
  /** Why the node served a smaller model than asked; known once the stream has begun. */
  degradationReason: string | null = null;
  private started = false;

  constructor(
    private readonly open: () => Promise<Opened>,
    private readonly signal?: AbortSignal,
  ) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    if (this.started) throw new Error("a ChunkStream can be iterated only once");
    this.started = true;
    const { response, attempt } = await this.open();
    this.degradationReason = response.headers.get(DEGRADATION_HEADER);
    try {
      if (response.body === null) throw new ConnectionFailed("the node answered a stream with no body");
      yield* payloads<T>(parseSSE(response.body), response);
    } catch (error) {
      if (this.signal?.aborted) throw this.signal.reason;
      if (error instanceof HydraAPIError) throw error;
      throw new ConnectionFailed(`the stream was cut: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    } finally {
      attempt.finish();
    }
  }
}

/** Each event's JSON payload until `data: [DONE]`; the node's `{"error": ...}` payload (or an
 *  `error` event) is thrown. */
export async function* payloads<T>(
  events: AsyncIterable<ServerSentEvent>,
  response: Response,
): AsyncGenerator<T, void, undefined> {
  for await (const event of events) {
    if (event.data === "[DONE]") return;
    let payload: unknown;
    try {
      payload = JSON.parse(event.data);
    } catch {
      throw new HydraAPIError({
        status: response.status,
        message: `the node sent an event that is not JSON: ${event.data.slice(0, 200)}`,
        body: event.data,
        headers: response.headers,
      });
    }
    const error = readErrorBody(payload);
    if (error !== null || event.event === "error") {
      const message = error?.message ?? event.data;
      throw new StreamError({ ...error, message, status: response.status, body: payload, headers: response.headers });
    }
    yield payload as T;
  }
  throw new ConnectionFailed("the stream ended before data: [DONE] (the connection was cut)");
}
