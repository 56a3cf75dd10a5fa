"""Real processes for integration tests: ``hydra signpost`` / ``hydra run`` on 127.0.0.1."""

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.factories import TEST_WORK_BITS

HYDRA = [sys.executable, "-m", "hydra.cli"]
WORK = ["--work-bits", str(TEST_WORK_BITS)]
# test nodes compute in float32, uncompiled: exact against in-process references, and ready in
# seconds instead of after a compile; a test wanting the defaults passes them (the last wins)
EXACT = ["--quantization", "none", "--compile", "off", "--wire-dtype", "float32"]
NODES_READY_S = 150.0  # for a swarm's nodes started together (one alone is ready in ~20 s)
DEFAULTS = ["--quantization", "auto", "--compile", "auto", "--wire-dtype", "auto"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peer_id_of(home: Path) -> str:
    out = subprocess.run([*HYDRA, "keygen", "--home", str(home)], capture_output=True, text=True)
    out.check_returncode()
    return out.stdout.strip()


@dataclass
class HydraProcess:
    """One ``hydra`` subprocess; its HTTP port answers /health once it is ready."""

    args: list[str]
    home: Path
    http_port: int
    p2p_port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the process
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @functools.cached_property
    def peer_id(self) -> str:
        return peer_id_of(self.home)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "HydraProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*HYDRA, *self.args], stdout=out, stderr=out, env=env)
        return self

    def ready(self, timeout: float = 60.0) -> "HydraProcess":
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hydra exited {self.proc.returncode}:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(healthy, timeout, interval=0.1):
            raise TimeoutError(f"hydra not ready after {timeout}s:\n{self.output()}")
        return self

    def get(self, path: str, **params) -> dict:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"hydra ignored {sig!r} for {timeout}s:\n{self.output()}") from None
        return self.proc.returncode


def signpost(tmp: Path, name: str = "signpost", *extra: str) -> HydraProcess:
    home, http, p2p = tmp / name, free_port(), free_port()
    args = ["signpost", "--home", str(home), "--host", "127.0.0.1", "--port", str(p2p),
            "--http-port", str(http), *WORK, *extra]
    return HydraProcess(args, home, http, p2p, tmp / f"{name}.log")


def node(tmp: Path, name: str, bootstrap: list[str], *extra: str) -> HydraProcess:
    home, http, p2p = tmp / name, free_port(), free_port()
    args = ["run", "--home", str(home), "--port", str(p2p), "--api-port", str(http), *WORK, *EXACT, *extra]
    for addr in bootstrap:
        args += ["--bootstrap", addr]
    return HydraProcess(args, home, http, p2p, tmp / f"{name}.log")


@contextmanager
def signpost_and_nodes(
    tmp: Path, spans: dict[str, str], *extra: str, signpost_args: tuple[str, ...] = ()
) -> Iterator[tuple[HydraProcess, str, dict[str, HydraProcess]]]:
    """A signpost and one ``hydra run`` per ``name: "START:END"``, all ready; SIGKILLed after."""
    sp = signpost(tmp, "signpost", *signpost_args).start()
    procs = [sp]
    try:
        sp.ready()
        boot = multiaddr_of(sp)
        nodes = {name: node(tmp, name, [boot], "--layers", span, *extra).start()
                 for name, span in spans.items()}
        procs += nodes.values()
        for proc in nodes.values():  # they load torch and the model at once, on a few cores
            proc.ready(timeout=NODES_READY_S)
        yield sp, boot, nodes
    finally:
        for proc in procs:
            if proc.proc and proc.proc.poll() is None:
                proc.stop(signal.SIGKILL)


def multiaddr_of(proc: HydraProcess) -> str:
    return f"/ip4/127.0.0.1/tcp/{proc.p2p_port}/p2p/{proc.peer_id}"


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
