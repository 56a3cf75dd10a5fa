import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { type ChatCompletionChunk, Client, ConnectionFailed, NoRoute, StreamError } from "../src/index.js";
import {
  byteStream,
  chatChunk,
  json,
  openaiError,
  recordingSleep,
  scriptedFetch,
  sse,
  sseResponse,
} from "./support/fake.js";

const HI = [{ role: "user" as const, content: "hi" }];
const DONE = "data: [DONE]\n\n";

function roleChunk(): Record<string, unknown> {
  const chunk = chatChunk(null);
  (chunk.choices as { delta: unknown }[])[0]!.delta = { role: "assistant", content: "" };
  return chunk;
}

async function texts(stream: AsyncIterable<ChatCompletionChunk>, seen: string[] = []): Promise<string[]> {
  for await (const chunk of stream) seen.push(chunk.choices[0]?.delta.content ?? "");
  return seen;
}

describe("chatStream", () => {
  test("yields typed chunks until [DONE], with the degradation reason", async () => {
    const wire = [sse(roleChunk()), sse(chatChunk("Par")), sse(chatChunk("is")), sse(chatChunk(null, "stop")), DONE];
    const fetch = scriptedFetch(sseResponse(byteStream(wire), { "X-OpenHydra-Degradation-Reason": "serving tiny" }));
    const stream = new Client({ fetch, model: "big" }).chatStream({ messages: HI, temperature: 0 });
    assert.deepEqual(await texts(stream), ["", "Par", "is", ""]);
    assert.equal(stream.degradationReason, "serving tiny");
    const body = JSON.parse(String(fetch.calls[0]!.init.body)) as Record<string, unknown>;
    assert.deepEqual(body, { messages: HI, temperature: 0, model: "big", stream: true });
    assert.equal(new Headers(fetch.calls[0]!.init.headers).get("accept"), "text/event-stream");
  });

  test("is retried before it starts (a 503), never after its first byte", async () => {
    const cut = byteStream([sse(roleChunk()), sse(chatChunk("Par"))], new TypeError("terminated"));
    const fetch = scriptedFetch(
      openaiError(503, "no_route", "no route yet"),
      sseResponse(cut),
      sseResponse(byteStream([DONE])),
    );
    const sleep = recordingSleep();
    const seen: string[] = [];
    await assert.rejects(
      texts(new Client({ fetch, sleep, model: "tiny" }).chatStream({ messages: HI }), seen),
      ConnectionFailed,
    );
    assert.deepEqual(seen, ["", "Par"]);
    assert.equal(fetch.calls.length, 2);
    assert.equal(sleep.waits.length, 1);
  });

  test("the node's error event mid-stream is a StreamError, not retried", async () => {
    const error = {
      error: {
        message: "this node is shutting down; retry on another node or later",
        type: "service_unavailable",
        param: null,
        code: "shutting_down",
      },
    };
    const fetch = scriptedFetch(sseResponse(byteStream([sse(roleChunk()), sse(chatChunk("a")), sse(error), DONE])));
    const seen: string[] = [];
    await assert.rejects(
      texts(new Client({ fetch, sleep: recordingSleep(), model: "tiny" }).chatStream({ messages: HI }), seen),
      (e: unknown) => {
        assert.ok(e instanceof StreamError);
        assert.equal(e.code, "shutting_down");
        assert.match(e.message, /shutting down/);
        return true;
      },
    );
    assert.deepEqual(seen, ["", "a"]);
    assert.equal(fetch.calls.length, 1);
  });

  test("errors before the stream are thrown by the loop", async () => {
    const fetch = scriptedFetch(openaiError(503, "no_route", "no peers"));
    const stream = new Client({ fetch, sleep: recordingSleep(), maxRetries: 0, model: "x" }).chatStream({
      messages: HI,
    });
    await assert.rejects(texts(stream), NoRoute);
  });

  test("leaving the loop closes the connection", async () => {
    const body = byteStream([sse(roleChunk()), sse(chatChunk("a")), sse(chatChunk("b")), DONE]);
    const fetch = scriptedFetch(sseResponse(body));
    for await (const chunk of new Client({ fetch, model: "tiny" }).chatStream({ messages: HI })) {
      if (chunk.choices[0]?.delta.content === "a") break;
    }
    assert.equal(body.cancelled, true);
  });

  test("the caller's abort ends a stream being read, with the caller's reason", async () => {
    const controller = new AbortController();
    const fetch = scriptedFetch((_url, init) => {
      const body = new ReadableStream<Uint8Array>({
        start(stream) {
          stream.enqueue(new TextEncoder().encode(sse(roleChunk())));
          init.signal?.addEventListener("abort", () => stream.error(init.signal?.reason));
        },
      });
      return sseResponse(body);
    });
    const stream = new Client({ fetch, model: "tiny" }).chatStream({ messages: HI }, { signal: controller.signal });
    const seen: string[] = [];
    setTimeout(() => controller.abort(new Error("user pressed stop")), 20);
    await assert.rejects(texts(stream, seen), /user pressed stop/);
    assert.deepEqual(seen, [""]);
  });

  test("a stream is iterable once", async () => {
    const fetch = scriptedFetch(sseResponse(byteStream([DONE])));
    const stream = new Client({ fetch, model: "tiny" }).chatStream({ messages: HI });
    await texts(stream);
    await assert.rejects(texts(stream), /only once/);
  });
});

