"""Node and signpost configuration: one typed place, built once by the CLI and passed down."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.dht.work import DEFAULT_WORK_BITS
from hydra.p2p.identity import default_home

if TYPE_CHECKING:
    import torch

DEFAULT_BOOTSTRAP: tuple[str, ...] = ()
"""Public signposts joined when no ``--bootstrap`` is given. Empty until the project runs
public signposts: until then a node without ``--bootstrap`` runs standalone."""

DEFAULT_P2P_PORT = 4001
DEFAULT_SIGNPOST_PORT = 4000
DEFAULT_API_PORT = 8080
DEFAULT_DHT_HTTP_PORT = 8468


@dataclass(frozen=True)
class DiscoveryConfig:
    bootstrap: tuple[str, ...] = DEFAULT_BOOTSTRAP
    announce_interval: float = 60.0
    record_ttl: float = 180.0  # three announce periods: a peer survives two lost announces
    rebootstrap_interval: float = 30.0  # retry signposts while the routing table is empty
    refresh_interval: float = 300.0
    work_bits: int = DEFAULT_WORK_BITS  # proof of work every record must carry (Sybil cost)
    region: str = ""  # the region this node claims in its records
    peer_rate: float = 200.0  # DHT requests per second one remote peer may make, sustained
    peer_burst: float = 400.0


@dataclass(frozen=True)
class StageLimits:
    """What one node's stage grants to all sessions together."""

    max_sessions: int = 64
    cache_bytes: int = 1 << 30  # KV cache reserved across sessions (max_length x per-token)
    idle_timeout: float = 120.0  # a session with no message for this long is closed
    # One remote peer (a coordinator, or the stage before us relaying many coordinators'
    # sessions) may hold at most this share of the slots and cache, at this message rate.
    peer_share: float = 0.5
    peer_rate: float = 2000.0  # messages per second, sustained
    peer_burst: float = 4000.0


@dataclass(frozen=True)
class PrivacyConfig:
    """How a coordinator protects its prompts (see the README's SECURITY section)."""

    protect: bool = True  # onion routing and sealed activations on every hop
    local_layers: int = 0  # run the first blocks here, so no peer sees embeddings
    dp_noise_sigma: float = 0.0  # Gaussian noise on the activations leaving this node

    def __post_init__(self) -> None:
        if self.local_layers < 0 or self.dp_noise_sigma < 0:
            raise ValueError("--local-layers and --dp-noise-sigma must not be negative")


@dataclass(frozen=True)
class APIConfig:
    rate_limit: int = 120  # requests per window per client address (health and metrics exempt)
    rate_window: float = 60.0
    default_max_tokens: int = 512  # when a request does not say


@dataclass(frozen=True)
class NodeConfig:
    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = DEFAULT_P2P_PORT
    api_host: str = "127.0.0.1"
    api_port: int = DEFAULT_API_PORT
    model: str | None = None  # catalog id or alias; None: the catalog default
    layers: tuple[int, int] | None = None  # [start, end); None: chosen from memory and coverage
    model_path: Path | None = None  # a local checkpoint directory instead of the catalog source
    dtype: str = "float32"
    device: str = "auto"  # auto: cuda when available, else cpu
    stage_limits: StageLimits = StageLimits()
    api: APIConfig = APIConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()

    def torch_device(self) -> "torch.device":
        import torch  # lazily: DHT-only commands never load torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass(frozen=True)
class SignpostConfig:
    home: Path = field(default_factory=default_home)
    host: str = "0.0.0.0"
    port: int = DEFAULT_SIGNPOST_PORT
    http_host: str = "127.0.0.1"
    http_port: int = DEFAULT_DHT_HTTP_PORT
    relay: bool = False
    discovery: DiscoveryConfig = DiscoveryConfig()


def parse_layers(text: str) -> tuple[int, int]:
    """``"START:END"`` (END exclusive) into a pair; ValueError with a usable message."""
    start, sep, end = text.partition(":")
    if not sep or not start.strip().isdigit() or not end.strip().isdigit():
        raise ValueError(f"--layers expects START:END, e.g. 0:10, got {text!r}")
    first, last = int(start), int(end)
    if first >= last:
        raise ValueError(f"--layers {text}: START must be below END")
    return first, last


def shard_layers(index: int, total: int, num_layers: int) -> tuple[int, int]:
    """Layers of shard ``index`` of ``total`` equal shards (earlier shards take the remainder)."""
    if not 0 <= index < total or total > num_layers:
        raise ValueError(f"shard {index} of {total} is impossible for {num_layers} layers")
    base, extra = divmod(num_layers, total)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)
