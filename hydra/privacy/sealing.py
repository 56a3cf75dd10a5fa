"""AES-256-GCM for activations on one hop in one direction, with sequence-bound nonces.

Sender and receiver each count messages; the nonce is the count, never sent. A replayed,
reordered, dropped or altered message therefore fails authentication at the receiver, which
must then abandon the session (its counter and the sender's have diverged)."""

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hydra.errors import PeerError

KEY_BYTES = 32
TAG_BYTES = 16


class SealError(PeerError):
    """A sealed message failed authentication (tampered, replayed, reordered or misrouted)."""


def derive_key(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(secret)


class SealedChannel:
    """One direction of one hop: ``seal`` on the sending side, ``open`` on the receiving one."""

    def __init__(self, key: bytes, label: bytes) -> None:
        if len(key) != KEY_BYTES or len(label) != 4:
            raise ValueError("a channel needs a 32-byte key and a 4-byte label")
        self._aead = AESGCM(key)
        self._label = label
        self.count = 0

    def _nonce(self) -> bytes:
        return self._label + self.count.to_bytes(8, "big")

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        sealed = self._aead.encrypt(self._nonce(), plaintext, aad)
        self.count += 1
        return sealed

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        try:
            plaintext = self._aead.decrypt(self._nonce(), sealed, aad)
        except InvalidTag:
            raise SealError(f"message {self.count} failed authentication") from None
        self.count += 1
        return plaintext
