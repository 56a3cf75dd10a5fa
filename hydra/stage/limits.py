"""What one node's stage grants to all sessions together, and to any one remote peer."""

import math
from dataclasses import dataclass

from hydra.errors import ConfigError


@dataclass(frozen=True)
class StageLimits:
    max_sessions: int = 64
    cache_bytes: int = 1 << 30  # KV cache reserved across sessions (max_length x per-token)
    idle_timeout: float = 120.0  # a session with no message for this long is closed
    # One remote peer (a coordinator, or the stage before us relaying many coordinators'
    # sessions) may hold at most this share of the slots and cache, at this message rate.
    peer_share: float = 0.5
    peer_rate: float = 2000.0  # messages per second, sustained
    peer_burst: float = 4000.0
    # tokens of a session served without a receipt before it must be paid to go on (payers
    # send one every protocols.receipt.RECEIPT_EVERY tokens, so honest ones never hit this)
    unpaid_tokens: int = 1024
    # the last share of the slots and the cache that only sessions with a priority ticket (HYDRA
    # burned) may use: a stage that is full for everyone else still admits them
    priority_share: float = 0.2
    # decode steps of concurrent sessions run as one forward pass (hydra.runtime.session_batch):
    # at most this many rows; caches are never copied, so a batch costs only its activations
    max_batch: int = 16
    # seconds a batch waits for the steps of the other sessions stepping here; None: as long
    # as a batch takes to compute (hydra.runtime.batcher)
    batch_window: float | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"--max-batch must be at least 1, not {self.max_batch}")
        window = self.batch_window
        if window is not None and not (math.isfinite(window) and window >= 0):
            raise ConfigError(f"--batch-window-ms must be a non-negative number, not {self.batch_window}")
