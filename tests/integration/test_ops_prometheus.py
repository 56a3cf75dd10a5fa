"""The ops stack under ``scripts/ops/``: a real Prometheus (Debian's package) scrapes a live
node with the shipped scrape config while the node generates, and every query of the shipped
Grafana dashboard returns data from it. ``promtool`` checks the shipped config, and the
compose file validates against the Compose Specification's JSON schema (docker compose
needs an engine this machine does not run; ``tests/data/compose-spec.json`` is the schema
from github.com/compose-spec/compose-spec, Apache-2.0, commit 170098b)."""

import json
import math
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from tests.sdk_nodes import MODEL, tiny_node
from tests.swarm import free_port, wait_until

pytestmark = pytest.mark.slow

OPS = Path(__file__).resolve().parents[2] / "scripts" / "ops"
DASHBOARD = OPS / "grafana" / "dashboards" / "openhydra.json"
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
# what Grafana substitutes: the rate window (several scrapes at the 1 s interval used here)
# and the node picker (all nodes)
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$instance": ".*"}


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])]


def test_the_compose_file_follows_the_compose_specification():
    compose = yaml.safe_load((OPS / "compose.yaml").read_text())
    spec = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    spec.validate(compose)
    with pytest.raises(jsonschema.ValidationError):  # the schema does catch a malformed file
        spec.validate({"services": {"node": {"ports": "8080", "restart": 3}}})
    assert {"node", "prometheus", "grafana"} <= set(compose["services"])
    build = compose["services"]["node"]["build"]
    assert (OPS / build["context"] / build["dockerfile"]).is_file()
    for service in compose["services"].values():  # every file a service mounts is in the repo
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (OPS / source).exists(), source


def test_the_dashboard_is_provisioned_with_a_prometheus_source():
    source = yaml.safe_load((OPS / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"
    provider = yaml.safe_load((OPS / "grafana/provisioning/dashboards/openhydra.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    assert len(dashboard_queries()) >= 20


@pytest.fixture(scope="module")
def tools():
    if PROMETHEUS is None or PROMTOOL is None:
        pytest.skip("Debian's prometheus package is not installed (scripts/setup.sh --test installs it)")


def test_promtool_accepts_the_shipped_scrape_config(tools):
    checked = subprocess.run([PROMTOOL, "check", "config", str(OPS / "prometheus.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def generate_until(url: str, stop: threading.Event) -> None:
    """Completions one after another, so every rate and latency series moves."""
    body = {"model": MODEL, "prompt": "abc", "max_tokens": 8, "temperature": 0, "stream": True}
    while not stop.is_set():
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
            for _ in response.iter_lines():
                pass


def query(prometheus: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_every_dashboard_query_returns_data_from_a_live_node(tools, tmp_path):
    node = tiny_node(tmp_path, "scraped", "--rate-limit", "100000").start()
    prometheus = None
    stop = threading.Event()
    try:
        node.ready(timeout=120)
        config = yaml.safe_load((OPS / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{node.http_port}"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
        )
        url = f"http://127.0.0.1:{port}"
        traffic = threading.Thread(target=generate_until, args=(node.url, stop), daemon=True)
        traffic.start()
        assert wait_until(lambda: query_ok(url, "sum(hydra_tokens_generated_total) > 0"), 60), \
            (tmp_path / "prometheus.log").read_text()[-2000:]
        time.sleep(5)  # a few more scrapes while it generates: every rate has two samples
        empty = []
        for title, expr in dashboard_queries():
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            values = [float(series["value"][1]) for series in query(url, expr)]
            if not values or not any(math.isfinite(v) for v in values):
                empty.append(f"{title}: {expr} -> {values}")
        assert not empty, "\n".join(empty)
    finally:
        stop.set()
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        node.stop()


def query_ok(prometheus: str, expr: str) -> bool:
    try:
        return bool(query(prometheus, expr))
    except (httpx.HTTPError, ValueError):
        return False
