"""Proof of work on peer records: the price of an identity in the DHT (Sybil cost).

The work is bound to the peer ID and the region it claims, not to one record: a peer solves
it once per identity and region and re-announces for free, while an attacker pays again for
every fake identity. SHA-256 of domain, peer ID, region and an 8-byte nonce must start with
``bits`` zero bits; 2**bits hashes are expected (22 bits: ~2 s of one core)."""

import hashlib

WORK_DOMAIN = b"openhydra/work/v1\x00"
DEFAULT_WORK_BITS = 22


def _prefix(peer_id: str, region: str) -> "hashlib._Hash":
    return hashlib.sha256(WORK_DOMAIN + peer_id.encode() + b"\x00" + region.encode() + b"\x00")


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def has_work(peer_id: str, region: str, nonce: int, bits: int) -> bool:
    if bits <= 0:
        return True
    if not 0 <= nonce < 1 << 64:
        return False
    digest = _prefix(peer_id, region)
    digest.update(nonce.to_bytes(8, "big"))
    return leading_zero_bits(digest.digest()) >= bits


def solve(peer_id: str, region: str, bits: int) -> int:
    """The smallest nonce with enough work (blocking: run it off the event loop)."""
    if bits <= 0:
        return 0
    prefix = _prefix(peer_id, region)
    nonce = 0
    while True:
        digest = prefix.copy()
        digest.update(nonce.to_bytes(8, "big"))
        if leading_zero_bits(digest.digest()) >= bits:
            return nonce
        nonce += 1
