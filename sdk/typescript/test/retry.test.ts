import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  backoff,
  BadRequest,
  Client,
  ConnectionFailed,
  DEFAULT_RETRY,
  errorFromResponse,
  NoRoute,
  NotFound,
  parseRetryAfter,
  RateLimited,
  retryDelay,
  ServiceUnavailable,
} from "../src/index.js";
import { json, openaiError, recordingSleep, scriptedFetch } from "./support/fake.js";

const MODELS = json({
  object: "list",
  data: [{ id: "tiny", object: "model", created: 0, owned_by: "openhydra", routable: true }],
});
const rateLimited = (retryAfter: string): Response =>
  openaiError(429, "rate_limit_exceeded", "rate limit of 3 requests per 2s exceeded", { "Retry-After": retryAfter });
const noRoute = (): Response => openaiError(503, "no_route", "no peers currently cover all 6 blocks of big");

describe("parseRetryAfter", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");

  test("reads delay-seconds", () => {
    assert.equal(parseRetryAfter("2", now), 2000);
    assert.equal(parseRetryAfter(" 1.5 ", now), 1500);
  });

  test("reads an HTTP date, as a wait from now (never negative)", () => {
    assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:03 GMT", now), 3000);
    assert.equal(parseRetryAfter("Wed, 31 Dec 2025 23:59:00 GMT", now), 0);
  });

  test("absent or unreadable: null", () => {
    assert.equal(parseRetryAfter(null, now), null);
    assert.equal(parseRetryAfter("soon", now), null);
    assert.equal(parseRetryAfter("-1", now), null);
  });
});

describe("retryDelay", () => {
  const limited = (seconds: string | null): RateLimited =>
    errorFromResponse(429, {}, new Headers(seconds === null ? {} : { "Retry-After": seconds })) as RateLimited;
  const unavailable = errorFromResponse(503, { error: { code: "no_route", message: "" } }, new Headers());

  test("honours Retry-After: never sooner, at most 10% later", () => {
    assert.equal(
      retryDelay(limited("2"), 0, "default", DEFAULT_RETRY, () => 0),
      2000,
    );
    assert.equal(
      retryDelay(limited("2"), 0, "default", DEFAULT_RETRY, () => 1),
      2200,
    );
  });

  test("backs off exponentially with jitter on 503, connection failures, and a 429 that names no wait", () => {
    for (const error of [unavailable, new ConnectionFailed("refused"), limited(null)]) {
      assert.equal(
        retryDelay(error, 0, "default", DEFAULT_RETRY, () => 0),
        250,
      );
      assert.equal(
        retryDelay(error, 0, "default", DEFAULT_RETRY, () => 1),
        500,
      );
      assert.equal(
        retryDelay(error, 2, "default", DEFAULT_RETRY, () => 1),
        2000,
      );
    }
    assert.equal(
      backoff(10, DEFAULT_RETRY, () => 1),
      DEFAULT_RETRY.maxDelayMs,
    );
  });

  test("gives up after maxRetries, on other statuses, on a timeout and on a Retry-After too long", () => {
    assert.equal(retryDelay(unavailable, DEFAULT_RETRY.maxRetries, "default", DEFAULT_RETRY), null);
    assert.equal(retryDelay(errorFromResponse(400, {}, new Headers()), 0, "default", DEFAULT_RETRY), null);
    assert.equal(retryDelay(new ConnectionFailed("slow", { timedOut: true }), 0, "default", DEFAULT_RETRY), null);
    assert.equal(retryDelay(limited("3600"), 0, "default", DEFAULT_RETRY), null);
  });

  test("money calls: only 429; probes: never", () => {
    assert.equal(
      retryDelay(limited("1"), 0, "money", DEFAULT_RETRY, () => 0),
      1000,
    );
    assert.equal(retryDelay(unavailable, 0, "money", DEFAULT_RETRY), null);
    assert.equal(retryDelay(new ConnectionFailed("reset"), 0, "money", DEFAULT_RETRY), null);
    assert.equal(retryDelay(limited("1"), 0, "probe", DEFAULT_RETRY), null);
  });
});

