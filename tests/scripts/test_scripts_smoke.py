"""Every script under scripts/ runs, at tiny sizes, so a benchmark the README quotes cannot
silently stop working. Each is a real run (real processes, hosts, model), only smaller; the
numbers are not judged here, only that the script completes and prints its table, and that
the pipelines agree with the single-process baseline where the script checks it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hydra.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
SMOKE_ARGS = {
    "bench_dht.py": ["--nodes", "4", "--lookups", "3", "--joins", "1"],
    "bench_pipeline.py": [
        "--tokens", "4", "--runs", "1", "--peers", "1", "--streams", "2", "--prefix-runs", "1",
        "--draft-tokens", "3",
    ],
    "bench_privacy.py": ["--tokens", "4", "--runs", "1", "--peers", "1"],
    "bench_api.py": ["--clients", "1", "--tokens", "4"],
    "privacy_attack.py": ["--tokens", "2", "--prompts", "1", "--local-layers", "1", "--sigmas", "0.01"],
    "bench_verify.py": ["--trials", "3", "--decode", "4", "--tokens", "3", "--runs", "1"],
    "bench_economy.py": ["--tokens", "4", "--runs", "1", "--postings", "200"],
    "bench_runtime.py": ["--tokens", "4", "--modes", "none"],
    "bench_wire.py": ["--tokens", "2", "--prompts", "1"],
    "bench_compaction.py": ["--lengths", "96", "--ratios", "2", "--tokens", "4"],
    "bench_backends.py": ["--tokens", "2", "--prefill", "16", "--sessions", "2"],
}
EXPECTED = {  # what each prints when it worked
    "bench_dht.py": ["lookup median", "complete lookups"],
    "bench_pipeline.py": ["1-peer pipeline", "relayed return", "yes", "2 at once", "another question",
                          "repeat a passage"],
    "bench_privacy.py": ["on / off", "same greedy tokens", "yes"],
    "bench_api.py": ["http/direct"],
    "privacy_attack.py": ["nearest embedding", "--local-layers 1"],
    "bench_verify.py": ["requests until flagged", "commitment bytes per token per stage"],
    "bench_economy.py": ["vs unpaid", "ledger postings per second", "events sealed per second"],
    "bench_runtime.py": ["decode tok/s", "perplexity", "weights held MB"],
    "bench_wire.py": ["bytes/token", "float16", "bfloat16"],
    "bench_compaction.py": ["Attention Matching", "truncation", "per 10-block stage", "queries"],
    "bench_backends.py": ["pytorch", "mlx", "vs pytorch", "baseline"],
}
NEEDS_MODEL = {
    "bench_pipeline.py", "bench_privacy.py", "bench_api.py", "privacy_attack.py", "bench_verify.py",
    "bench_economy.py", "bench_runtime.py", "bench_wire.py", "bench_compaction.py", "bench_backends.py",
}


def test_every_script_has_a_smoke_run() -> None:
    assert {p.name for p in SCRIPTS.glob("*.py")} == set(SMOKE_ARGS)


@pytest.mark.parametrize("script", sorted(SMOKE_ARGS))
def test_script_runs(script: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if script in NEEDS_MODEL:
        request.getfixturevalue("smollm2_checkpoint")  # skips, saying why, without the model
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *SMOKE_ARGS[script]],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},  # rich wraps tables to the terminal width
    )
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    for text in EXPECTED[script]:
        assert text in out.stdout, f"{script} printed no {text!r}:\n{out.stdout[-3000:]}"


def test_the_systemd_unit_runs_a_valid_command() -> None:
    """The unit file's ExecStart must parse with today's ``hydra`` flags."""
    unit = (SCRIPTS / "systemd" / "openhydra.service").read_text()
    lines = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1
    command = lines[0].removeprefix("ExecStart=").split()
    assert Path(command[0]).name == "hydra"
    flags = [word for word in command[1:] if not word.startswith("$")]  # the operator's own
    args = build_parser().parse_args(flags)
    assert args.command == "run"

