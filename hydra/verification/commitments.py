"""Commitment chains, receipts and the sealing of what a stage tells the coordinator alone.

The chain is built identically by the stage (which signs its head) and by the coordinator
(which replays the digests it was sent and checks the signature against its own copy), so a
signature proves, to anyone holding the stage's peer ID, every step it covers.
"""

import hashlib
import secrets
from dataclasses import dataclass, field

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from libp2p.crypto.keys import KeyPair

from hydra.p2p.identity import signed_by
from hydra.privacy.sealing import SealError, derive_key
from protocols.verify import DIGEST_BYTES, SIGN_EVERY, Commitment

CHAIN_DOMAIN = b"openhydra/commitment-chain/v1\x00"
RECEIPT_DOMAIN = b"openhydra/receipt/v1\x00"
COMMIT_INFO = b"openhydra/commitments/v1"
AUDIT_INFO = b"openhydra/audit/v1"
NONCE_BYTES = 12


@dataclass(frozen=True)
class Terms:
    """What a stage's whole chain is about: its hop of one session, and the weights it runs."""

    session_id: bytes  # the hop's session id (each hop of a route has its own)
    model: str
    layer_start: int
    layer_end: int
    model_hash: bytes
    dtype: str  # of the activations exchanged

    def genesis(self) -> bytes:
        fields = [self.session_id, self.model, self.layer_start, self.layer_end, self.model_hash, self.dtype]
        return _digest(CHAIN_DOMAIN + msgpack.packb(fields, use_bin_type=True))


@dataclass(frozen=True)
class StepRecord:
    position: int
    tokens: int
    in_hash: bytes
    out_hash: bytes
    head: bytes  # the chain's head after this step


@dataclass
class CommitmentChain:
    terms: Terms
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def head(self) -> bytes:
        return self.steps[-1].head if self.steps else self.terms.genesis()

    def append(self, position: int, tokens: int, in_hash: bytes, out_hash: bytes) -> StepRecord:
        step = [position, tokens, in_hash, out_hash]
        head = _digest(self.head + msgpack.packb(step, use_bin_type=True))
        record = StepRecord(position, tokens, in_hash, out_hash, head)
        self.steps.append(record)
        return record

    def signs(self, tokens: int) -> bool:
        """Whether the step just appended is one whose head the stage signs."""
        return tokens > 1 or len(self.steps) % SIGN_EVERY == 1

    def at(self, position: int) -> StepRecord | None:
        """The step that began at ``position``."""
        return next((s for s in reversed(self.steps) if s.position == position), None)


def signed_chain(
    peer_id: str, terms: Terms, steps: list[tuple[int, int]], commitments: list[Commitment]
) -> bool:
    """Whether ``commitments`` (one per ``(position, tokens)`` step, as a stage sent them) form
    a chain over ``terms`` that ``peer_id`` signed: what anyone holding evidence can check."""
    chain = CommitmentChain(terms)
    signed = False
    for (position, tokens), commitment in zip(steps, commitments, strict=True):
        record = chain.append(position, tokens, commitment.in_hash, commitment.out_hash)
        if commitment.signature:
            if not head_signed(peer_id, record.head, commitment.signature):
                return False
            signed = True
    return signed


def sign_head(identity: KeyPair, head: bytes) -> bytes:
    return identity.private_key.sign(CHAIN_DOMAIN + head)


def head_signed(peer_id: str, head: bytes, signature: bytes) -> bool:
    return signed_by(peer_id, CHAIN_DOMAIN + head, signature)


def _receipt_message(session_id: bytes, position: int, digest: bytes) -> bytes:
    return RECEIPT_DOMAIN + session_id + position.to_bytes(8, "big") + digest


def sign_receipt(identity: KeyPair, session_id: bytes, position: int, digest: bytes) -> bytes:
    """The sender's signature over activations ``digest`` it sends the hop known as ``session_id``."""
    return identity.private_key.sign(_receipt_message(session_id, position, digest))


def receipt_valid(peer_id: str, session_id: bytes, position: int, digest: bytes, receipt: bytes) -> bool:
    return signed_by(peer_id, _receipt_message(session_id, position, digest), receipt)


class CommitmentCipher:
    """Encrypts a stage's commitments for the coordinator (AES-256-CTR under a key derived from
    the stage's report key, the step's position as the nonce: one commitment per position). No
    tag: the chain signature is the commitment's integrity, and the bytes stay at ~50 per step."""

    def __init__(self, report_key: bytes) -> None:
        self._key = derive_key(report_key, b"", COMMIT_INFO)

    def _cipher(self, position: int) -> Cipher:
        return Cipher(algorithms.AES(self._key), modes.CTR(position.to_bytes(8, "big") + bytes(8)))

    def seal(self, commitment: Commitment, position: int) -> bytes:
        encryptor = self._cipher(position).encryptor()
        return encryptor.update(commitment.to_bytes()) + encryptor.finalize()

    def open(self, sealed: bytes, position: int) -> Commitment:
        """The commitment, or ``ProtocolError`` when the bytes do not decrypt to one."""
        decryptor = self._cipher(position).decryptor()
        return Commitment.from_bytes(decryptor.update(sealed) + decryptor.finalize())


class AuditSeal:
    """One stage's layer of the challenge onion: AES-256-GCM under a key derived from its report
    key, a random nonce per layer, bound to the hop's session id and the direction."""

    def __init__(self, report_key: bytes, session_id: bytes) -> None:
        self._aead = AESGCM(derive_key(report_key, b"", AUDIT_INFO))
        self._session_id = session_id

    def seal(self, plaintext: bytes, direction: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, direction + self._session_id)

    def open(self, sealed: bytes, direction: bytes) -> bytes:
        try:
            return self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], direction + self._session_id
            )
        except (InvalidTag, ValueError):
            raise SealError("audit layer failed authentication") from None


CHALLENGE = b"challenge"
ANSWER = b"answer"


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()
