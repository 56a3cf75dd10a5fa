"""Receipts on ``protocols.ids.RECEIPT``: a payer's signed, cumulative statement of the work a
stage did for one session, which the stage countersigns.

Payment travels hop by hop along the route, as payment networks route it: the coordinator
pays the first stage for the whole route's work, each stage pays its successor for the rest
of the route, and keeps the difference (its own share). Every stage therefore deals only
with its predecessor and successor, whom it already knows; no receipt names the coordinator
to a middle stage.
"""

import dataclasses
from typing import ClassVar, Final

from protocols.codec import Error, Message, Schema
from protocols.errors import require
from protocols.inference import MAX_HOPS, MAX_LENGTH, SESSION_ID_BYTES, SIGNATURE_BYTES
from protocols.records import MAX_TEXT
from protocols.verify import DIGEST_BYTES


@dataclasses.dataclass(frozen=True)
class ReceiptBody(Message):
    TYPE: ClassVar[str] = "receipt_body"
    payer: str
    payee: str
    session_id: bytes  # the hop's session id, as the payee knows it
    model: str
    layer_start: int  # the payee's span
    layer_end: int
    tokens: int  # tokens the payer has sent the payee in this session so far
    units: int  # stage-tokens owed: tokens x the stages from the payee to the end of the route
    seq: int  # strictly increasing per session; the latest receipt is the one that counts
    work_root: bytes  # blake2b chain over the digests of the activations sent on this hop

    def check(self) -> None:
        require(0 < len(self.payer) <= MAX_TEXT and 0 < len(self.payee) <= MAX_TEXT, "bad peer id")
        require(len(self.session_id) == SESSION_ID_BYTES, f"session id is {SESSION_ID_BYTES} bytes")
        require(0 < len(self.model) <= MAX_TEXT, "bad model id")
        require(0 <= self.layer_start <= self.layer_end <= MAX_LENGTH, "bad span")
        require(
            0 <= self.tokens <= MAX_LENGTH and 0 <= self.units <= MAX_LENGTH * MAX_HOPS, "amount out of range"
        )
        require(0 <= self.seq < 1 << 32, "sequence out of range")
        require(len(self.work_root) == DIGEST_BYTES, f"the work root is {DIGEST_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class Receipt(Message):
    TYPE: ClassVar[str] = "receipt"
    body: bytes  # msgpack of a ReceiptBody: signed as sent, no canonical encoding needed
    payer_signature: bytes

    def check(self) -> None:
        require(0 < len(self.body) <= 4096, "receipt body empty or too large")
        require(len(self.payer_signature) == SIGNATURE_BYTES, f"a signature is {SIGNATURE_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class Countersigned(Message):
    TYPE: ClassVar[str] = "countersigned"
    payee_signature: bytes

    def check(self) -> None:
        require(len(self.payee_signature) == SIGNATURE_BYTES, f"a signature is {SIGNATURE_BYTES} bytes")


RECEIPT_EVERY: Final = 256  # tokens: a payer sends a receipt once this many are unpaid

BODIES: Final = Schema([ReceiptBody])
REQUESTS: Final = Schema([Receipt])
REPLIES: Final = Schema([Countersigned, Error])
