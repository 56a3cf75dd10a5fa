"""Pipeline inference on ``protocols.ids.INFERENCE``: one stream is one session on one hop.

The upstream side (the coordinator, or the previous stage) opens a stream, sends
``OpenSession`` carrying this stage's ``HopHeader`` (its blocks, limits, keys and next hop,
sealed for this peer alone), then any number of ``Step`` messages, then ``CloseSession`` (or
just closes the stream). A stage opens its own stream to the next hop when its session opens
and pushes each step's output there: activations travel stage to stage, never back through
the coordinator between hops. Only hidden states cross the wire, sealed per hop; token ids
stay at the coordinator.

The last stage's output (``Hidden``) returns one of two ways, named in the headers:
- **direct** (``HopHeader.direct``): steps get no reply. The coordinator opens a second stream
  to the last stage and claims the session's output with ``Collect`` (the token in the last
  stage's header); the last stage pushes every step's ``Hidden`` there: N+1 messages per token
  for N stages. A stage that cannot take a step passes an ``Error`` (naming the peer at fault)
  on instead, down to the coordinator the same way; a stage whose predecessor vanishes
  mid-session reports that one. A stall (no output, no error) is found with ``Probe``, which
  every stage answers only after the steps before it, with the positions the route reached.
- **relayed**: each step is answered with the last stage's ``Hidden``, relayed back through
  every stage (2N messages), so the last stage never learns who the coordinator is.

Each step carries the commitments (``protocols.verify``) of the stages before, each encrypted
for the coordinator alone; a stage appends its own, and the last stage's ``Hidden`` holds the
route's. A stage also hands its successor a signed ``receipt`` for the activations it sends,
so a stage can prove what it was given.

A ``Step`` may carry several chunks (``chunks`` sums to the sequence length). Chunks run one
after another, so a replacement peer rebuilding its cache from a replayed history computes
with exactly the shapes of the original run, and its cache is bit-identical.

Speculative decoding sends drafted tokens as one ``draft`` step (a stage keeps what undoing
it needs); the next step may then ``rewind``: it starts inside the last step, where the
accepted tokens end, and every stage first takes its session back there.
"""

import dataclasses
import math
from typing import ClassVar, Final

from protocols.codec import Error, Message, Schema
from protocols.errors import require
from protocols.records import MAX_ADDRS, MAX_TEXT

MAX_FRAME: Final = 32 << 20  # one step's activations: 32 MiB (e.g. 1,600 tokens at hidden 5120)
MAX_HOPS: Final = 64
MAX_HEADER: Final = 64 << 10  # a whole route's nested headers, sealed
KEY_BYTES: Final = 32
MAX_LENGTH: Final = 1 << 17  # longest session a peer will consider, in tokens
SESSION_ID_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64  # Ed25519
MAX_COMMITMENT: Final = 256  # one stage's encrypted commitment for one step
PREFIX_BLOCK: Final = 64  # tokens per block of a prompt's prefix hash chain
PREFIX_HASH_BYTES: Final = 16
COLLECT_TOKEN_BYTES: Final = 16
MAX_PREFIX_BLOCKS: Final = 128  # a session names at most this many blocks (8,192 tokens)
TENSOR_DTYPES: Final = {"float32": 4, "bfloat16": 2, "float16": 2}
SELECTIONS: Final = ("attention", "omp")  # how KV compaction chooses the keys it keeps
MAX_SPAN_BLOCKS: Final = 1024  # blocks one stage's compaction budgets may name
MAX_KV_HEADS: Final = 256


@dataclasses.dataclass(frozen=True)
class Tensor(Message):
    """Activations [batch=1, tokens, hidden], raw little-endian bytes."""

    TYPE: ClassVar[str] = "tensor"
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def check(self) -> None:
        require(self.dtype in TENSOR_DTYPES, f"dtype must be one of {sorted(TENSOR_DTYPES)}")
        require(len(self.shape) == 3 and self.shape[0] == 1, "shape must be [1, tokens, hidden]")
        require(all(0 < d <= MAX_LENGTH for d in self.shape), "tensor dimensions out of range")
        expected = math.prod(self.shape) * TENSOR_DTYPES[self.dtype]
        require(len(self.data) == expected, f"{len(self.data)} data bytes, shape needs {expected}")


