"""A peer's X25519 key for onion routing, bound to its Ed25519 identity by a signature that
anyone can check against the peer ID (which embeds the Ed25519 public key)."""

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from libp2p.crypto.keys import KeyPair

from hydra.errors import PeerError
from hydra.p2p.identity import signed_by

KX_DOMAIN = b"openhydra/kx-key/v1\x00"


class UnboundKey(PeerError):
    """An X25519 key whose signature does not verify against the claimed peer's identity."""


@dataclass(frozen=True)
class KxKey:
    private: X25519PrivateKey
    public: bytes  # raw 32 bytes
    signature: bytes  # Ed25519 over KX_DOMAIN + public, by the peer's identity

    @classmethod
    def create(cls, identity: KeyPair) -> "KxKey":
        """A fresh key for this run of the node, signed by its identity."""
        private = X25519PrivateKey.generate()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private, public, identity.private_key.sign(KX_DOMAIN + public))


def verify_kx(peer_id: str, public: bytes, signature: bytes) -> X25519PublicKey:
    """The X25519 key ``public`` if ``peer_id``'s identity signed it; ``UnboundKey`` otherwise."""
    if len(public) == 32 and signed_by(peer_id, KX_DOMAIN + public, signature):
        return X25519PublicKey.from_public_bytes(public)
    raise UnboundKey(f"the X25519 key presented for {peer_id[:64]} is not signed by its identity")
