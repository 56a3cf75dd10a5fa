"""``hydra chat``: a terminal chat with a running node, streaming tokens as they arrive.

It speaks the node's OpenAI-compatible API, so it also works against any such server. The
conversation is kept client-side and sent whole each turn. Commands start with ``/`` and
never reach the model (``/help`` lists them). Ctrl-C during a reply cancels that reply;
Ctrl-C or Ctrl-D at the prompt leaves."""

import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

HELP = """commands:
  /help    this list
  /reset   forget the conversation (keeps the system prompt)
  /exit    leave (also /quit, /bye, Ctrl-D, or Ctrl-C at the prompt)
Ctrl-C while a reply streams cancels that reply."""
EXIT = ("/exit", "/quit", "/bye")
CUT_MARK = " […]"


@dataclass
class Reply:
    text: str
    finish_reason: str | None


def stream_reply(client: httpx.Client, api: str, body: dict[str, Any], out: TextIO) -> Reply:
    """POST one streaming chat completion; print and return the assistant's text."""
    reply, finish = [], None
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
                finish = choice.get("finish_reason") or finish
                reply.append(text)
                out.write(text)
                out.flush()
    return Reply("".join(reply), finish)


def _error_message(text: str, status: int) -> str:
    try:
        return f"{status}: {json.loads(text)['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{status}: {text[:200]}"


def default_model(client: httpx.Client, api: str) -> str | None:
    """The model the node runs by default (its ``/readyz`` names it); None if none answers."""
    try:
        return client.get(f"{api}/readyz").json()["model"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"no OpenHydra node answers at {api} ({exc}); start one with "
                         "`hydra run`, or pass --api\n")
        return None


class Chat:
    def __init__(self, client: httpx.Client, api: str, model: str, system: str | None,
                 params: dict[str, Any], out: TextIO) -> None:
        self.client, self.api, self.model, self.params, self.out = client, api, model, params, out
        self.start: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.history = list(self.start)

    def command(self, text: str) -> bool:
        """Handle a ``/command`` locally; False when it asks to leave."""
        if text in EXIT:
            return False
        if text == "/reset":
            self.history = list(self.start)
            self.out.write("[conversation reset]\n")
        elif text == "/help":
            self.out.write(HELP + "\n")
        else:
            self.out.write(f"[unknown command {text.split()[0]}; /help lists the commands]\n")
        return True

    def ask(self, text: str) -> None:
        """One turn: stream the reply; Ctrl-C cancels it and forgets the question."""
        self.history.append({"role": "user", "content": text})
        body = {"model": self.model, "messages": self.history, "stream": True, **self.params}
        try:
            reply = stream_reply(self.client, self.api, body, self.out)
        except KeyboardInterrupt:
            self.history.pop()
            self.out.write("\n[reply cancelled]\n")
            return
        except (RuntimeError, httpx.HTTPError) as exc:
            self.history.pop()
            self.out.write(f"\n[error: {exc}]\n")
            return
        if reply.finish_reason == "length":
            limit = self.params.get("max_tokens")
            self.out.write(f"{CUT_MARK}\n[reply cut at --max-tokens {limit}]\n")
        else:
            self.out.write("\n")
        self.history.append({"role": "assistant", "content": reply.text})


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
        model = model or default_model(client, api)
        if model is None:
            return 1
        out.write(f"chatting with {model} at {api} (/help for commands, /exit to leave)\n")
        chat = Chat(client, api, model, system, params, out)
        while True:
            out.write(">>> ")
            out.flush()
            try:
                line = stdin.readline()
            except KeyboardInterrupt:  # Ctrl-C at the prompt: leave quietly
                line = ""
            if not line:
                out.write("\n")
                return 0
            text = line.strip()
            if text.startswith("/"):
                if not chat.command(text):
                    return 0
            elif text:
                chat.ask(text)
