import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ConnectionFailed, parseSSE, type ServerSentEvent, StreamError } from "../src/index.js";
import { payloads } from "../src/stream.js";
import { byteStream } from "./support/fake.js";

async function collect(parts: (string | Uint8Array)[]): Promise<ServerSentEvent[]> {
  const events: ServerSentEvent[] = [];
  for await (const event of parseSSE(byteStream(parts))) events.push(event);
  return events;
}

const encoder = new TextEncoder();

// CRLF, LF and CR line ends, a comment, a named event, multi-line data, and characters of
// two, three and four UTF-8 bytes: a split anywhere must not change a thing.
const WIRE =
  ": keep-alive\r\n" +
  'data: {"text": "café"}\r\n\r\n' +
  "event: error\ndata: line one\ndata:line two\n\n" +
  "id: 7\rdata: €🐍\r\r" +
  "data: [DONE]\n\n";

const EXPECTED: ServerSentEvent[] = [
  { event: "message", data: '{"text": "café"}', id: undefined },
  { event: "error", data: "line one\nline two", id: undefined },
  { event: "message", data: "€🐍", id: "7" },
  { event: "message", data: "[DONE]", id: "7" },
];

describe("parseSSE", () => {
  test("reads a whole stream", async () => {
    assert.deepEqual(await collect([WIRE]), EXPECTED);
  });

  test("gives the same events whatever byte two chunks split at", async () => {
    const bytes = encoder.encode(WIRE);
    for (let at = 0; at <= bytes.length; at++) {
      const events = await collect([bytes.slice(0, at), bytes.slice(at)]);
      assert.deepEqual(events, EXPECTED, `split at byte ${at}`);
    }
  });

  test("gives the same events one byte at a time, with empty chunks between", async () => {
    const bytes = encoder.encode(WIRE);
    const parts: Uint8Array[] = [];
    for (const byte of bytes) parts.push(new Uint8Array([byte]), new Uint8Array(0));
    assert.deepEqual(await collect(parts), EXPECTED);
  });

  test("a CRLF split between chunks is one line end, not two", async () => {
    // read as CR then LF, the blank line would end the event after "a"
    assert.deepEqual(await collect(["data: a\r", "\ndata: b\r\n\r\n"]), [
      { event: "message", data: "a\nb", id: undefined },
    ]);
  });

  test("drops an event the stream ends in the middle of, and strips a BOM", async () => {
    assert.deepEqual(await collect(["\uFEFFdata: whole\n\n", "data: cut sh"]), [
      { event: "message", data: "whole", id: undefined },
    ]);
  });

  test("stops reading and cancels the stream when the consumer leaves", async () => {
    const stream = byteStream(["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"]);
    for await (const event of parseSSE(stream)) {
      assert.equal(event.data, "1");
      break;
    }
    assert.equal(stream.cancelled, true);
  });
});

describe("payloads", () => {
  const response = new Response(null, { status: 200 });

  async function all(wire: string[]): Promise<unknown[]> {
    const out: unknown[] = [];
    for await (const item of payloads<unknown>(parseSSE(byteStream(wire)), response)) out.push(item);
    return out;
  }

  test("stops at data: [DONE], whatever follows", async () => {
    assert.deepEqual(await all(['data: {"a": 1}\n\ndata: [DO', "NE]\n\n", 'data: {"a": 2}\n\n']), [{ a: 1 }]);
  });

  test("an end without [DONE] is a cut connection", async () => {
    await assert.rejects(all(['data: {"a": 1}\n\n']), ConnectionFailed);
  });

  test("the node's error payload after the stream began is a StreamError with its code", async () => {
    const error = {
      error: { message: "this node is shutting down", type: "service_unavailable", param: null, code: "shutting_down" },
    };
    const seen: unknown[] = [];
    await assert.rejects(
      (async () => {
        for await (const item of payloads<unknown>(
          parseSSE(byteStream(['data: {"a": 1}\n\n', `data: ${JSON.stringify(error)}\n\n`, "data: [DONE]\n\n"])),
          response,
        )) {
          seen.push(item);
        }
      })(),
      (e: unknown) =>
        e instanceof StreamError && e.code === "shutting_down" && e.type === "service_unavailable" && e.status === 200,
    );
    assert.deepEqual(seen, [{ a: 1 }]);
  });
});
