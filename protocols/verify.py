"""Verification of what stages compute: per-step commitments, and challenges on
``protocols.ids.VERIFY``.

**Commitments.** For every step a stage computes, it commits to the exact input and output
tensors (``tensor_digest``: blake2b over dtype, shape and bytes) in a hash chain that starts
from the session's terms (hop session id, model, span, model hash, dtype); the chain's head is
signed with the stage's Ed25519 identity on the first step, on every ``SIGN_EVERY``-th step and
whenever a step carries more than one token, so one signature covers every step before it. The
``Commitment`` travels to the coordinator encrypted (``Hidden.commitments``), which checks the
chain across stages at once: stage i's output digest must be stage i+1's input digest.

**Challenges.** After the fact the coordinator asks one stage to reveal the session's inputs up
to a committed step. The request travels along the session's route as an onion: each stage on
the way opens one layer under its report key (a ``Forward`` to pass on, or the ``Audit`` meant
for it) and each stage on the way back wraps the answer in one more layer, so no two stages
see the same bytes and none but the target learns which stage was asked.
"""

import dataclasses
import hashlib
from typing import ClassVar, Final

from protocols.codec import Error, Message, Schema
from protocols.errors import ErrorCode, ProtocolError, require
from protocols.inference import MAX_FRAME, MAX_LENGTH, SESSION_ID_BYTES, SIGNATURE_BYTES, Tensor

DIGEST_BYTES: Final = 16
SIGN_EVERY: Final = 8  # decode steps one signature covers (keeps commitments under 64 B/token)
MAX_LAYER: Final = MAX_FRAME  # one onion layer: a page of a reveal at most
REVEAL_ROOM: Final = 16 << 20  # input bytes one page of a reveal carries
MAX_AUDITED: Final = 256  # steps one challenge audits


def tensor_digest(tensor: Tensor) -> bytes:
    """The digest a commitment holds for ``tensor``: its exact wire bytes, dtype and shape."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    digest.update(tensor.dtype.encode() + b"\x00")
    digest.update(b"".join(d.to_bytes(4, "big") for d in tensor.shape))
    digest.update(tensor.data)
    return digest.digest()


@dataclasses.dataclass(frozen=True)
class Commitment:
    """One stage's commitment for one step; ``signature`` (when present) covers the chain's head
    after this step. On the wire it is packed, not a msgpack map (it is sent every step, by
    every stage): input digest, output digest, then the signature if any."""

    in_hash: bytes
    out_hash: bytes
    signature: bytes = b""

    def to_bytes(self) -> bytes:
        return self.in_hash + self.out_hash + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> "Commitment":
        if len(data) not in (2 * DIGEST_BYTES, 2 * DIGEST_BYTES + SIGNATURE_BYTES):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"a commitment of {len(data)} bytes")
        return cls(data[:DIGEST_BYTES], data[DIGEST_BYTES : 2 * DIGEST_BYTES], data[2 * DIGEST_BYTES :])


@dataclasses.dataclass(frozen=True)
class Challenge(Message):
    """To the stage that knows the session as ``session_id`` (from this stream's sender)."""

    TYPE: ClassVar[str] = "challenge"
    session_id: bytes
    layer: bytes  # an onion layer for this stage: a sealed ``Forward`` or ``Audit``

    def check(self) -> None:
        require(len(self.session_id) == SESSION_ID_BYTES, f"session id is {SESSION_ID_BYTES} bytes")
        require(0 < len(self.layer) <= MAX_LAYER, "onion layer empty or too large")


@dataclasses.dataclass(frozen=True)
class Revealed(Message):
    """The answer to a ``Challenge``, sealed once more by every stage it passed on the way back."""

    TYPE: ClassVar[str] = "revealed"
    layer: bytes

    def check(self) -> None:
        require(0 < len(self.layer) <= MAX_LAYER, "onion layer empty or too large")


@dataclasses.dataclass(frozen=True)
class Forward(Message):
    """Inside a layer: not for this stage; pass ``layer`` to the next hop."""

    TYPE: ClassVar[str] = "forward"
    layer: bytes


@dataclasses.dataclass(frozen=True)
class Audit(Message):
    """Inside a layer: reveal the inputs of the steps from position ``start`` up to the last of
    the audited steps (those that began at ``positions``), and the audited steps' outputs."""

    TYPE: ClassVar[str] = "audit"
    positions: tuple[int, ...]
    start: int = 0

    def check(self) -> None:
        require(0 < len(self.positions) <= MAX_AUDITED, f"1..{MAX_AUDITED} audited steps")
        require(list(self.positions) == sorted(set(self.positions)), "positions must ascend")
        require(self.start >= 0 and self.positions[0] >= 0 and self.positions[-1] < MAX_LENGTH,
                "positions out of range")


@dataclasses.dataclass(frozen=True)
class AuditedStep(Message):
    TYPE: ClassVar[str] = "audited_step"
    position: int
    chunks: tuple[int, ...]
    input: Tensor
    receipt: bytes  # the predecessor's signature over ``input`` (empty from the coordinator)


@dataclasses.dataclass(frozen=True)
class Reveal(Message):
    """One page of a stage's answer to an ``Audit``. The last page (signed) carries the audited
    steps' outputs as sent and a signature over the commitment chain up to the last of them."""

    TYPE: ClassVar[str] = "reveal"
    steps: tuple[AuditedStep, ...]
    outputs: tuple[Tensor, ...] = ()
    signature: bytes = b""

    def check(self) -> None:
        require(len(self.signature) in (0, SIGNATURE_BYTES), f"a signature is {SIGNATURE_BYTES} bytes")
        require(bool(self.outputs) == bool(self.signature), "the last page is signed, others not")


REQUESTS: Final = Schema([Challenge])
REPLIES: Final = Schema([Revealed, Error])
LAYERS: Final = Schema([Forward, Audit])
REVEALS: Final = Schema([Reveal])
