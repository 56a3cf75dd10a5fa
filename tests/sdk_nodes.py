"""Live nodes serving a tiny random Llama, for the SDK and ops tests: real ``hydra run``
processes on 127.0.0.1, with a catalog ($HYDRA_CATALOG) of two models.

- ``url``: a node serving all of ``MODEL``; chat and completions stream from it.
- ``limited_url``: the same, allowing ``LIMIT`` requests per ``WINDOW_S`` seconds per client,
  so a burst gets 429 with a ``Retry-After`` of a second or two.
- ``UNROUTED``: a catalog model nobody serves and with nothing smaller to degrade to: asking
  for it gets 503 ``no_route``."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer

from tests.swarm import HydraProcess, node
from tests.tiny_models import save_tiny_model, tiny_catalog, tiny_llama_config

MODEL, UNROUTED = "tiny", "tiny-unserved"
# the byte tokenizer has no chat template of its own; chat requests need one
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
LIMIT, WINDOW_S = 3, 2.0


@dataclass(frozen=True)
class SdkNodes:
    url: str
    limited_url: str
    model: str = MODEL
    unrouted: str = UNROUTED


def tiny_node(tmp: Path, name: str, *extra: str) -> HydraProcess:
    """A ``hydra run`` process (not started) serving all of ``MODEL``, with chat; its
    checkpoint and catalog are made once per ``tmp``."""
    checkpoint, catalog = tmp / "tiny", tmp / "catalog.json"
    if not catalog.exists():
        save_tiny_model(tiny_llama_config(), checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(checkpoint)
        tiny_catalog(catalog, MODEL, {MODEL: 2_000, UNROUTED: 1_000})
    proc = node(tmp, name, [], "--model", MODEL, "--model-path", str(checkpoint), "--draft-tokens", "0",
                *extra)
    proc.env["HYDRA_CATALOG"] = str(catalog)
    return proc


@contextmanager
def sdk_nodes(tmp: Path) -> Iterator[SdkNodes]:
    procs = [
        tiny_node(tmp, "open", "--rate-limit", "100000"),
        tiny_node(tmp, "limited", "--rate-limit", str(LIMIT), "--rate-window", str(WINDOW_S)),
    ]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.ready(timeout=120)
        yield SdkNodes(procs[0].url, procs[1].url)
    finally:
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.stop()
