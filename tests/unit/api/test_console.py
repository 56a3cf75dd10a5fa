"""hydra.api.console in process: coverage and gaps from records, the swarm view's contents,
and the page's script finding every element it writes to."""

import re
from types import SimpleNamespace

from hydra.api.console import FILES, ConsoleView, gaps, model_coverage
from hydra.models.catalog import load_catalog
from hydra.verification.reputation import Reputation
from tests.factories import keypair, record

SMOLLM2 = "openhydra-smollm2-135m"


def test_gaps_are_the_ranges_nobody_serves():
    assert gaps([1, 0, 0, 2, 0]) == [[1, 3], [4, 5]]
    assert gaps([1, 1]) == []
    assert gaps([0, 0]) == [[0, 2]]


def test_coverage_counts_peers_per_block_and_lists_the_always_shown_model():
    catalog = load_catalog()
    records = [record(keypair(), model=SMOLLM2, layer_start=0, layer_end=20, total_layers=30),
               record(keypair(), model=SMOLLM2, layer_start=10, layer_end=30, total_layers=30)]
    (smollm2,) = model_coverage(records, catalog, set())
    assert smollm2["coverage"] == [1] * 10 + [2] * 10 + [1] * 10 and smollm2["complete"]
    nobody = {m["id"]: m for m in model_coverage([], catalog, {SMOLLM2})}
    assert nobody[SMOLLM2]["gaps"] == [[0, 30]] and not nobody[SMOLLM2]["complete"]


def test_a_record_for_a_model_outside_the_catalog_or_of_another_size_covers_nothing():
    catalog = load_catalog()
    records = [record(keypair(), model="made-up", layer_start=0, layer_end=4, total_layers=4),
               record(keypair(), model=SMOLLM2, layer_start=0, layer_end=30, total_layers=31)]
    (smollm2,) = model_coverage(records, catalog, set())
    assert smollm2["gaps"] == [[0, 30]]


def test_the_swarm_view_names_each_peers_blocks_and_reputation(tmp_path):
    local = SimpleNamespace(model_id=SMOLLM2)
    coordinator = SimpleNamespace(local=local, reputation=Reputation(tmp_path / "reputation.sqlite"))
    view = ConsoleView(None, dict, load_catalog(), coordinator)  # type: ignore[arg-type]
    peer = record(keypair(), model=SMOLLM2, layer_start=5, layer_end=9, total_layers=30, throughput=12.34)
    swarm = view.swarm_of([peer])
    (shown,) = swarm["peers"]
    assert (shown["peer_id"], shown["layers"], shown["throughput"]) == (peer.peer_id, [5, 9], 12.3)
    assert 0 < shown["reputation"] <= 1
    assert swarm["models"][0]["gaps"] == [[0, 5], [9, 30]]


def test_every_element_the_script_writes_to_is_on_the_page():
    script = (FILES / "console.js").read_text()
    page = (FILES / "index.html").read_text()
    wanted = set(re.findall(r'\$\("([\w-]+)"\)', script))
    assert wanted, "the script looks elements up with $(...)"
    assert wanted <= set(re.findall(r'id="([\w-]+)"', page))


def test_a_signposts_swarm_view_scores_nobody_and_lists_only_announced_models():
    view = ConsoleView(None, dict, load_catalog())  # type: ignore[arg-type]
    assert view.swarm_of([]) == {"peers": [], "models": []}
    peer = record(keypair(), model=SMOLLM2, layer_start=0, layer_end=30, total_layers=30)
    swarm = view.swarm_of([peer])
    assert swarm["peers"][0]["reputation"] is None and swarm["models"][0]["complete"]
