"""What a node answers, as frozen dataclasses (read by ``hydra.sdk.parse``: unknown fields
ignored, missing optional ones None). Open-ended objects stay dicts, typed as TypedDicts.
Amounts of HYDRA and credits are floats, as the node sends them (six decimals at most)."""

from dataclasses import dataclass
from typing import Any, TypedDict

from hydra.sdk.parse import key

# --- generation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class Message:
    role: str = "assistant"
    content: str = ""


@dataclass(frozen=True)
class ChatChoice:
    index: int = 0
    message: Message = Message()
    finish_reason: str | None = None  # stop, length
    logprobs: dict[str, Any] | None = None


@dataclass(frozen=True)
class CompletionChoice:
    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


@dataclass(frozen=True)
class ChatCompletion:
    id: str
    model: str  # the model that answered: a smaller one than asked for when degraded
    created: int | None = None
    choices: tuple[ChatChoice, ...] = ()
    usage: Usage | None = None
    degradation: str | None = None  # why a smaller model answered (X-OpenHydra-Degradation-Reason)

    @property
    def text(self) -> str:
        """The first choice's reply."""
        return self.choices[0].message.content if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None


@dataclass(frozen=True)
class Completion:
    id: str
    model: str
    created: int | None = None
    choices: tuple[CompletionChoice, ...] = ()
    usage: Usage | None = None
    degradation: str | None = None

    @property
    def text(self) -> str:
        return self.choices[0].text if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None


@dataclass(frozen=True)
class ChunkDelta:
    role: str | None = None
    content: str | None = None


@dataclass(frozen=True)
class ChunkChoice:
    index: int = 0
    delta: ChunkDelta | None = None  # chat streams
    text: str | None = None  # completion streams
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None

    @property
    def content(self) -> str:
        """The new text, whichever kind of stream this is."""
        if self.text is not None:
            return self.text
        return (self.delta.content if self.delta else None) or ""


@dataclass(frozen=True)
class Chunk:
    """One event of a streamed chat or completion. The node sends one choice per chunk; the
    last chunk of a choice has its ``finish_reason``, a usage chunk (``stream_options``) none."""

    id: str
    model: str
    created: int | None = None
    choices: tuple[ChunkChoice, ...] = ()
    usage: Usage | None = None

    @property
    def delta(self) -> str:
        """The text this chunk adds ("" for role, finish and usage chunks)."""
        return self.choices[0].content if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None


@dataclass(frozen=True)
class Model:
    id: str
    routable: bool = False  # a complete route serves it now
    owned_by: str | None = None
    created: int | None = None


# --- node ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    ready: bool = False  # a complete route for the default model exists
    model: str | None = None  # the node's default model


# --- economy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Barter:
    credits: float = 0.0  # earned serving minus spent consuming, decayed
    micro_credits: int = 0
    decay_per_day: float | None = None


@dataclass(frozen=True)
class Federation:
    members: int | None = None
    k: int | None = None  # member signatures each token-log entry needs


@dataclass(frozen=True)
class Channel:
    id: str
    payer: str | None = None
    payee: str | None = None
    deposit: float | None = None
    paid: float | None = None
    nonce: int | None = None
    closing_until: float | None = None  # the end of a unilateral close's challenge window


@dataclass(frozen=True)
class HydraAccount:
    """The node's HYDRA from its replica of the token log."""

    liquid: float = key("hydra")  # required: what tells an account from its absence
    staked: float = 0.0
    unbonding: float = 0.0
    unbonding_until: float | None = None
    burned: float = 0.0
    slashed: float = 0.0
    channels: tuple[Channel, ...] = ()
    supply: float | None = None
    log_length: int | None = None


@dataclass(frozen=True)
class Economy:
    barter: Barter = Barter()
    hydra: HydraAccount | None = None  # None: no token federation has answered this node
    federation: Federation | None = key(("hydra", "federation"), None)


@dataclass(frozen=True)
class Balance(Economy):
    peer_id: str | None = None


@dataclass(frozen=True)
class OpenedChannel:
    id: str  # what close_channel takes
    account: HydraAccount


# --- /v1/network/status ---------------------------------------------------------------------


class Batching(TypedDict, total=False):
    max_batch: int
    batches: int
    mean_rows: float
    largest: int
    busy_s: float


class PrefixCache(TypedDict, total=False):
    blocks: int
    bytes: int
    kept: int
    reused: int


class Audits(TypedDict, total=False):
    chosen: int
    passed: int
    failed: int
    unverifiable: int
    dropped: int


@dataclass(frozen=True)
class StageStatus:
    model: str | None = None
    layers: tuple[int, ...] = ()  # [start, end) of the blocks this node serves
    precision: str | None = None
    backend: str | None = None
    compiled: bool | None = None
    sessions: int | None = None
    cache_tokens_free: int | None = None
    steps_served: int | None = None
    tokens_served: int | None = None
    compactions: int | None = None
    prefix_cache: PrefixCache | None = None
    batching: Batching | None = None


@dataclass(frozen=True)
class Promotion:
    enabled: bool | None = None
    could: str | None = None  # a larger model this node could move to
    moves: tuple[dict[str, Any], ...] = ()  # {"from", "to", "at"}


@dataclass(frozen=True)
class Hop:
    peer_id: str
    layers: tuple[int, ...] = ()
    local: bool = False


@dataclass(frozen=True)
class LiveGeneration:
    model: str | None = None
    position: int | None = None
    failovers: int | None = None
    route: tuple[Hop, ...] = ()


@dataclass(frozen=True)
class Verification:
    verify_rate: float | None = None
    probes_only: bool | None = None
    redundancy: int | None = None
    min_reputation: float | None = None
    probes_run: int | None = None
    audits: Audits | None = None


@dataclass(frozen=True)
class PeerScore:
    peer_id: str
    total: float | None = None
    verification: float | None = None
    uptime: float | None = None
    latency: float | None = None
    stake: float | None = None
    checks_passed: float | None = None
    checks_failed: float | None = None
    admissible: bool | None = None  # good enough for new routes


@dataclass(frozen=True)
class Announce:
    interval_s: float | None = None
    ttl_s: float | None = None
    last_seq: int | None = None
    stored_on: int | None = None  # DHT peers holding this node's latest record


@dataclass(frozen=True)
class Signposts:
    configured: int | None = None
    answered: int | None = None


@dataclass(frozen=True)
class NetworkStatus:
    peer_id: str
    role: str | None = None
    version: str | None = None
    api: str | None = None
    addrs: tuple[str, ...] = ()
    uptime_s: float | None = None
    routing_table: int | None = None
    connections: int | None = None
    records_held: int | None = None
    signposts: Signposts | None = None
    hardware: str | None = None
    model: str | None = None  # the model this node serves blocks of
    layers: tuple[int, ...] = ()
    total_layers: int | None = None
    throughput_tokens_s: float | None = None
    stage: StageStatus | None = None
    promotion: Promotion | None = None
    generations: tuple[LiveGeneration, ...] = ()
    verification: Verification | None = None
    reputation: tuple[PeerScore, ...] = ()
    economy: Economy | None = None
    announce: Announce | None = None
