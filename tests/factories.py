"""Builders shared by tests: identities and peer records (no network)."""

import time
from dataclasses import replace

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair

from hydra.dht.config import DiscoveryConfig
from hydra.dht.records import sign
from hydra.dht.work import has_work, solve
from hydra.p2p.identity import peer_id
from protocols.records import PeerRecord, SignedRecord


def keypair() -> KeyPair:
    return create_new_key_pair()


TEST_WORK_BITS = 8
"""Proof of work every test node demands (production: 22 bits, seconds per identity)."""


def discovery(*bootstrap: str, **changes) -> DiscoveryConfig:
    return DiscoveryConfig(bootstrap=bootstrap, work_bits=TEST_WORK_BITS, **changes)


def record(kp: KeyPair, ttl: float = 60.0, **changes) -> PeerRecord:
    now = time.time()
    pid = peer_id(kp).to_base58()
    base = PeerRecord(
        peer_id=pid,
        seq=int(now * 1000),
        issued_at=now,
        expires_at=now + ttl,
        addrs=("/ip4/127.0.0.1/tcp/4001",),
        version="test",
        model="openhydra-smollm2-135m",
        layer_start=0,
        layer_end=30,
        total_layers=30,
        dtype="float32",
        work_nonce=solve(pid, "", TEST_WORK_BITS),
    )
    return replace(base, **changes)


def signed(kp: KeyPair, ttl: float = 60.0, **changes) -> SignedRecord:
    return sign(record(kp, ttl, **changes), kp)


def forged_for(victim: KeyPair, forger: KeyPair) -> SignedRecord:
    """A record claiming ``victim``'s peer ID, signed with ``forger``'s key."""
    return sign(record(victim), forger)


def unworked(kp: KeyPair) -> SignedRecord:
    """A valid record except that its proof of work falls short of ``TEST_WORK_BITS``."""
    pid = peer_id(kp).to_base58()
    nonce = next(n for n in range(1 << 16) if not has_work(pid, "", n, TEST_WORK_BITS))
    return signed(kp, work_nonce=nonce)
