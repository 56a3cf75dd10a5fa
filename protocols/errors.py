"""Typed protocol errors: every rejected message maps to one code, sent back as an ``Error``."""

from enum import StrEnum

from hydra.errors import HydraError


class ErrorCode(StrEnum):
    BAD_FRAME = "bad_frame"  # length prefix missing or stream ended mid-frame
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_MSGPACK = "bad_msgpack"
    BAD_MESSAGE = "bad_message"  # valid msgpack, but not a map with a known "t"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"  # missing, extra or wrongly typed field, or a bound exceeded
    UNEXPECTED = "unexpected"  # a valid message where the protocol does not allow it
    INVALID_RECORD = "invalid_record"  # signature, expiry or schema of a peer record
    OVERLOADED = "overloaded"  # no session slot or cache room left; retry elsewhere
    # inference sessions
    UNKNOWN_SESSION = "unknown_session"  # a step or close on a stream with no open session
    WRONG_LAYERS = "wrong_layers"  # this peer does not serve that model or those blocks
    BAD_TENSOR = "bad_tensor"  # activations of the wrong hidden size
    OUT_OF_ORDER = "out_of_order"  # a step not at the session's next position
    PREFIX_MISS = "prefix_miss"  # the prefix a session asked to reuse is not (or no longer) cached here
    MAX_LENGTH_EXCEEDED = "max_length_exceeded"
    CACHE_FULL = "cache_full"  # a step would take a compacting session's cache past its grant
    NEXT_HOP_FAILED = "next_hop_failed"  # another stage of the route (the error's peer) died or stalled
    ROUTE_BROKEN = "route_broken"  # a stage's predecessor (the error's peer?) left mid-session: probe to know
    BAD_ONION = "bad_onion"  # a session header this peer cannot open (wrong key, tampered)
    SEAL_FAILED = "seal_failed"  # a sealed step failed authentication: tampered, replayed, reordered
    # verification
    BAD_RECEIPT = "bad_receipt"  # the predecessor's signed receipt does not match its activations
    NOT_FOR_ROUTE = "not_for_route"  # a challenge that no stage of the route can open
    # economy
    BAD_RECEIPT_SIGNATURE = "bad_receipt_signature"  # a payment receipt its payer did not sign
    WRONG_AMOUNT = "wrong_amount"  # a receipt for other work than this stage did
    STALE = "stale"  # a receipt or state older than one already accepted
    PAYMENT_REQUIRED = "payment_required"  # too much of this session's work is unreceipted
    BAD_SIGNATURE = "bad_signature"  # an event, entry or channel state its signer did not sign
    OVERDRAFT = "overdraft"  # more HYDRA than the account holds (liquid, staked or deposited)
    TOO_MANY_CHANNELS = "too_many_channels"  # a peer already has its maximum of open channels
    DUPLICATE = "duplicate"  # already in the token log (a claim, evidence or channel id)
    BAD_EVIDENCE = "bad_evidence"  # slash evidence that does not prove what it claims
    NOT_ALLOWED = "not_allowed"  # an event its author may not make now (wrong party, window)
    BAD_ENTRY = "bad_entry"  # a log entry out of sequence, unchained or under-signed
    INTERNAL = "internal"


class ProtocolError(HydraError):
    """A message or frame that breaks the wire contract; carries the code to reply with."""

    http_status = 400

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = self.protocol_code = code
        self.message = message


def require(condition: bool, what: str) -> None:
    """Schema bound check for ``Message.check``: a failed one is a ``BAD_FIELD`` error."""
    if not condition:
        raise ProtocolError(ErrorCode.BAD_FIELD, what)
