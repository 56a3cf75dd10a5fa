"""Versioned libp2p protocol IDs. A breaking wire change bumps the version."""

from typing import Final

KAD: Final = "/hydra/kad/1.0.0"
"""Kademlia RPCs (PING, FIND_NODE, FIND_VALUE, STORE) over signed peer records."""

INFERENCE: Final = "/hydra/inference/5.0.0"
"""Pipeline sessions: onion-wrapped open, sealed steps of hidden states carrying the stages'
commitments forward, the output collected from the last stage (or relayed back), probes, close."""

VERIFY: Final = "/hydra/verify/1.0.0"
"""Challenges for a committed step, relayed along the session's route; onion-sealed reveals."""

RECEIPT: Final = "/hydra/receipt/1.0.0"
"""Cumulative receipts for a session's work, signed by the payer, countersigned by the stage."""

TOKEN_LOG: Final = "/hydra/tokenlog/1.0.0"
"""The HYDRA token log: submit an event, co-sign an entry (federation members), fetch entries."""

CHANNEL: Final = "/hydra/channel/1.0.0"
"""Payment channels between neighbours of a route: balance updates signed by both sides."""
