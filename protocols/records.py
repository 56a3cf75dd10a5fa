"""Peer records: what a peer announces about itself in the DHT.

A ``SignedRecord`` carries the msgpack bytes of a ``PeerRecord`` and an Ed25519 signature over
``RECORD_DOMAIN + body`` by the key behind ``PeerRecord.peer_id``. Signing the exact body bytes
avoids any canonical-encoding ambiguity; verification lives in ``hydra.dht.records``.
"""

import dataclasses
from typing import ClassVar, Final

from protocols.codec import Message
from protocols.errors import require

RECORD_DOMAIN: Final = b"openhydra/peer-record/v1\x00"
MAX_RECORD_BODY: Final = 4096
MAX_ADDRS: Final = 16
MAX_TEXT: Final = 256



@dataclasses.dataclass(frozen=True)
class PeerRecord(Message):
    TYPE: ClassVar[str] = "peer_record"
    peer_id: str
    seq: int  # strictly increasing per peer (ms clock); a newer record replaces an older one
    issued_at: float  # unix seconds
    expires_at: float
    addrs: tuple[str, ...]
    version: str
    model: str
    layer_start: int  # first served layer
    layer_end: int  # one past the last served layer
    total_layers: int
    dtype: str
    quantization: str = "none"
    throughput: float = 0.0  # measured tokens/s through the served span; 0 = not measured
    cache_tokens_free: int = 0
    kx_key: bytes = b""  # X25519 key onion headers are sealed for (empty: cannot be onion-routed)
    kx_signature: bytes = b""  # Ed25519 over the kx key by the peer's identity (checked everywhere)
    region: str = ""  # where the peer claims to be (e.g. "eu-west"); bound into its work
    work_nonce: int = 0  # proof of work over peer id and region (see hydra.dht.work)
    model_hash: bytes = b""  # digest of the served span's weights as loaded; commitments name it

    def check(self) -> None:
        texts = (self.peer_id, self.version, self.model, self.dtype, self.quantization)
        require(all(0 < len(t) <= MAX_TEXT for t in texts), "text field empty or too long")
        require(0 < len(self.addrs) <= MAX_ADDRS, f"1..{MAX_ADDRS} addrs required")
        require(all(0 < len(a) <= MAX_TEXT for a in self.addrs), "addr empty or too long")
        require(self.seq >= 0 and self.cache_tokens_free >= 0, "negative counter")
        require(0 <= self.layer_start < self.layer_end <= self.total_layers, "bad layer range")
        require(self.total_layers <= 10_000, "absurd layer count")
        require(0 <= self.throughput < 1e9, "bad throughput")
        require(self.issued_at < self.expires_at, "record expires before it is issued")
        require(len(self.kx_key) in (0, 32) and len(self.kx_signature) in (0, 64), "bad kx key")
        require(len(self.region) <= 64 and 0 <= self.work_nonce < 1 << 64, "bad region or work")
        require(len(self.model_hash) <= 64, "model hash too long")

    @property
    def layers(self) -> range:
        return range(self.layer_start, self.layer_end)


@dataclasses.dataclass(frozen=True)
class SignedRecord(Message):
    TYPE: ClassVar[str] = "signed_record"
    body: bytes  # msgpack of a PeerRecord
    signature: bytes

    def check(self) -> None:
        require(0 < len(self.body) <= MAX_RECORD_BODY, "record body empty or too large")
        require(len(self.signature) == 64, "Ed25519 signature must be 64 bytes")
