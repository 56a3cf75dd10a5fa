"""The fuzz harness (tests/fuzz_harness.py) on a CI budget: 1,500 hostile messages on each
libp2p protocol (DHT, inference, verify, receipt, channel, token log) and 1,500 hostile HTTP
requests against a live node; the full 10,000-each run is ``python -m tests.fuzz_harness``."""

from tests.fuzz_harness import run
from tests.tiny_models import save_tiny_model, tiny_llama_config

BUDGET = 1500


async def test_hostile_messages_and_requests_never_break_the_node(tmp_path):
    checkpoint = save_tiny_model(tiny_llama_config(), tmp_path / "tiny-llama")
    report = await run(BUDGET, BUDGET, checkpoint)
    for protocol in ("kad", "inference", "verify", "receipt", "channel", "tokenlog"):
        answers = report.replies[protocol]
        assert sum(answers.values()) == BUDGET
        assert answers["bad_msgpack"] > BUDGET // 20  # the mutations reach the decoder...
        assert answers["bad_field"] > BUDGET // 20  # ...and the schema checks
    assert sum(report.http.values()) == BUDGET
    assert any(400 <= status < 500 for status in report.http)
