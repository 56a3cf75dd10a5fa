"""How activations cross one hop in one direction: sealed under that hop's key and bound to
the session and position, or in the clear when the session is unprotected.

The coordinator and every stage go through this one wrapper, so whether a session is sealed
is decided once, when its keys are known, and every message is checked against that."""

from hydra.privacy.sealing import SealedChannel
from protocols import inference
from protocols.codec import Schema, encode
from protocols.errors import ErrorCode, ProtocolError

STEP_LABEL = b"step"  # activations travelling down the route
RETURN_LABEL = b"back"  # the last stage's output travelling back to the coordinator
_TENSORS = Schema([inference.Tensor])


def step_aad(session_id: bytes, position: int) -> bytes:
    """Bind a sealed message to its session and position (a message moved elsewhere fails)."""
    return session_id + position.to_bytes(8, "big")


class ActivationChannel:
    """One direction of one hop. ``key`` empty: activations travel in the clear."""

    def __init__(self, key: bytes, session_id: bytes, label: bytes = STEP_LABEL) -> None:
        self._sealer = SealedChannel(key, label) if key else None
        self.session_id = session_id  # the receiving hop's id, bound into every message

    @property
    def sealed(self) -> bool:
        return self._sealer is not None

    def wrap(self, tensor: inference.Tensor, position: int) -> tuple[inference.Tensor | None, bytes]:
        """``(hidden, sealed)`` for a ``Step`` or ``Hidden`` message carrying ``tensor``."""
        if self._sealer is None:
            return tensor, b""
        return None, self._sealer.seal(encode(tensor), step_aad(self.session_id, position))

    def unwrap(self, hidden: inference.Tensor | None, sealed: bytes, position: int) -> inference.Tensor:
        """The activations a message carries. ``ProtocolError(SEAL_FAILED)`` when the message is
        sealed and the session is not, or the other way round; ``SealError`` when it fails
        authentication (tampered, replayed or reordered: the session cannot go on); a typed
        ``ProtocolError`` when what was sealed is not a valid tensor."""
        if self._sealer is None:
            if hidden is None:
                raise ProtocolError(ErrorCode.SEAL_FAILED, "this session's activations are not sealed")
            return hidden
        if hidden is not None:
            raise ProtocolError(ErrorCode.SEAL_FAILED, "this session's activations must be sealed")
        tensor = _TENSORS.decode(self._sealer.open(sealed, step_aad(self.session_id, position)))
        assert isinstance(tensor, inference.Tensor)
        return tensor
