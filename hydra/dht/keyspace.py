"""Positions in the 256-bit Kademlia keyspace and XOR distance."""

import hashlib

ID_BITS = 256


def key_position(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")


def peer_key(peer_id: str) -> str:
    return f"peer/{peer_id}"


def peer_position(peer_id: str) -> int:
    return key_position(peer_key(peer_id))


def distance(a: int, b: int) -> int:
    return a ^ b


def model_key(model: str) -> str:
    return f"model/{model}"


SWARM_KEY = "swarm"
"""Every announcing peer also stores its record here: the directory behind ``GET /peers``."""
