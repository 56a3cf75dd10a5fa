// Against real nodes (tests/integration/test_sdk_typescript_live.py starts them):
//   HYDRA_SDK_URL          a node serving HYDRA_SDK_MODEL (a tokenizer with a chat template)
//   HYDRA_SDK_LIMITED_URL  the same, rate limited to 3 requests per 2 s per client
//   HYDRA_SDK_UNROUTED     a catalog model nobody serves and with nothing smaller: 503 no_route
// Without them each test is skipped, saying why.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  type ChatParams,
  Client,
  type FetchLike,
  HydraAPIError,
  NoRoute,
  NotFound,
  parseRetryAfter,
  RateLimited,
  ServiceUnavailable,
} from "../src/index.js";
import { sleep } from "../src/http.js";

const URL = process.env.HYDRA_SDK_URL;
const MODEL = process.env.HYDRA_SDK_MODEL;
const LIMITED_URL = process.env.HYDRA_SDK_LIMITED_URL;
const UNROUTED = process.env.HYDRA_SDK_UNROUTED;

function needs(...names: string[]): { skip: string | false; timeout: number } {
  const missing = names.filter((name) => !process.env[name]);
  const skip = missing.length
    ? `live test: set ${missing.join(", ")} (tests/integration/test_sdk_typescript_live.py does)`
    : false;
  return { skip, timeout: 120_000 };
}

const NODE = needs("HYDRA_SDK_URL", "HYDRA_SDK_MODEL");
const client = (): Client => new Client({ baseUrl: URL!, model: MODEL! });
const ASK: ChatParams = {
  messages: [{ role: "user", content: "What is the capital of France?" }],
  temperature: 0,
  max_tokens: 12,
};

/** A fetch that counts attempts and keeps each response's status and Retry-After. */
function countingFetch(): FetchLike & { seen: { status: number; retryAfter: string | null }[] } {
  const seen: { status: number; retryAfter: string | null }[] = [];
  const counting: FetchLike = async (url, init) => {
    const response = await fetch(url, init);
    seen.push({ status: response.status, retryAfter: response.headers.get("retry-after") });
    return response;
  };
  return Object.assign(counting, { seen });
}

