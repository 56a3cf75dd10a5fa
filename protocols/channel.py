"""Payment channels on ``protocols.ids.CHANNEL`` between neighbours of a route.

A channel is opened in the token log with a deposit from the payer (``opener``). Each update
is a ``ChannelState``: the total the payer has paid so far and a nonce that strictly
increases; the payer signs it and sends it, the payee checks and countersigns it. Each side
persists a state before it signs. Either side closes with the latest state both signed: a
final one settles at once (cooperative), any other opens a challenge window in the log
during which a state with a higher nonce replaces it.
"""

import dataclasses
import struct
from typing import ClassVar, Final

from protocols.codec import Error, Message, Schema
from protocols.errors import ErrorCode, ProtocolError, require
from protocols.inference import SIGNATURE_BYTES

ID_BYTES: Final = 16
_PACKED = struct.Struct(">16sQQ?")


@dataclasses.dataclass(frozen=True)
class ChannelState:
    """Packed (16-byte id, nonce, paid, final): the bytes both sides sign."""

    ID_BYTES: ClassVar[int] = ID_BYTES
    channel_id: bytes
    nonce: int
    paid: int  # micro-HYDRA the payer has paid the payee so far
    final: bool = False

    def to_bytes(self) -> bytes:
        return _PACKED.pack(self.channel_id, self.nonce, self.paid, self.final)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ChannelState":
        if len(data) != _PACKED.size:
            raise ProtocolError(
                ErrorCode.BAD_FIELD, f"a channel state is {_PACKED.size} bytes, not {len(data)}"
            )
        return cls(*_PACKED.unpack(data))


@dataclasses.dataclass(frozen=True)
class Update(Message):
    """The payer's next state and its signature over it."""

    TYPE: ClassVar[str] = "channel_update"
    state: bytes
    signature: bytes

    def check(self) -> None:
        require(len(self.state) == _PACKED.size, f"a channel state is {_PACKED.size} bytes")
        require(len(self.signature) == SIGNATURE_BYTES, f"a signature is {SIGNATURE_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class Countersigned(Message):
    TYPE: ClassVar[str] = "channel_countersigned"
    signature: bytes

    def check(self) -> None:
        require(len(self.signature) == SIGNATURE_BYTES, f"a signature is {SIGNATURE_BYTES} bytes")


REQUESTS: Final = Schema([Update])
REPLIES: Final = Schema([Countersigned, Error])
