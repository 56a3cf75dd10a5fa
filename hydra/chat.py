"""``hydra chat``: a terminal chat with a running node, streaming tokens as they arrive.

It speaks the node's OpenAI-compatible API, so it also works against any such server. The
conversation is kept client-side and sent whole each turn. ``/exit`` (or Ctrl-D) leaves,
``/reset`` forgets the conversation."""

import json
import sys
from typing import Any, TextIO

import httpx


def stream_reply(client: httpx.Client, api: str, body: dict[str, Any], out: TextIO) -> str:
    """POST one streaming chat completion; print and return the assistant's text."""
    reply = []
    with client.stream("POST", f"{api}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(_error_message(response.text, response.status_code))
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            if "error" in chunk:
                raise RuntimeError(chunk["error"].get("message", "error"))
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content") or ""
                reply.append(text)
                out.write(text)
                out.flush()
    out.write("\n")
    return "".join(reply)


def _error_message(text: str, status: int) -> str:
    try:
        return f"{status}: {json.loads(text)['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{status}: {text[:200]}"


def run_chat(
    api: str,
    model: str | None,
    system: str | None,
    params: dict[str, Any],
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> int:
    api = api.rstrip("/")
    with httpx.Client(timeout=httpx.Timeout(10.0, read=300.0)) as client:
        if model is None:  # the model the node runs by default (its /readyz names it)
            try:
                model = client.get(f"{api}/readyz").json()["model"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                sys.stderr.write(f"no OpenHydra node answers at {api} ({exc}); start one with "
                                 "`hydra run`, or pass --api\n")
                return 1
        out.write(f"chatting with {model} at {api} (/exit to leave, /reset to start over)\n")
        history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        while True:
            out.write(">>> ")
            out.flush()
            line = stdin.readline()
            if not line:
                out.write("\n")
                return 0
            text = line.strip()
            if text in ("/exit", "/quit", "/bye"):
                return 0
            if text == "/reset":
                history = history[:1] if system else []
                out.write("[conversation reset]\n")
                continue
            if not text:
                continue
            history.append({"role": "user", "content": text})
            body = {"model": model, "messages": history, "stream": True, **params}
            try:
                history.append({"role": "assistant", "content": stream_reply(client, api, body, out)})
            except (RuntimeError, httpx.HTTPError) as exc:
                history.pop()
                out.write(f"\n[error: {exc}]\n")
