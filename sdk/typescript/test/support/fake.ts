// Test doubles: a scripted fetch that records each request, SSE bodies, a recording sleep.

import type { FetchLike, Sleep } from "../../src/index.js";

export interface Recorded {
  url: string;
  init: RequestInit;
}

/** Answers each request with the next of `answers` (a Response, an Error to throw, or a
 *  function of the request); the last one repeats, except an event stream. */
export type Answer = Response | Error | ((url: string, init: RequestInit) => Response | Promise<Response>);

export function scriptedFetch(...answers: Answer[]): FetchLike & { calls: Recorded[] } {
  const calls: Recorded[] = [];
  const fetch = async (url: string, init: RequestInit): Promise<Response> => {
    calls.push({ url, init });
    const answer = answers[Math.min(calls.length, answers.length) - 1];
    if (answer === undefined) throw new Error("scriptedFetch: no answers");
    if (answer instanceof Error) throw answer;
    if (typeof answer === "function") return answer(url, init);
    // a repeated answer needs a fresh body each time; an event stream is used once (a clone
    // would tee it, and a tee reads ahead and waits for both branches to cancel)
    return answer.headers.get("content-type") === "text/event-stream" ? answer : answer.clone();
  };
  return Object.assign(fetch, { calls });
}

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

export function openaiError(
  status: number,
  code: string | null,
  message: string,
  headers: Record<string, string> = {},
): Response {
  const type =
    status === 503 ? "service_unavailable" : status === 429 ? "rate_limit_exceeded" : "invalid_request_error";
  return json({ error: { message, type, param: null, code } }, status, headers);
}

const encoder = new TextEncoder();

/** A byte stream of `parts` (strings are UTF-8 encoded), then, if `fail` is given, an error
 *  instead of a clean end; `cancelled` turns true if the reader cancels it. */
export function byteStream(
  parts: (string | Uint8Array)[],
  fail?: Error,
): ReadableStream<Uint8Array> & { cancelled: boolean } {
  let index = 0;
  const state = { cancelled: false };
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const part = parts[index++];
      if (part !== undefined) controller.enqueue(typeof part === "string" ? encoder.encode(part) : part);
      else if (fail) controller.error(fail);
      else controller.close();
    },
    cancel() {
      state.cancelled = true;
    },
  });
  return Object.defineProperty(stream, "cancelled", { get: () => state.cancelled }) as ReadableStream<Uint8Array> & {
    cancelled: boolean;
  };
}

export function sse(payload: unknown): string {
  return `data: ${JSON.stringify(payload)}\n\n`;
}

export function sseResponse(body: ReadableStream<Uint8Array>, headers: Record<string, string> = {}): Response {
  return new Response(body, { status: 200, headers: { "content-type": "text/event-stream", ...headers } });
}

export function chatChunk(content: string | null, finish: string | null = null): Record<string, unknown> {
  const delta = content === null ? {} : { content };
  return {
    id: "chatcmpl-1",
    created: 1,
    model: "tiny",
    system_fingerprint: null,
    object: "chat.completion.chunk",
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  };
}

/** A sleep that only records what it was asked to wait. */
export function recordingSleep(): Sleep & { waits: number[] } {
  const waits: number[] = [];
  const sleep: Sleep = async (ms) => {
    waits.push(ms);
  };
  return Object.assign(sleep, { waits });
}
