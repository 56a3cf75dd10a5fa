"""Versioned libp2p protocol IDs. A breaking wire change bumps the version."""

from typing import Final

KAD: Final = "/hydra/kad/1.0.0"
"""Kademlia RPCs (PING, FIND_NODE, FIND_VALUE, STORE) over signed peer records."""

INFERENCE: Final = "/hydra/inference/1.0.0"
"""Pipeline sessions: open a session on a span of blocks, step with hidden states, close."""
