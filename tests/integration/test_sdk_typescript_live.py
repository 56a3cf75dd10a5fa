"""The TypeScript SDK (sdk/typescript) against live nodes: its ``npm test`` (the unit tests and the
live ones) with the nodes of ``tests/sdk_nodes.py`` named in its environment. Every live test
must run and pass: one skipped means the environment did not reach it."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sdk_nodes import sdk_nodes

pytestmark = pytest.mark.slow

SDK = Path(__file__).resolve().parents[2] / "sdk" / "typescript"
NPM_TEST_TIMEOUT_S = 300  # the build and every test take ~15 s; a hung stream must not hang CI
LIVE_TESTS = 8  # in sdk/typescript/test/live.test.ts
# Node's summary: TAP ("# pass 44") when its output is not a terminal; its spec reporter (newer
# Nodes) marks lines with an information sign (U+2139) instead, and passed tests with a check mark
SUMMARY = re.compile(r"^(?:#|\u2139) (tests|pass|fail|cancelled|skip(?:ped)?|todo) (\d+)\s*$", re.MULTILINE)
LIVE_SUITE_PASSED = re.compile(r"^(?:ok \d+ - |\u2714 )live node\b", re.MULTILINE)


def summary(output: str) -> dict[str, int]:
    """The run's totals (the last of each: the summary comes at the end); "skip" read as "skipped"."""
    return {"skipped" if name == "skip" else name: int(count) for name, count in SUMMARY.findall(output)}


def test_typescript_sdk_against_live_nodes(tmp_path):
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: the TypeScript SDK's tests need Node.js 20+ and npm")
    if not (SDK / "node_modules").is_dir():
        pytest.skip("sdk/typescript/node_modules is absent: scripts/setup.sh --test runs npm ci there")
    with sdk_nodes(tmp_path) as nodes:
        env = {
            **os.environ,
            "HYDRA_SDK_URL": nodes.url,
            "HYDRA_SDK_LIMITED_URL": nodes.limited_url,
            "HYDRA_SDK_MODEL": nodes.model,
            "HYDRA_SDK_UNROUTED": nodes.unrouted,
        }
        run = subprocess.run(["npm", "test"], cwd=SDK, env=env, capture_output=True, text=True,
                             timeout=NPM_TEST_TIMEOUT_S)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    totals = summary(output)
    assert totals.get("fail") == 0 and totals.get("cancelled") == 0, output[-8000:]
    assert totals.get("skipped") == 0, f"live tests skipped:\n{output[-8000:]}"
    assert totals.get("pass", 0) >= LIVE_TESTS, totals
    assert LIVE_SUITE_PASSED.search(output), f"the live suite did not pass:\n{output[-8000:]}"
