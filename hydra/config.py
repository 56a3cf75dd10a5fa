"""The assembly of each command: node, signpost, one-shot generation and terminal chat.

Every library package owns the configuration of its own code (``DiscoveryConfig`` in
``hydra.dht``, ``StageLimits`` in ``hydra.stage``, ``PrivacyConfig`` in ``hydra.privacy``,
``VerificationConfig`` in ``hydra.verification``, ``TokenConfig`` in ``hydra.economy``,
``APIConfig`` in ``hydra.api``); this module
puts them together per command and is where
every default the CLI shows comes from: ``hydra.cli`` reads them from the instances below."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.api.config import APIConfig
from hydra.compaction.plan import CompactionPlan
from hydra.coordinator.params import DRAFT_TOKENS, SamplingParams
from hydra.dht.config import DiscoveryConfig
from hydra.economy.config import TokenConfig
from hydra.p2p.home import default_home
from hydra.privacy.config import PrivacyConfig
from hydra.stage.limits import StageLimits
from hydra.verification.config import VerificationConfig

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class NodeConfig:
    """``hydra run``: a peer serving blocks and a coordinator answering the API."""

    home: Path = field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = 4001
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    model: str | None = None  # catalog id or alias; None: the catalog default
    layers: tuple[int, int] | None = None  # [start, end); None: chosen from memory and coverage
    model_path: Path | None = None  # a local checkpoint directory instead of the catalog source
    promote: bool = True  # move to a larger catalog model the swarm lacks (``hydra.promotion``)
    dtype: str = "float32"
    device: str = "auto"  # auto: cuda when available, else cpu
    quantization: str = "auto"  # of the weights: auto | none | int8 | int4 (CPU) | nf4
    compile: str = "auto"  # decode steps: auto | on | off (``hydra.runtime.compiled``)
    runtime_backend: str = "auto"  # the stage's blocks: auto | pytorch | mlx (``hydra.runtime.backends``)
    draft_tokens: int = DRAFT_TOKENS  # speculative decoding of greedy requests (0: off)
    wire_dtype: str = "auto"  # activations between stages: auto (the catalog's per model) | float32 | ...
    compaction: CompactionPlan = CompactionPlan()  # of the stages' KV caches, for this node's requests
    stage_limits: StageLimits = StageLimits()
    api: APIConfig = APIConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    verification: VerificationConfig = VerificationConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    token: TokenConfig = TokenConfig()

    def torch_device(self) -> "torch.device":
        from hydra.runtime.device import resolve_device  # lazily: DHT-only commands skip torch

        return resolve_device(self.device)

    @property
    def chooses_model(self) -> bool:
        """Whether the node picks (and may change) its model: the user named no model,
        blocks or checkpoint."""
        return self.model is None and self.layers is None and self.model_path is None


@dataclass(frozen=True)
class SignpostConfig:
    """``hydra signpost``: a DHT-only bootstrap peer with the HTTP DHT adapter."""

    home: Path = field(default_factory=default_home)
    host: str = "0.0.0.0"
    port: int = 4000
    http_host: str = "127.0.0.1"
    http_port: int = 8468
    relay: bool = False
    discovery: DiscoveryConfig = DiscoveryConfig()
    token: TokenConfig = TokenConfig()


GENERATE_SAMPLING = SamplingParams(max_tokens=128, temperature=0.0)
"""``hydra generate`` answers briefly and deterministically unless told otherwise."""

CHAT_SAMPLING = SamplingParams(max_tokens=512, temperature=0.7)
"""``hydra chat`` converses: longer replies, some variety."""


@dataclass(frozen=True)
class GenerateConfig:
    """``hydra generate``: one generation through the swarm, or standalone without one."""

    prompt: str
    model: str | None = None  # catalog id or alias; None: the catalog default
    chat: bool = False  # wrap the prompt in the model's chat template
    sampling: SamplingParams = GENERATE_SAMPLING
    discovery: DiscoveryConfig = DiscoveryConfig()
    wait: float = 30.0  # seconds to wait for peers covering the model
    dtype: str = "float32"
    device: str = "auto"
    quantization: str = "auto"
    compile: str = "off"  # one generation does not repay a compile's tens of seconds
    draft_tokens: int = DRAFT_TOKENS
    wire_dtype: str = "auto"
    compaction: CompactionPlan = CompactionPlan()
    privacy: PrivacyConfig = PrivacyConfig()
    model_path: Path | None = None  # a local checkpoint instead of the catalog's source


NODE = NodeConfig()
SIGNPOST = SignpostConfig()
"""Default instances: the values ``hydra --help`` shows."""
