"""A newcomer's first hour against real ``hydra`` processes (the embedded SmolLM2, default
catalog): the seed project's README examples, Ollama's prompt templates, the listings, a
quick start, ``hydra chat`` in a real pseudo-terminal, and a shutdown that ends live streams
properly."""

import io
import json
import signal
import subprocess
import sys
import time

import httpx
import pexpect
import pytest

from tests.swarm import HYDRA, node

pytestmark = pytest.mark.slow

SMOLLM2 = "openhydra-smollm2-135m"
SEED_MODEL = "openhydra-qwen3.5-0.8b"
DEGRADATION = "X-OpenHydra-Degradation-Reason"
# The seed README's four examples, byte for byte (curl -d sends them with no JSON header).
SEED_EXAMPLES = {
    "chat": ("/v1/chat/completions", b"""{
    "model": "openhydra-qwen3.5-0.8b",
    "messages": [{"role": "user", "content": "Explain P2P inference in one sentence."}]
  }"""),
    "stream": ("/v1/chat/completions", b"""{
    "model": "openhydra-qwen3.5-0.8b",
    "messages": [{"role": "user", "content": "Hello"}],
    "stream": true
  }"""),
    "ollama generate": ("/api/generate",
                        b'{"model": "openhydra-qwen3.5-0.8b", "prompt": "Why is the sky blue?"}'),
    "ollama chat": ("/api/chat", b'{"model": "openhydra-qwen3.5-0.8b", "messages": '
                                 b'[{"role": "user", "content": "Hello"}]}'),
}


@pytest.fixture(scope="module")
def api(tmp_path_factory, smollm2_checkpoint):
    proc = node(tmp_path_factory.mktemp("first-hour"), "node", [], "--default-max-tokens", "16",
                "--rate-limit", "100000").start().ready()
    yield proc
    proc.stop()


@pytest.mark.parametrize("example", sorted(SEED_EXAMPLES))
def test_the_seed_readme_examples_degrade_to_the_served_model(api, example):
    path, body = SEED_EXAMPLES[example]
    headers = {"Content-Type": "application/x-www-form-urlencoded"}  # what curl -d sends
    response = httpx.post(f"{api.url}{path}", content=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    reason = response.headers[DEGRADATION]
    assert SEED_MODEL in reason and SMOLLM2 in reason
    text = response.text
    if example == "stream":
        assert text.rstrip().endswith("data: [DONE]")
    elif example.startswith("ollama"):  # NDJSON, streamed by default; the reason in the last line
        last = json.loads(text.strip().splitlines()[-1])
        assert last["done"] and last["degradation_reason"] == reason and last["model"] == SMOLLM2
    else:
        assert response.json()["model"] == SMOLLM2 and response.json()["choices"][0]["message"]["content"]


def test_ollama_generate_applies_the_chat_template(api):
    body = {"model": "smollm2", "prompt": "What is the capital of France?", "stream": False,
            "options": {"temperature": 0}}
    answer = httpx.post(f"{api.url}/api/generate", json=body, timeout=120).json()
    assert "Paris" in answer["response"] and answer["eval_count"] > 0
    raw = httpx.post(f"{api.url}/api/generate", json={**body, "raw": True}, timeout=120).json()
    assert raw["prompt_eval_count"] < answer["prompt_eval_count"]  # no template around it


def test_listings_tell_routable_models_apart(api):
    models = httpx.get(f"{api.url}/v1/models", timeout=30).json()["data"]
    assert models[0] == {**models[0], "id": SMOLLM2, "routable": True}
    assert all(not m["routable"] for m in models[1:]) and len(models) > 1
    tags = httpx.get(f"{api.url}/api/tags", timeout=30).json()["models"]
    assert [t["name"] for t in tags if t["routable"]] == [SMOLLM2]


def test_commands_answer_quickly(api):
    """The first line of ``hydra run`` and ``hydra status`` (a node's whole status) each
    come within a couple of seconds: nothing heavy is imported first."""
    started = time.monotonic()
    status = subprocess.run([*HYDRA, "status", "--api", f"127.0.0.1:{api.http_port}"],  # no scheme
                            capture_output=True, text=True, timeout=60)
    status_s = time.monotonic() - started
    assert status.returncode == 0 and SMOLLM2 in status.stdout, status.stderr
    launch = subprocess.Popen([*HYDRA, "run", "--port", "0", "--api-port", "0", "--home",
                               str(api.home.parent / "launch")], stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        first_line = launch.stderr.readline()
        first_s = time.monotonic() - started
    finally:
        launch.kill()
        launch.wait()
    assert first_line.startswith("hydra: starting a node")
    assert first_s < 3.0 and status_s < 3.0, (first_s, status_s)  # seconds, generous for CI


def interruptible() -> None:
    """Ctrl-C reaches the child as in a terminal, even when the suite itself was started in
    the background by a shell (which makes its children ignore SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def chat_in_a_terminal(api, *flags: str) -> tuple[pexpect.spawn, io.StringIO]:
    """``hydra chat`` in a real pseudo-terminal; everything it prints is kept in the log."""
    log = io.StringIO()
    chat = pexpect.spawn(sys.executable, ["-m", "hydra.cli", "chat", "--api", api.url, *flags],
                         encoding="utf-8", timeout=120, preexec_fn=interruptible)
    chat.logfile_read = log
    chat.expect(">>> ")
    return chat, log


def test_hydra_chat_in_a_terminal(api):
    chat, log = chat_in_a_terminal(api, "--max-tokens", "3", "--temperature", "0")
    try:
        chat.sendline("/help")
        chat.expect("Ctrl-C while a reply streams cancels that reply")
        chat.sendline("/nonsense")
        chat.expect(r"unknown command /nonsense")
        chat.sendline("What is the capital of France?")
        chat.expect(r"\[reply cut at --max-tokens 3\]")
        chat.expect(">>> ")
        chat.sendintr()  # Ctrl-C at the prompt: leave quietly
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert "Traceback" not in log.getvalue() and chat.exitstatus == 0


def test_ctrl_c_cancels_a_reply_in_progress(api):
    chat, log = chat_in_a_terminal(api, "--max-tokens", "400", "--temperature", "0.7")
    try:
        chat.sendline("Write a long story about a dragon who learns to count.")
        chat.expect("count.\r\n")  # the terminal's echo of the question
        chat.expect(r"\w+ \w+ \w+")  # the reply has begun streaming
        chat.sendintr()
        chat.expect(r"\[reply cancelled\]")
        chat.expect(">>> ")
        chat.sendline("/exit")
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert "Traceback" not in log.getvalue() and chat.exitstatus == 0


def test_a_stream_open_at_sigterm_gets_its_terminator(tmp_path, smollm2_checkpoint):
    proc = node(tmp_path, "draining", []).start().ready()
    body = {"model": SMOLLM2, "stream": True, "max_tokens": 2000, "temperature": 0.8,
            "messages": [{"role": "user", "content": "Tell me a very long story."}]}
    lines = []
    try:
        with httpx.stream("POST", f"{proc.url}/v1/chat/completions", json=body, timeout=60) as reply:
            for line in reply.iter_lines():
                if line:
                    lines.append(line)
                if len(lines) == 3:  # streaming: stop the node now
                    proc.proc.send_signal(signal.SIGTERM)
    finally:
        code = proc.stop()
    assert lines[-1] == "data: [DONE]", lines[-3:]
    error = json.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["code"] == "shutting_down" and code == 0
