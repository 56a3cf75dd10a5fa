"""Which verifiers may judge which stages: unquantized precisions judge each other (the
catalog's bounds cover float32 against bfloat16), a quantized stage only its own class."""

import pytest

from hydra.coordinator.audit import comparable
from hydra.coordinator.routing import Candidate
from hydra.runtime.precision import precision
from protocols.inference import Hop
from protocols.records import PeerRecord


@pytest.mark.parametrize(
    ("audited", "verifier", "allowed"),
    [
        ("float32", "float32", True),
        ("float32", "bfloat16", True),
        ("float32+int8", "float32+int8", True),
        ("float32+int8", "float32", False),
        ("float32", "float32+int4", False),
        ("float32+int4", "float32+int8", False),
    ],
)
def test_a_quantized_stage_is_judged_by_its_own_class_only(audited, verifier, allowed) -> None:
    assert comparable(audited, verifier) is allowed


def test_records_announce_their_quantization_as_part_of_the_precision() -> None:
    record = PeerRecord(
        peer_id="p", seq=1, issued_at=0.0, expires_at=1.0, addrs=("/ip4/127.0.0.1/tcp/1",),
        version="x", model="m", layer_start=0, layer_end=2, total_layers=2, dtype="float32",
        quantization="int4",
    )
    assert Candidate.from_record(record).dtype == precision("float32", "int4") == "float32+int4"
    assert Candidate(Hop("p", (), 0, 2), dtype=precision("float32", "none")).dtype == "float32"
