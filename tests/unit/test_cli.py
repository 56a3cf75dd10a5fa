"""hydra.cli: flag parsing, and how a command reports what went wrong."""

import signal
import subprocess
import sys

import pytest

from hydra import cli
from hydra.cli import build_parser, main, parse_layers
from hydra.config import NODE, SIGNPOST
from hydra.errors import ConfigError


def test_parse_layers():
    assert parse_layers("0:10") == (0, 10)
    for bad in ("10", "5:5", "a:b", "-1:3", "3:1"):
        with pytest.raises(ConfigError):
            parse_layers(bad)


def test_a_hydra_error_prints_one_line_and_exits_with_its_code(tmp_path, capsys):
    assert main(["id", "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hydra: error: no identity at") and "\n" not in err


def test_a_hydra_error_inside_a_nursery_is_reported_the_same(monkeypatch, capsys):
    def fails_in_a_nursery(args):
        raise ExceptionGroup("nursery", [ConfigError("bad --thing")])

    monkeypatch.setattr(cli, "cmd_id", fails_in_a_nursery)
    assert main(["id"]) == 2
    assert capsys.readouterr().err.strip() == "hydra: error: bad --thing"


def test_a_bug_keeps_its_traceback(monkeypatch):
    """A ``KeyError`` from a bug is not a user error: it must not print as one."""

    def buggy(args):
        return {}["missing"]

    monkeypatch.setattr(cli, "cmd_id", buggy)
    with pytest.raises(KeyError):
        main(["id"])


def test_flag_defaults_come_from_the_config():
    run = build_parser().parse_args(["run"])
    assert (run.port, run.api_port, run.host) == (NODE.port, NODE.api_port, NODE.host)
    assert run.cache_gb * 2**30 == NODE.stage_limits.cache_bytes
    assert run.max_sessions == NODE.stage_limits.max_sessions
    assert run.max_batch == NODE.stage_limits.max_batch and run.batch_window_ms is None
    assert run.draft_tokens == NODE.draft_tokens > 0
    assert (run.rate_limit, run.default_max_tokens) == (NODE.api.rate_limit, NODE.api.default_max_tokens)
    discovery = NODE.discovery
    assert (run.work_bits, run.announce_interval) == (discovery.work_bits, discovery.announce_interval)
    signpost = build_parser().parse_args(["signpost"])
    assert (signpost.port, signpost.http_port) == (SIGNPOST.port, SIGNPOST.http_port)


def test_relayed_return_reaches_the_privacy_config():
    assert not cli._privacy(build_parser().parse_args(["run"])).relayed_return
    assert not NODE.privacy.relayed_return  # direct return (N+1 messages) unless asked
    assert cli._privacy(build_parser().parse_args(["run", "--relayed-return"])).relayed_return


def test_batching_flags_reach_the_stage_limits_and_bad_ones_are_refused():
    args = build_parser().parse_args(["run", "--max-batch", "4", "--batch-window-ms", "2"])
    limits = cli.stage_limits_from(args)
    assert (limits.max_batch, limits.batch_window) == (4, 0.002)
    for bad in (["--max-batch", "0"], ["--batch-window-ms", "-1"], ["--batch-window-ms", "nan"]):
        with pytest.raises(ConfigError):
            cli.stage_limits_from(build_parser().parse_args(["run", *bad]))


def test_status_summarises_batching_the_prefix_cache_and_compactions():
    stage = {"batching": {"max_batch": 16, "batches": 40, "mean_rows": 3.5, "largest": 8},
             "prefix_cache": {"blocks": 12, "bytes": 3 * 2**20, "kept": 12, "reused": 30},
             "compactions": 5}
    rows = dict(cli.stage_summary(stage))
    assert rows["batching"] == "40 batches, 3.5 rows on average, 8 at most (cap 16)"
    assert rows["prefix cache"] == "12 blocks (3.0 MB), 30 reused"
    assert rows["kv compaction"] == "5 compactions of sessions' caches"
    assert cli.stage_summary({"prefix_cache": None}) == []


def test_status_says_where_the_node_moved_or_could_move():
    moved = {"enabled": True, "could": None, "moves": [{"from": "a", "to": "b", "at": 0.0}]}
    assert cli.promotion_summary(moved) == [("promotion", "moved from a to b, which the swarm lacked")]
    could = {"enabled": False, "could": "b", "moves": []}
    assert "could move to b" in cli.promotion_summary(could)[0][1]
    assert cli.promotion_summary({"enabled": True, "could": None, "moves": []}) == []
    assert not cli.build_parser().parse_args(["run"]).no_promote
    assert cli.build_parser().parse_args(["run", "--no-promote"]).no_promote


def test_dht_only_commands_never_load_torch():
    """``hydra id``, ``keygen``, ``status`` and ``signpost`` start in a moment: importing the
    CLI (and parsing its defaults) must not pull in torch."""
    code = "import sys, hydra.cli; hydra.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_urls_without_a_scheme_get_http():
    assert cli.with_scheme("127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert cli.with_scheme("https://node.example/") == "https://node.example"


def test_signals_still_queued_when_shutdown_ends_do_not_kill_the_process():
    """A burst of signals at shutdown (a supervisor's SIGTERM, then Ctrl-C) leaves some queued
    when the signal receiver closes; they must not come back as a KeyboardInterrupt or a -15."""
    script = """
import os, signal, trio
from hydra.cli import _until_signal

async def main(stopping):
    print("ready", flush=True)
    await stopping.wait()
    for _ in range(3):  # queued while the receiver is still open
        os.kill(os.getpid(), signal.SIGTERM)

trio.run(_until_signal, main, lambda: True)
print("clean exit", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "clean exit" in out, (proc.returncode, err[-2000:])