describe("Client", () => {
  test("asks the node's /readyz for its default model once", async () => {
    const reply = json({
      id: "c",
      object: "chat.completion",
      created: 1,
      model: "tiny",
      system_fingerprint: null,
      choices: [],
      usage: { prompt_tokens: 1, completion_tokens: 0, total_tokens: 1 },
    });
    const fetch = scriptedFetch((url) =>
      url.endsWith("/readyz") ? json({ ready: false, model: "tiny" }, 503) : reply.clone(),
    );
    const client = new Client({ baseUrl: "http://node:9000/v1/", fetch });
    await client.chat({ messages: HI });
    await client.chat({ messages: HI });
    assert.deepEqual(
      fetch.calls.map((c) => c.url),
      ["http://node:9000/readyz", "http://node:9000/v1/chat/completions", "http://node:9000/v1/chat/completions"],
    );
    assert.equal(JSON.parse(String(fetch.calls[1]!.init.body)).model, "tiny");
  });

  test("reports a degraded answer in degradation_reason", async () => {
    const reply = {
      id: "c",
      object: "text_completion",
      created: 1,
      model: "tiny",
      system_fingerprint: null,
      choices: [],
      usage: { prompt_tokens: 1, completion_tokens: 0, total_tokens: 1 },
    };
    const fetch = scriptedFetch(json(reply, 200, { "X-OpenHydra-Degradation-Reason": "no complete route for big" }));
    const completion = await new Client({ fetch, model: "big" }).complete({ prompt: "1, 2," });
    assert.equal(completion.degradation_reason, "no complete route for big");
    assert.equal(completion.model, "tiny");
  });

  test("ready() answers when the node is not ready, without retrying", async () => {
    const fetch = scriptedFetch(json({ ready: false, model: "tiny" }, 503));
    assert.deepEqual(await new Client({ fetch }).ready(), { ready: false, model: "tiny" });
    assert.equal(fetch.calls.length, 1);
  });

  test("reads the node's own error shape and Ollama's", async () => {
    const own = scriptedFetch(json({ error: { code: "not_found", message: "no such record" } }, 404));
    await assert.rejects(
      new Client({ fetch: own }).networkStatus(),
      (e: unknown) => e instanceof Error && "code" in e && e.code === "not_found",
    );
    const text = scriptedFetch(new Response("<html>bad gateway</html>", { status: 502 }));
    await assert.rejects(
      new Client({ fetch: text }).networkStatus(),
      (e: unknown) => e instanceof Error && "status" in e && e.status === 502 && /bad gateway/.test(e.message),
    );
  });
});
