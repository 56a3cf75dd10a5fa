"""``hydra run`` with no runtime flags, as the README's first command starts it: on this CPU
it serves int4 weights read from the embedded GGUF through compiled decode steps, and
answers the README's question. (That a compiled int4 pipeline gives the tokens of the same
runtime in one process is ``test_pipeline_exactness``'s.)"""

import openai
import pytest

from hydra.runtime.compiled import compiler_found
from tests.swarm import DEFAULTS, node

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_node(tmp_path_factory, smollm2_checkpoint):
    proc = node(tmp_path_factory.mktemp("default-runtime"), "node", [], *DEFAULTS)
    proc.start().ready(timeout=300)  # compiling 30 blocks: up to a minute or two on 2 cores
    yield proc
    proc.stop()


def test_the_default_runtime_on_a_cpu_is_int4_and_compiled(default_node):
    stage = default_node.get("/v1/network/status")["stage"]
    assert stage["precision"] == "float32+int4"
    assert stage["compiled"] is compiler_found()


def test_the_default_runtime_answers_the_readmes_question(default_node):
    """Greedy, as the README shows; the first token is a near-tie (0.08 apart in float32) that
    the int8 head's bfloat16 output used to round into a tie, and lose."""
    ai = openai.OpenAI(base_url=f"{default_node.url}/v1", api_key="unused", max_retries=0)
    answer = ai.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12, temperature=0,
    )
    assert "Paris" in answer.choices[0].message.content
