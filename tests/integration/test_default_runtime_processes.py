"""``hydra run`` with no runtime flags, as the README's first command starts it: on this CPU
it serves int4 weights read from the embedded GGUF through compiled decode steps, and
``hydra generate`` in the same runtime prints the node's greedy text."""

import subprocess

import openai
import pytest

from hydra.runtime.compiled import compiler_found
from tests.swarm import DEFAULTS, HYDRA, node

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def default_node(tmp_path_factory, smollm2_checkpoint):
    proc = node(tmp_path_factory.mktemp("default-runtime"), "node", [], "--rate-limit", "100000", *DEFAULTS)
    proc.start().ready(timeout=300)  # compiling 30 blocks: up to a minute or two on 2 cores
    yield proc
    proc.stop()


def test_the_default_runtime_on_a_cpu_is_int4_and_compiled(default_node):
    stage = default_node.get("/v1/network/status")["stage"]
    assert stage["precision"] == "float32+int4"
    assert stage["compiled"] is compiler_found()


def test_hydra_generate_in_the_same_runtime_prints_the_nodes_greedy_text(default_node, tmp_path):
    """Both compile the same spans and read the same codes, so their greedy ids agree bit for
    bit (eager and compiled int4 may part after a near-tie)."""
    done = subprocess.run([*HYDRA, "generate", "--home", str(tmp_path), "--chat", "--max-tokens", "16",
                           "--device", "cpu", "--compile", "on" if compiler_found() else "off", QUESTION],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ai = openai.OpenAI(base_url=f"{default_node.url}/v1", api_key="unused", max_retries=0)
    served = ai.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": QUESTION}],
                                        max_tokens=16, temperature=0)
    assert done.stdout.strip() == served.choices[0].message.content.strip()