describe("Client retries", () => {
  test("a 429 is retried after its Retry-After in seconds", async () => {
    const fetch = scriptedFetch(rateLimited("2"), MODELS);
    const sleep = recordingSleep();
    const models = await new Client({ fetch, sleep }).models();
    assert.equal(models[0]?.id, "tiny");
    assert.equal(fetch.calls.length, 2);
    assert.equal(sleep.waits.length, 1);
    assert.ok(sleep.waits[0]! >= 2000 && sleep.waits[0]! <= 2200, `waited ${sleep.waits[0]} ms`);
  });

  test("a 429 is retried after its Retry-After as an HTTP date", async () => {
    const at = new Date(Date.now() + 3000).toUTCString(); // whole seconds: 2-3 s from now
    const fetch = scriptedFetch(rateLimited(at), MODELS);
    const sleep = recordingSleep();
    await new Client({ fetch, sleep }).models();
    assert.equal(fetch.calls.length, 2);
    assert.ok(sleep.waits[0]! > 1000 && sleep.waits[0]! <= 3300, `waited ${sleep.waits[0]} ms`);
  });

  test("attempts are bounded: a lasting 503 no_route surfaces as NoRoute after maxRetries", async () => {
    const fetch = scriptedFetch(noRoute());
    const sleep = recordingSleep();
    const client = new Client({ fetch, sleep, model: "big" });
    await assert.rejects(client.chat({ messages: [{ role: "user", content: "hi" }] }), (error: unknown) => {
      assert.ok(error instanceof NoRoute && error instanceof ServiceUnavailable);
      assert.equal(error.status, 503);
      assert.equal(error.code, "no_route");
      assert.match(error.message, /no peers currently cover/);
      return true;
    });
    assert.equal(fetch.calls.length, DEFAULT_RETRY.maxRetries + 1);
    assert.equal(sleep.waits.length, DEFAULT_RETRY.maxRetries);
    sleep.waits.forEach((ms, attempt) =>
      assert.ok(ms >= 250 * 2 ** attempt && ms <= 500 * 2 ** attempt, `wait ${attempt}: ${ms} ms`),
    );
  });

  test("maxRetries per client and per call", async () => {
    const fetch = scriptedFetch(noRoute());
    const client = new Client({ fetch, sleep: recordingSleep(), maxRetries: 1, model: "big" });
    await assert.rejects(client.complete({ prompt: "a" }), NoRoute);
    assert.equal(fetch.calls.length, 2);
    await assert.rejects(client.complete({ prompt: "a" }, { maxRetries: 0 }), NoRoute);
    assert.equal(fetch.calls.length, 3);
  });

  test("connection failures are retried, then surface as ConnectionFailed", async () => {
    const fetch = scriptedFetch(new TypeError("fetch failed"), new TypeError("fetch failed"), MODELS);
    await new Client({ fetch, sleep: recordingSleep() }).models();
    assert.equal(fetch.calls.length, 3);
    const down = scriptedFetch(new TypeError("fetch failed"));
    await assert.rejects(
      new Client({ fetch: down, sleep: recordingSleep(), maxRetries: 2 }).models(),
      ConnectionFailed,
    );
    assert.equal(down.calls.length, 3);
  });

  test("400 and 404 are not retried, and carry the server's fields", async () => {
    const bad = json(
      {
        error: {
          message: "'messages' must be a non-empty list",
          type: "invalid_request_error",
          param: "messages",
          code: "invalid_value",
        },
      },
      400,
    );
    const fetch = scriptedFetch(bad);
    await assert.rejects(
      new Client({ fetch, sleep: recordingSleep(), model: "tiny" }).chat({ messages: [] }),
      (error: unknown) => {
        assert.ok(error instanceof BadRequest);
        assert.deepEqual(
          [error.status, error.code, error.param, error.type],
          [400, "invalid_value", "messages", "invalid_request_error"],
        );
        return true;
      },
    );
    assert.equal(fetch.calls.length, 1);
    const missing = scriptedFetch(openaiError(404, "model_not_found", "The model 'nope' does not exist"));
    await assert.rejects(new Client({ fetch: missing, sleep: recordingSleep() }).retrieveModel("nope"), NotFound);
    assert.equal(missing.calls.length, 1);
  });

  test("money calls are retried on 429 only, and carry the operator's token", async () => {
    const account = json({
      hydra: 1,
      staked: 2,
      unbonding: 0,
      unbonding_until: null,
      burned: 0,
      slashed: 0,
      channels: [],
      supply: 3,
      log_length: 4,
    });
    const fetch = scriptedFetch(rateLimited("1"), account);
    const client = new Client({ fetch, sleep: recordingSleep(), moneyToken: "secret" });
    assert.equal((await client.stake("2.5")).staked, 2);
    assert.equal(fetch.calls.length, 2);
    assert.equal(new Headers(fetch.calls[1]!.init.headers).get("authorization"), "Bearer secret");
    assert.equal(fetch.calls[1]!.init.body, JSON.stringify({ amount: "2.5" }));

    const unavailable = scriptedFetch(openaiError(503, null, "no HYDRA token federation has answered yet"));
    const money = new Client({ fetch: unavailable, sleep: recordingSleep(), moneyToken: "secret" });
    await assert.rejects(money.openChannel("12D3KooW", 5), ServiceUnavailable);
    assert.equal(unavailable.calls.length, 1);
    const cut = scriptedFetch(new TypeError("socket hang up"));
    await assert.rejects(new Client({ fetch: cut, sleep: recordingSleep() }).unstake(1), ConnectionFailed);
    assert.equal(cut.calls.length, 1);

    await new Client({ fetch, sleep: recordingSleep(), moneyToken: "secret" }).models();
    assert.equal(new Headers(fetch.calls.at(-1)!.init.headers).get("authorization"), null);
  });

  test("a timed-out attempt is not retried", async () => {
    const hang = scriptedFetch(
      (_url, init) =>
        new Promise<Response>((_resolve, reject) =>
          init.signal?.addEventListener("abort", () => reject(init.signal?.reason)),
        ),
    );
    await assert.rejects(
      new Client({ fetch: hang, timeoutMs: 20 }).models(),
      (error: unknown) => error instanceof ConnectionFailed && error.timedOut,
    );
    assert.equal(hang.calls.length, 1);
  });

  test("the caller's abort ends the wait between attempts", async () => {
    const controller = new AbortController();
    const fetch = scriptedFetch(rateLimited("30"));
    const pending = new Client({ fetch }).models({ signal: controller.signal });
    setTimeout(() => controller.abort(new Error("user gave up")), 20);
    await assert.rejects(pending, /user gave up/);
    assert.equal(fetch.calls.length, 1);
  });
});
