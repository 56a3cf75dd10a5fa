"""What the HTTP API allows each client, and its defaults for requests that do not say."""

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class APIConfig:
    rate_limit: int = 120  # requests per window per client address (health and metrics exempt)
    rate_window: float = 60.0
    default_max_tokens: int = 512  # when a request does not say
    # lets clients off this machine move the node's HYDRA (stake, channels); unset: loopback only
    money_token: str = field(default_factory=lambda: os.environ.get("HYDRA_MONEY_TOKEN", ""), repr=False)