describe("live node", () => {
  test("chatStream: chunks arrive, and their text is the non-streamed reply (temperature 0)", NODE, async () => {
    const whole = await client().chat(ASK);
    assert.equal(whole.object, "chat.completion");
    assert.equal(whole.model, MODEL);
    assert.equal(whole.usage.completion_tokens, ASK.max_tokens);
    const stream = client().chatStream({ ...ASK, stream_options: { include_usage: true } });
    let text = "";
    let chunks = 0;
    let finish: string | null = null;
    let usage = null;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, "chat.completion.chunk");
      const choice = chunk.choices[0];
      if (chunks === 1) assert.equal(choice?.delta.role, "assistant");
      text += choice?.delta.content ?? "";
      finish = choice?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    assert.ok(chunks > 3, `only ${chunks} chunks`);
    assert.equal(text, whole.choices[0]?.message.content);
    assert.equal(finish, "length");
    assert.deepEqual(usage, whole.usage);
    assert.equal(stream.degradationReason, null);
  });

  test("complete and completeStream", NODE, async () => {
    const params = { prompt: "1, 2, 3,", temperature: 0, max_tokens: 6 };
    const whole = await client().complete(params);
    assert.equal(whole.object, "text_completion");
    assert.equal(whole.choices[0]?.finish_reason, "length");
    assert.equal(whole.usage.completion_tokens, 6);
    let text = "";
    for await (const chunk of client().completeStream(params)) text += chunk.choices[0]?.text ?? "";
    assert.equal(text, whole.choices[0]?.text);
  });

  test("models: the served model is listed and routable", NODE, async () => {
    const models = await client().models();
    const served = models.find((m) => m.id === MODEL);
    assert.ok(served, `${MODEL} not in ${models.map((m) => m.id).join(", ")}`);
    assert.equal(served.routable, true);
    assert.equal(models[0]?.routable, true, "routable models come first");
    assert.equal((await client().retrieveModel(MODEL!)).id, MODEL);
    await assert.rejects(
      client().retrieveModel("no-such-model"),
      (e: unknown) => e instanceof NotFound && e.code === "model_not_found",
    );
  });

  test("networkStatus: the typed fields", NODE, async () => {
    const status = await client().networkStatus();
    assert.equal(status.role, "node");
    assert.equal(status.model, MODEL);
    assert.match(status.peer_id, /^12D3KooW/);
    assert.deepEqual(status.layers, [0, status.total_layers]);
    assert.equal(status.stage.model, MODEL);
    assert.ok(status.throughput_tokens_s > 0);
    assert.equal(typeof status.economy.barter.credits, "number");
    assert.ok(Array.isArray(status.generations) && Array.isArray(status.reputation));
    assert.deepEqual(await client().ready(), { ready: true, model: MODEL });
    assert.deepEqual(await client().health(), { status: "ok" });
  });

  test("balance: barter credits, and no HYDRA on a node without a federation", NODE, async () => {
    const balance = await client().balance();
    assert.equal(balance.peer_id, (await client().networkStatus()).peer_id);
    assert.equal(typeof balance.barter.micro_credits, "number");
    assert.equal(balance.barter.decay_per_day, 0.05);
    assert.deepEqual(balance.hydra, { federation: null });
  });

  test("stake and openChannel are refused with the node's typed error, not retried", NODE, async () => {
    // this node has no HYDRA federation: 503 service_unavailable, code no_federation, and a
    // money call is not retried on 503
    const fetch = countingFetch();
    const money = new Client({ baseUrl: URL!, fetch });
    const refused = (e: unknown): boolean => {
      assert.ok(e instanceof ServiceUnavailable && !(e instanceof NoRoute), String(e));
      assert.equal(e.status, 503);
      assert.equal(e.code, "no_federation");
      assert.equal(e.type, "service_unavailable");
      assert.match(e.message, /no HYDRA token federation has answered/);
      return true;
    };
    await assert.rejects(money.stake("1.5"), refused);
    await assert.rejects(money.openChannel((await money.networkStatus()).peer_id, 1), refused);
    assert.deepEqual(
      fetch.seen.map((s) => s.status),
      [503, 200, 503],
    );
    // what the node checks before it looks for a federation: typed 400s naming the field
    await assert.rejects(
      money.unstake(0),
      (e: unknown) => e instanceof HydraAPIError && e.status === 400 && e.param === "amount",
    );
    await assert.rejects(
      money.closeChannel("not-hex"),
      (e: unknown) => e instanceof HydraAPIError && e.code === "invalid_value" && e.param === "id",
    );
  });

  test(
    "a 503 no_route surfaces as NoRoute after the retries",
    needs("HYDRA_SDK_URL", "HYDRA_SDK_UNROUTED"),
    async () => {
      const fetch = countingFetch();
      const unrouted = new Client({ baseUrl: URL!, fetch, maxRetries: 1 });
      await assert.rejects(unrouted.chat({ ...ASK, model: UNROUTED! }), (e: unknown) => {
        assert.ok(e instanceof NoRoute, String(e));
        assert.equal(e.code, "no_route");
        assert.match(e.message, new RegExp(`Models with a route now: .*${MODEL}`));
        return true;
      });
      assert.deepEqual(
        fetch.seen.map((s) => s.status),
        [503, 503],
      );
    },
  );

  test("a 429 is retried after the node's Retry-After", needs("HYDRA_SDK_LIMITED_URL", "HYDRA_SDK_MODEL"), async () => {
    // use up the window (3 requests per 2 s) until the node refuses
    let refusal: Response | undefined;
    for (let i = 0; i < 10 && refusal === undefined; i++) {
      const response = await fetch(`${LIMITED_URL}/v1/models`);
      await response.body?.cancel();
      if (response.status === 429) refusal = response;
    }
    assert.ok(refusal, "the limited node never answered 429");
    const burstRetryAfter = parseRetryAfter(refusal.headers.get("retry-after"));
    assert.ok(
      burstRetryAfter !== null && burstRetryAfter >= 1000 && burstRetryAfter <= 2000,
      `Retry-After ${burstRetryAfter} ms`,
    );

    // a refused request does not count against the window: without retries, the typed 429
    const once = new Client({ baseUrl: LIMITED_URL!, model: MODEL!, maxRetries: 0 });
    await assert.rejects(once.models(), (e: unknown) => {
      assert.ok(e instanceof RateLimited, String(e));
      assert.equal(e.code, "rate_limit_exceeded");
      assert.ok(e.retryAfter !== null && e.retryAfter >= 1 && e.retryAfter <= 2, `retryAfter ${e.retryAfter}`);
      return true;
    });

    const counting = countingFetch();
    const waits: number[] = [];
    const limited = new Client({
      baseUrl: LIMITED_URL!,
      model: MODEL!,
      fetch: counting,
      sleep: (ms, signal) => (waits.push(ms), sleep(ms, signal)),
    });
    const started = performance.now();
    const reply = await limited.chat(ASK);
    const elapsed = performance.now() - started;
    assert.equal(reply.choices.length, 1);
    const statuses = counting.seen.map((s) => s.status);
    assert.equal(statuses[0], 429, `attempts: ${statuses.join(", ")}`);
    assert.equal(statuses.at(-1), 200);
    assert.equal(waits.length, statuses.length - 1);
    counting.seen.slice(0, -1).forEach((refused, i) => {
      const asked = parseRetryAfter(refused.retryAfter);
      assert.ok(asked !== null && waits[i]! >= asked, `waited ${waits[i]} ms for a Retry-After of ${asked} ms`);
    });
    assert.ok(elapsed >= parseRetryAfter(counting.seen[0]!.retryAfter)!, `succeeded after ${elapsed} ms`);
  });
});
