"""How a node takes part in discovery: which signposts it joins through, how often it
announces, the Kademlia parameters and the limits it holds remote peers to."""

from dataclasses import dataclass

from hydra.dht.work import DEFAULT_WORK_BITS

DEFAULT_BOOTSTRAP: tuple[str, ...] = ()
"""Public signposts joined when no ``--bootstrap`` is given. Empty until the project runs
public signposts: until then a node without ``--bootstrap`` runs standalone."""


@dataclass(frozen=True)
class DiscoveryConfig:
    bootstrap: tuple[str, ...] = DEFAULT_BOOTSTRAP
    announce_interval: float = 60.0
    record_ttl: float = 180.0  # three announce periods: a peer survives two lost announces
    rebootstrap_interval: float = 30.0  # retry signposts while the routing table is empty
    refresh_interval: float = 300.0
    work_bits: int = DEFAULT_WORK_BITS  # proof of work every record must carry (Sybil cost)
    region: str = ""  # the region this node claims in its records
    # Kademlia
    k: int = 20  # replication factor and bucket size
    alpha: int = 3  # parallel queries per lookup round
    quorum: int = 3  # value holders to hear from before a lookup may stop
    rpc_timeout: float = 2.0
    peer_rate: float = 200.0  # DHT requests per second one remote peer may make, sustained
    peer_burst: float = 400.0