@dataclasses.dataclass(frozen=True)
class Hop(Message):
    """One stage of a route: who, where, and which blocks [layer_start, layer_end). An empty
    range makes the hop a relay: it runs no blocks and passes the activations on (so that the
    next hop does not learn who opened the session)."""

    TYPE: ClassVar[str] = "hop"
    peer_id: str
    addrs: tuple[str, ...]
    layer_start: int
    layer_end: int

    def check(self) -> None:
        require(0 < len(self.peer_id) <= MAX_TEXT, "bad peer id")
        require(0 < len(self.addrs) <= MAX_ADDRS, f"1..{MAX_ADDRS} addrs")
        require(all(0 < len(a) <= MAX_TEXT for a in self.addrs), "addr empty or too long")
        require(0 <= self.layer_start <= self.layer_end, "bad layer range")


@dataclasses.dataclass(frozen=True)
class Compaction(Message):
    """How a stage compacts this session's KV cache when a step says so (``Step.compact``), by
    Attention Matching (``hydra.compaction``); the same for every peer that ever holds the
    span, so a failover's replay compacts alike."""

    TYPE: ClassVar[str] = "compaction"
    refit: bool = True  # per-key biases and refitted values (phase 2); else the selection alone
    selection: str = "attention"  # keys by their attention, or "omp" (matching pursuit)
    # per block of the span: the share of a step's target each KV head keeps, one share for
    # every head or one per head (phase 3); empty: the whole target everywhere
    shares: tuple[tuple[float, ...], ...] = ()

    def check(self) -> None:
        require(self.selection in SELECTIONS, f"selection must be one of {SELECTIONS}")
        require(len(self.shares) <= MAX_SPAN_BLOCKS, f"at most {MAX_SPAN_BLOCKS} blocks of shares")
        sizes_ok = all(0 < len(block) <= MAX_KV_HEADS for block in self.shares)
        require(sizes_ok, f"1..{MAX_KV_HEADS} shares a block")
        require(all(0 < s <= 1 for block in self.shares for s in block), "shares must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class HopHeader(Message):
    """What one stage may know of a session: its blocks, limits, keys, and the next hop only.

    The coordinator builds one per stage, innermost first; each carries the next stage's
    header already sealed for that stage (``next_header``), so a stage learns its successor
    and nothing further down the route."""

    TYPE: ClassVar[str] = "hop_header"
    layer_start: int
    layer_end: int
    max_length: int  # tokens this session may reach; the stage reserves cache for it
    dtype: str  # of the activations the session exchanges
    step_timeout: float  # seconds a step may take from this stage to the end of the route
    expires_at: float  # unix time after which this header opens no session (replays expire)
    key_in: bytes = b""  # opens steps from the predecessor; empty: activations in the clear
    key_out: bytes = b""  # seals this stage's output for its successor (or, last, the coordinator)
    key_report: bytes = b""  # encrypts this stage's commitments and reveals for the coordinator
    next_hop: Hop | None = None  # None: this stage is the last
    next_session_id: bytes = b""
    next_ephemeral: bytes = b""
    next_header: bytes = b""
    priority: bytes = b""  # a priority ticket's secret: a full stage admits the session first
    # the prompt's prefix hash chain (one per PREFIX_BLOCK tokens; salted, so it reveals no
    # tokens): the stage keeps those blocks' cache, and restores the first ``reuse`` tokens
    prefix: tuple[bytes, ...] = ()
    reuse: int = 0
    direct: bool = False  # the output returns straight to the coordinator: steps get no reply
    collect: bytes = b""  # (direct, last stage) the token the coordinator collects the output with
    # the session's KV cache may be compacted: the stage may then grant less cache than
    # ``max_length`` needs (``SessionOpened.cache_tokens``), and keep it there when told to
    compaction: Compaction | None = None

    @property
    def relay(self) -> bool:
        return self.layer_start == self.layer_end

    def check(self) -> None:
        require(0 <= self.layer_start <= self.layer_end, "bad layer range")
        require(not self.relay or self.next_hop is not None, "a relay cannot end a route")
        require(0 < self.max_length <= MAX_LENGTH, f"max_length must be 1..{MAX_LENGTH}")
        require(len(self.priority) in (0, 32), "a priority ticket is 32 bytes")
        self._check_prefix()
        require(self.dtype in TENSOR_DTYPES, f"dtype must be one of {sorted(TENSOR_DTYPES)}")
        require(0 < self.step_timeout <= 600, "step_timeout must be in (0, 600] seconds")
        require(self.compaction is None or not self.prefix, "a compacted session keeps no prefix")
        require(math.isfinite(self.expires_at) and self.expires_at > 0, "expires_at must be a time")
        require(len(self.key_in) in (0, KEY_BYTES) and len(self.key_out) in (0, KEY_BYTES),
                f"keys are {KEY_BYTES} bytes")
        require(bool(self.key_in) == bool(self.key_out), "keys come in pairs")
        require(len(self.key_report) == KEY_BYTES, f"the report key is {KEY_BYTES} bytes")
        last_direct = self.direct and self.next_hop is None
        require(len(self.collect) == (COLLECT_TOKEN_BYTES if last_direct else 0),
                f"a direct route's last stage needs a {COLLECT_TOKEN_BYTES}-byte collect token")
        if self.next_hop is not None:
            require(len(self.next_session_id) == SESSION_ID_BYTES, "next hop needs a session id")
            require(len(self.next_ephemeral) in (0, KEY_BYTES), f"ephemeral key is {KEY_BYTES} bytes")
            require(0 < len(self.next_header) <= MAX_HEADER, "next header missing or too large")

    def _check_prefix(self) -> None:
        require(len(self.prefix) <= MAX_PREFIX_BLOCKS, f"at most {MAX_PREFIX_BLOCKS} prefix blocks")
        require(all(len(h) == PREFIX_HASH_BYTES for h in self.prefix), "bad prefix hash length")
        blocks, rest = divmod(self.reuse, PREFIX_BLOCK)
        require(0 <= blocks <= len(self.prefix) and not rest, "reuse must be whole blocks the header names")
        require(self.reuse < self.max_length, "reuse must leave room in the session")


@dataclasses.dataclass(frozen=True)
class OpenSession(Message):
    """Open a session on this stage. ``header`` is a ``HopHeader``: sealed for this peer's
    X25519 key with ``ephemeral_key`` (onion routing), or plain msgpack when that is empty."""

    TYPE: ClassVar[str] = "open"
    session_id: bytes
    model: str
    header: bytes
    ephemeral_key: bytes = b""

    def check(self) -> None:
        require(len(self.session_id) == SESSION_ID_BYTES, f"session id is {SESSION_ID_BYTES} bytes")
        require(0 < len(self.model) <= MAX_TEXT, "bad model id")
        require(0 < len(self.header) <= MAX_HEADER, f"header must be 1..{MAX_HEADER} bytes")
        require(len(self.ephemeral_key) in (0, KEY_BYTES), f"ephemeral key is {KEY_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class Step(Message):
    """Activations for the next positions: ``hidden`` in the clear, or ``sealed`` (an
    AES-256-GCM sealed ``Tensor``, nonce bound to the message's sequence number)."""

    TYPE: ClassVar[str] = "step"
    position: int  # index of the first token in the session
    hidden: Tensor | None = None
    sealed: bytes = b""
    chunks: tuple[int, ...] = ()  # run in pieces of these lengths; empty = one piece
    return_all: bool = False  # reply with every position's output, not only the last one
    receipt: bytes = b""  # the sending stage's signature over these activations (none from the coordinator)
    draft: bool = False  # drafted tokens: the next step may rewind into this one
    rewind: bool = False  # ``position`` is inside the last step: go back there first
    commitments: tuple[bytes, ...] = ()  # the stages' before this one, route order
    # first compact the session's KV cache to at most this many entries per attention block
    # and KV head (the header's ``compaction`` says how); 0: don't
    compact: int = 0

    def check(self) -> None:
        require(self.position >= 0, "negative position")
        require(0 <= self.compact <= MAX_LENGTH, "bad compaction target")
        check_commitments(self.commitments)
        require(len(self.receipt) in (0, SIGNATURE_BYTES), f"a receipt is {SIGNATURE_BYTES} bytes")
        require((self.hidden is None) != (not self.sealed), "exactly one of hidden and sealed")
        require(all(c > 0 for c in self.chunks), "chunk lengths must be positive")
        if self.hidden is not None and self.chunks:
            require(sum(self.chunks) == self.hidden.shape[1], "chunks must sum to the tokens")


@dataclasses.dataclass(frozen=True)
class CloseSession(Message):
    TYPE: ClassVar[str] = "close"
    done: int = 0  # tokens whose output reached the coordinator (what the route is paid for)

    def check(self) -> None:
        require(self.done >= 0, "negative done")


@dataclasses.dataclass(frozen=True)
class Collect(Message):
    """On a stream of its own to a direct route's last stage: send this session's output here
    (the session it knows as ``session_id``, claimed with its header's collect token)."""

    TYPE: ClassVar[str] = "collect"
    session_id: bytes
    token: bytes

    def check(self) -> None:
        require(len(self.session_id) == SESSION_ID_BYTES, f"session id is {SESSION_ID_BYTES} bytes")
        require(len(self.token) == COLLECT_TOKEN_BYTES, f"a collect token is {COLLECT_TOKEN_BYTES} bytes")


@dataclasses.dataclass(frozen=True)
class Probe(Message):
    """Where has the route got to? Answered (``Progress``) after every step sent before it;
    each stage gives its successor a little less than ``timeout`` seconds to answer, and
    names it (``Error``) if it does not."""

    TYPE: ClassVar[str] = "probe"
    timeout: float

    def check(self) -> None:
        require(math.isfinite(self.timeout) and 0 < self.timeout <= 600, "timeout must be in (0, 600]")


@dataclasses.dataclass(frozen=True)
class SessionOpened(Message):
    TYPE: ClassVar[str] = "opened"
    hops: int  # stages opened from this one to the end of the route
    # a compacting session: the cache entries every stage from this one on holds at most
    # (each attention block); the coordinator compacts before a step would need more
    cache_tokens: int = 0

    def check(self) -> None:
        require(0 <= self.cache_tokens <= MAX_LENGTH, "bad cache_tokens")


@dataclasses.dataclass(frozen=True)
class Hidden(Message):
    """The last stage's output, relayed back to the coordinator; sealed for the coordinator
    alone when the session is protected, so the stages relaying it cannot read it."""

    TYPE: ClassVar[str] = "hidden"
    position: int
    hidden: Tensor | None = None
    sealed: bytes = b""
    commitments: tuple[bytes, ...] = ()  # one per stage, route order

    def check(self) -> None:
        require((self.hidden is None) != (not self.sealed), "exactly one of hidden and sealed")
        check_commitments(self.commitments)


@dataclasses.dataclass(frozen=True)
class Collecting(Message):
    TYPE: ClassVar[str] = "collecting"


@dataclasses.dataclass(frozen=True)
class Progress(Message):
    """Each stage's position, from the answering one to the end of the route."""

    TYPE: ClassVar[str] = "progress"
    positions: tuple[int, ...]

    def check(self) -> None:
        require(0 < len(self.positions) <= MAX_HOPS, f"1..{MAX_HOPS} positions")
        require(all(0 <= p <= MAX_LENGTH for p in self.positions), "position out of range")


@dataclasses.dataclass(frozen=True)
class SessionClosed(Message):
    TYPE: ClassVar[str] = "closed"


def check_commitments(commitments: tuple[bytes, ...]) -> None:
    require(len(commitments) <= MAX_HOPS, f"at most {MAX_HOPS} commitments")
    require(all(len(c) <= MAX_COMMITMENT for c in commitments), "commitment too large")


# an ``Error`` travels as a request too: on a direct route it is passed on, like a step
REQUESTS: Final = Schema([OpenSession, Step, CloseSession, Collect, Probe, Error])
REPLIES: Final = Schema([SessionOpened, Hidden, SessionClosed, Collecting, Progress, Error])
