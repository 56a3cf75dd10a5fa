// Server-sent events over a byte stream, per the WHATWG event-stream rules: lines end in CRLF,
// LF or CR, and a network chunk may split a line, a CRLF pair or a UTF-8 character anywhere.

export interface ServerSentEvent {
  /** "message" unless the event named one. */
  event: string;
  /** The event's data lines joined with "\n". */
  data: string;
  id: string | undefined;
}

/** Splits decoded text into lines, keeping a partial line (and a CR that may be half a CRLF)
 *  until the next chunk. */
export class LineSplitter {
  private rest = "";
  private afterCR = false;

  push(text: string): string[] {
    if (text === "") return [];
    if (this.afterCR && text.charCodeAt(0) === 0x0a) text = text.slice(1);
    this.afterCR = false;
    const buffer = this.rest + text;
    const lines: string[] = [];
    let start = 0;
    for (let i = 0; i < buffer.length; i++) {
      const c = buffer.charCodeAt(i);
      if (c !== 0x0a && c !== 0x0d) continue;
      lines.push(buffer.slice(start, i));
      if (c === 0x0d) {
        if (i + 1 === buffer.length) this.afterCR = true;
        else if (buffer.charCodeAt(i + 1) === 0x0a) i++;
      }
      start = i + 1;
    }
    this.rest = buffer.slice(start);
    return lines;
  }
}

/** Assembles events from lines; `line` returns an event when a blank line dispatches one. */
export class EventBuilder {
  private data: string[] = [];
  private event = "";
  private id: string | undefined;

  line(line: string): ServerSentEvent | null {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    return null; // "retry" and unknown fields: nothing a one-shot client uses
  }

  private dispatch(): ServerSentEvent | null {
    const data = this.data;
    const event = this.event || "message";
    this.data = [];
    this.event = "";
    if (data.length === 0) return null;
    return { event, data: data.join("\n"), id: this.id };
  }
}

/** The events of an event stream. An event not ended by a blank line when the stream ends is
 *  dropped, as the standard says: it may be cut short. Breaking out of the loop cancels the stream. */
export async function* parseSSE(stream: ReadableStream<Uint8Array>): AsyncGenerator<ServerSentEvent, void, undefined> {
  const reader = stream.getReader();
  const decoder = new TextDecoder("utf-8"); // strips a leading BOM; `stream: true` keeps split characters
  const lines = new LineSplitter();
  const builder = new EventBuilder();
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
      for (const line of lines.push(text)) {
        const event = builder.line(line);
        if (event !== null) yield event;
      }
      if (done) break;
    }
    finished = true;
  } finally {
    // the consumer left early or reading failed: close the connection (the node then cancels
    // the generation), without waiting on it, so leaving a loop never blocks on the network
    if (!finished) reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
