"""How a node or a signpost takes part in the HYDRA token."""

from dataclasses import dataclass

MINT_EVERY_S = 30.0  # how often a node claims the mints its receipts earned


@dataclass(frozen=True)
class TokenConfig:
    """``federation``: multiaddrs (``.../p2p/PEER_ID``) of federation members. A node asks them
    (or, when empty, its signposts) for the federation's genesis and follows that log. A
    signpost with ``ledger`` is a member: ``federation`` lists every member in order, itself
    included (the first sequences); empty makes it a federation of one."""

    federation: tuple[str, ...] = ()
    ledger: bool = False  # signposts: keep the log and co-sign it
    k: int | None = None  # signposts: co-signatures an entry needs (default: a majority)
    mint_every_s: float = MINT_EVERY_S
    channel_deposit: int = 0  # micro-HYDRA: open a channel this size to a peer it pays that has none
