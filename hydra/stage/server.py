"""A peer's stage: sessions over its span of blocks, each with its own cache, bounded in count,
memory and idle time, pushing each step's output to the next hop of the route.

One libp2p stream carries one session (``StageConversation``); the stream's end, however it
ends, frees the session's cache and closes the stream to the next hop. On a direct route the
last stage sends each step's output to the coordinator on a stream the coordinator opened to
collect it, and errors travel forward the same way (``protocols.inference``); on a relayed
route each step is answered through the stages before. Forward passes run on the process's
compute thread, so the trio loop keeps serving while a step computes.
Every step is committed to and its input kept for audits (``hydra.stage.audit``), which
arrive on their own protocol while the session is open.
"""

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

import torch
import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from transformers.cache_utils import Cache

from hydra.compaction.cache import cache_entries, query_sample_bytes
from hydra.economy.ledger import Ledger
from hydra.economy.receipts import work_root
from hydra.economy.service import TokenService
from hydra.p2p.limits import PeerRateLimiter
from hydra.p2p.streams import Conversation, Outbox, serve
from hydra.privacy.channel import RETURN_LABEL, STEP_LABEL, ActivationChannel
from hydra.privacy.keys import KxKey
from hydra.privacy.onion import ReplayGuard, open_header
from hydra.privacy.sealing import SealError
from hydra.runtime.batcher import Batcher
from hydra.runtime.compiled import MIN_POSITION
from hydra.runtime.compute import run_compute
from hydra.runtime.memory import cache_bytes_per_token, session_state_bytes
from hydra.runtime.shard import StageBlocks, Undo
from hydra.runtime.wire import WIRE_DTYPES, from_wire, to_wire
from hydra.stage.audit import SessionAudit, VerifyConversation
from hydra.stage.limits import StageLimits
from hydra.stage.links import (
    INFERENCE_LINK,
    RECEIPT_LINK,
    VERIFY_LINK,
    HopFailed,
    Link,
    LinkProtocol,
    LocalLink,
    RemoteLink,
    attributed,
    downstream_budget,
    hop_failed_error,
)
from hydra.stage.prefixes import PrefixStore
from hydra.stage.receipts import ReceiptConversation, pay
from hydra.verification.commitments import Terms, receipt_valid, sign_receipt
from protocols import inference, receipt, verify
from protocols.codec import Error, Message, Schema
from protocols.errors import ErrorCode, ProtocolError
from protocols.receipt import RECEIPT_EVERY
from protocols.verify import tensor_digest

CLOSE_TIMEOUT_S = 5.0  # to pass a session's close on to the next hop
MIN_CACHE_GRANT = 32  # cache entries below which a compacting session is refused, not granted

log = logging.getLogger(__name__)


@dataclass
class Session:
    id: bytes  # key in the stage's table
    hop_session_id: bytes  # the id the predecessor knows it by
    owner: str  # the peer that opened it (its share of slots and cache is capped)
    cache: Cache
    max_length: int
    dtype: str
    reserved_bytes: int
    step_timeout: float
    inbound: ActivationChannel  # steps from the predecessor
    outbound: ActivationChannel  # output to the successor or, from the last stage, the coordinator
    audit: SessionAudit
    next_hop: inference.Hop | None = None
    next_session_id: bytes = b""
    relay: bool = False  # runs no blocks: passes its input on unchanged
    direct: bool = False  # steps get no reply; the output (or an error) travels on to the coordinator
    collect_token: bytes = b""  # (direct, last stage) claims the output for the coordinator
    collector: Outbox | None = None  # ... where it goes once claimed
    hops: int = 1  # stages from this one to the end of the route (what a receipt pays for)
    receipt_seq: int = -1  # of the latest receipt its predecessor paid with
    receipted: int = 0  # tokens that receipt covers
    paid: int = 0  # tokens this stage has paid its successor for
    pay_seq: int = 0  # of the next receipt it sends
    position: int = 0
    confirmed: int = 0  # positions whose output reached the coordinator (it sent a step after them)
    downstream: Link | None = None
    broken: str = ""  # why the session can no longer step (its next hop failed)
    blame: str = ""  # ... the peer at fault
    next_failed: bool = False  # ... and whether the next hop itself died or stalled (not worth paying)
    last_start: int = -1  # where the last step began: a rewind may go back into it
    undo: Undo | None = None  # a draft step's recurrent states before it (hybrid models)
    prefix: tuple[bytes, ...] = ()  # the prompt's block hashes: blocks to keep in the prefix cache
    compaction: inference.Compaction | None = None  # how its KV cache is compacted when a step says so
    cache_tokens: int = 0  # (compacting) cache entries granted per attention block
    kept: int = 0  # ... of which the prefix cache has the first this many
    opened_at: float = field(default_factory=time.monotonic)


DECODE = "decode"  # the batch key of one-token steps


@dataclass(frozen=True)
class Work:
    """A session's step for the compute thread."""

    hidden: torch.Tensor
    chunks: tuple[int, ...]
    cache: Cache
    position: int


class StageServer:
    def __init__(
        self,
        host: IHost | None,
        model_id: str,
        blocks: StageBlocks,
        limits: StageLimits,
        identity: KeyPair,
        ledger: Ledger | None = None,
    ) -> None:
        self.host = host
        self.identity = identity  # signs commitments and receipts
        self.peer_id = ID.from_pubkey(identity.public_key).to_base58()
        self.ledger = ledger or Ledger()  # credits earned from predecessors, paid to successors
        self.tokens: TokenService | None = None  # mints HYDRA for receipts, pays successors by channel
        self.kx = KxKey.create(identity)  # opens onion headers sealed for this peer
        self.replays = ReplayGuard()
        self.model_id = model_id
        self.blocks = blocks
        self.limits = limits
        self.sessions: dict[bytes, Session] = {}
        # per token of a session: its KV cache, and what it keeps for audits (its input and
        # output as exchanged; counted at float32, the widest activation dtype)
        audit = 2 * blocks.hidden_size * WIRE_DTYPES["float32"].itemsize
        self.kv_per_token = max(1, cache_bytes_per_token(blocks.config, blocks.dtype))
        self.per_token = self.kv_per_token + audit
        self.per_session = session_state_bytes(blocks.config)
        # a compacting session keeps no inputs for audits (it is not audited), but a sample of
        # its queries in every attention block
        self.per_compacting_session = self.per_session + query_sample_bytes(blocks.config, blocks.dtype)
        self.steps_served = 0
        self.tokens_served = 0  # positions computed for others: a prompt's many, a decode step's one
        self.compactions = 0
        self.batcher = Batcher(self._run_work, limits.max_batch, limits.batch_window)
        self.prefixes = PrefixStore() if not blocks.recurrent else None

    def attach(self, host: IHost) -> None:
        """Serve this stage's protocols on ``host``: sessions, challenges and receipts."""
        self.host = host
        served: tuple[tuple[LinkProtocol, Schema, Callable[[ID, Outbox], Conversation]], ...] = (
            (INFERENCE_LINK, inference.REQUESTS,
             lambda remote, outbox: StageConversation(self, remote.to_base58(), outbox)),
            (VERIFY_LINK, verify.REQUESTS, lambda remote, _: VerifyConversation(self, remote.to_base58())),
            (RECEIPT_LINK, receipt.REQUESTS, lambda remote, _: ReceiptConversation(self, remote.to_base58())),
        )
        for link, requests, conversation in served:
            host.set_stream_handler(
                TProtocol(link.id),
                serve(
                    requests,
                    conversation=conversation,
                    max_frame=link.max_frame,
                    idle_timeout=self.limits.idle_timeout,
                    limiter=PeerRateLimiter(self.limits.peer_rate, self.limits.peer_burst),
                ),
            )

    def find_session(self, owner: str, hop_session_id: bytes) -> "Session | None":
        """The open session ``owner`` knows as ``hop_session_id``."""
        return next(
            (s for s in self.sessions.values() if s.owner == owner and s.hop_session_id == hop_session_id),
            None,
        )

    def collectable(self, request: inference.Collect) -> "Session | None":
        """The direct route's last-stage session ``request`` claims (by its id and token)."""
        return next(
            (s for s in self.sessions.values() if s.hop_session_id == request.session_id
             and s.collect_token and hmac.compare_digest(s.collect_token, request.token)),
            None,
        )

    def local_link(self, owner: str) -> Link:
        """A session on this stage for a coordinator in the same process: the same messages
        and checks as over a stream, without one."""
        return LocalLink(owner, lambda outbox: StageConversation(self, owner, outbox))

    @property
    def reserved_bytes(self) -> int:
        return sum(s.reserved_bytes for s in self.sessions.values())

    def admit(self, owner: str, reserve: int, tokens: int, priority: bool = False) -> None:
        """Refuse (``overloaded``) a session the node, or this owner's share, has no room for.
        The last ``priority_share`` of the slots and the cache is kept for priority sessions."""
        limits = self.limits
        if self.prefixes is not None:  # cached prefixes make way for sessions
            self.prefixes.make_room(max(0, limits.cache_bytes - self.reserved_bytes - reserve))
        room = 1.0 if priority else 1.0 - limits.priority_share
        kept = "" if priority else " for sessions without a priority ticket"
        mine = [s for s in self.sessions.values() if s.owner == owner]
        if len(self.sessions) >= max(1, int(limits.max_sessions * room)):
            raise ProtocolError(ErrorCode.OVERLOADED, f"no session slot left on this peer{kept}")
        if len(mine) >= max(1, int(limits.max_sessions * limits.peer_share)):
            raise ProtocolError(ErrorCode.OVERLOADED, "this peer holds its share of session slots")
        if self.reserved_bytes + reserve > limits.cache_bytes * room:
            raise ProtocolError(
                ErrorCode.OVERLOADED,
                f"no cache room for {tokens} tokens{kept} ({self.cache_tokens_free()} free)",
            )
        if sum(s.reserved_bytes for s in mine) + reserve > limits.cache_bytes * limits.peer_share:
            raise ProtocolError(ErrorCode.OVERLOADED, "this peer holds its share of the cache")

    def cache_tokens_free(self) -> int:
        return max(0, self.limits.cache_bytes - self.reserved_bytes) // self.per_token

    def cache_grant(self, owner: str, max_length: int, priority: bool) -> int:
        """The cache entries a compacting session of ``owner`` gets: as many as ``max_length``
        needs if they fit, else half the room left (it compacts to live within them, and the
        next session still finds some); at least ``MIN_CACHE_GRANT``, which ``admit`` refuses
        if even those do not fit."""
        limits = self.limits
        room = limits.cache_bytes * (1.0 if priority else 1.0 - limits.priority_share) - self.reserved_bytes
        mine = sum(s.reserved_bytes for s in self.sessions.values() if s.owner == owner)
        room = min(room, limits.cache_bytes * limits.peer_share - mine)
        if self.prefixes is not None:  # cached prefixes make way for sessions
            room += self.prefixes.bytes
        fits = int(room - self.per_compacting_session) // self.kv_per_token
        if fits >= max_length:
            return max_length
        return max(MIN_CACHE_GRANT, fits // 2)

    def status(self) -> dict[str, object]:
        return {
            "model": self.model_id,
            "layers": [self.blocks.layer_start, self.blocks.layer_end],
            "precision": self.blocks.precision,
            "backend": self.blocks.backend,
            "compiled": self.blocks.compile,
            "sessions": len(self.sessions),
            "cache_tokens_free": self.cache_tokens_free(),
            "steps_served": self.steps_served,
            "tokens_served": self.tokens_served,
            "compactions": self.compactions,
            "prefix_cache": self._prefix_status(),
            "batching": {
                "max_batch": self.batcher.max_batch,
                "batches": self.batcher.stats.batches,
                "mean_rows": round(self.batcher.stats.mean_rows, 2),
                "largest": self.batcher.stats.largest,
                "busy_s": round(self.batcher.stats.busy_s, 3),
            },
        }

    def _prefix_status(self) -> dict[str, object] | None:
        store = self.prefixes
        if store is None:
            return None
        return {"blocks": len(store), "bytes": store.bytes, "kept": store.kept, "reused": store.hits}

    async def keep_prefix(self, session: Session) -> None:
        """Keep the prompt blocks ``session`` has computed in the prefix cache."""
        store = self.prefixes
        if store is None or session.kept >= len(session.prefix) or session.relay:
            return
        room = self.limits.cache_bytes - self.reserved_bytes
        session.kept = await run_compute(store.keep, session.prefix, session.cache, session.position, room)

    async def run(
        self, session: Session, hidden: torch.Tensor, chunks: tuple[int, ...], position: int
    ) -> torch.Tensor:
        """``hidden`` through the span for ``session``; a one-token step may share a forward
        pass with other sessions' steps (``hydra.runtime.batcher``)."""
        decode = hidden.shape[1] == 1 and position >= MIN_POSITION
        work = Work(hidden, chunks, session.cache, position)
        return await self.batcher.submit(work, DECODE if decode else None, session.id)

    def _run_work(self, batch: "list[Work]") -> list[torch.Tensor]:
        """Blocking: one piece of work alone, or one-token steps together (compute thread)."""
        if len(batch) == 1:
            (work,) = batch
            return [self.run_chunks(work.hidden, work.chunks, work.cache, work.position)]
        return self.blocks.forward_batch(
            [w.hidden for w in batch], [w.cache for w in batch], [w.position for w in batch]
        )

    def run_chunks(
        self, hidden: torch.Tensor, chunks: tuple[int, ...], cache: Cache, position: int
    ) -> torch.Tensor:
        """Blocking: run ``hidden`` through the span in ``chunks`` (worker thread only)."""
        outputs, offset = [], 0
        for size in chunks or (hidden.shape[1],):
            piece = hidden[:, offset : offset + size]
            outputs.append(self.blocks.forward(piece, cache, position + offset))
            offset += size
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


class StageConversation:
    """One stream's session on this stage (``remote`` is the predecessor's peer ID), or the
    stream a direct route's coordinator collects the output of a session here from."""

    def __init__(self, server: StageServer, remote: str, outbox: Outbox) -> None:
        self.server = server
        self.remote = remote
        self.outbox = outbox  # back to the predecessor (or, collecting, to the coordinator)
        self.session: Session | None = None
        self.collecting: Session | None = None
        self.done: int | None = None  # the coordinator's count of outputs received, once closing
        self.opened = False  # the session opened along the whole route

    def busy(self) -> bool:
        """Collecting the output of a session still open (its coordinator sends nothing here)."""
        return self.collecting is not None and self.collecting.id in self.server.sessions

    async def handle(self, message: Message) -> Message | None:
        match message:
            case inference.OpenSession():
                return await self._open(message)
            case inference.Step():
                return await self._take(message)
            case inference.Probe():
                return await self._probe(message)
            case inference.Collect():
                return self._collect(message)
            case Error():
                return await self._pass_error(message)
            case inference.CloseSession():
                return await self._close(message)
        raise ProtocolError(ErrorCode.UNEXPECTED, f"{message.TYPE} is not a request")

    async def _open(self, request: inference.OpenSession) -> Message:
        server = self.server
        if self.session is not None or self.collecting is not None:
            raise ProtocolError(ErrorCode.UNEXPECTED, "this stream already carries a session")
        header = open_header(request, server.kx)
        server.replays.admit(request, header)
        blocks = server.blocks
        if not header.relay and (request.model, header.layer_start, header.layer_end) != (
            server.model_id, blocks.layer_start, blocks.layer_end,
        ):
            raise ProtocolError(
                ErrorCode.WRONG_LAYERS,
                f"this peer serves {server.model_id} blocks {blocks.layer_start}:{blocks.layer_end}, not "
                f"{request.model} {header.layer_start}:{header.layer_end}",
            )
        priority = bool(header.priority) and server.tokens is not None
        priority = priority and await server.tokens.ticket_valid(header.priority)
        compaction = None if header.relay else self._compaction(header)
        granted = 0
        if compaction is None:
            reserve = header.max_length * server.per_token + server.per_session
        else:
            granted = server.cache_grant(self.remote, header.max_length, priority)
            reserve = granted * server.kv_per_token + server.per_compacting_session
        server.admit(self.remote, reserve, granted or header.max_length, priority)
        last = header.next_hop is None
        terms = Terms(
            request.session_id, request.model, header.layer_start, header.layer_end,
            b"" if header.relay else blocks.model_hash, header.dtype,
        )
        session = Session(
            id=request.session_id + secrets.token_bytes(4),  # two coordinators may pick one id
            hop_session_id=request.session_id,
            owner=self.remote,
            cache=blocks.new_cache(compacting=compaction is not None),
            max_length=header.max_length,
            dtype=header.dtype,
            reserved_bytes=reserve,
            step_timeout=header.step_timeout,
            inbound=ActivationChannel(header.key_in, request.session_id),
            outbound=(  # the last stage's output returns to the coordinator
                ActivationChannel(header.key_out, request.session_id, RETURN_LABEL)
                if last
                else ActivationChannel(header.key_out, header.next_session_id, STEP_LABEL)
            ),
            audit=SessionAudit.start(terms, header.key_report, kept=compaction is None),
            next_hop=header.next_hop,
            next_session_id=header.next_session_id,
            relay=header.relay,
            direct=header.direct,
            collect_token=header.collect,
            prefix=header.prefix,
            compaction=compaction,
            cache_tokens=granted,
        )
        if header.reuse:
            await self._reuse_prefix(session, header)
        server.sessions[session.id] = session
        self.session = session
        if last:
            self.opened = True
            return inference.SessionOpened(hops=1, cache_tokens=granted)
        return await self._open_downstream(request.model, header)

    def _compaction(self, header: inference.HopHeader) -> inference.Compaction | None:
        compaction = header.compaction
        blocks = self.server.blocks.layer_end - self.server.blocks.layer_start
        if compaction is not None and compaction.shares and len(compaction.shares) != blocks:
            why = f"compaction shares for {len(compaction.shares)} blocks, this span has {blocks}"
            raise ProtocolError(ErrorCode.BAD_FIELD, why)
        return compaction

    async def _reuse_prefix(self, session: Session, header: inference.HopHeader) -> None:
        """Start ``session`` after the first ``header.reuse`` tokens, from the prefix cache."""
        chain = header.prefix[: header.reuse // inference.PREFIX_BLOCK]
        if not session.relay:
            store = self.server.prefixes
            if store is None or not store.cached(chain):
                raise ProtocolError(ErrorCode.PREFIX_MISS, f"no cached prefix of {header.reuse} tokens")
            await run_compute(store.restore, chain, session.cache)
        # restored, not computed: no receipt is owed for them before the next step
        session.position = session.confirmed = session.receipted = header.reuse
        session.kept = len(chain)

    async def _open_downstream(self, model: str, header: inference.HopHeader) -> Message:
        session = self.session
        assert session is not None and self.server.host is not None and header.next_hop
        hop = header.next_hop
        budget = downstream_budget(header.step_timeout)
        try:
            session.downstream = await RemoteLink.open(self.server.host, hop, budget)
            reply = await session.downstream.call(
                inference.OpenSession(
                    header.next_session_id, model, header.next_header, header.next_ephemeral
                ),
                budget,
            )
        except HopFailed as exc:
            await self.aclose()
            return hop_failed_error(exc)
        if isinstance(reply, Error):
            await self.aclose()
            return attributed(reply, hop.peer_id)
        if not isinstance(reply, inference.SessionOpened):
            await self.aclose()
            return Error(ErrorCode.NEXT_HOP_FAILED, f"answered open with {reply.TYPE}", hop.peer_id)
        session.hops = reply.hops + 1
        self.opened = True
        granted = [tokens for tokens in (session.cache_tokens, reply.cache_tokens) if tokens]
        if 0 < reply.cache_tokens < session.cache_tokens:
            # the route holds no more than its smallest grant: release the rest
            session.reserved_bytes -= (session.cache_tokens - reply.cache_tokens) * self.server.kv_per_token
            session.cache_tokens = reply.cache_tokens
        return inference.SessionOpened(hops=session.hops, cache_tokens=min(granted, default=0))

    async def _take(self, step: inference.Step) -> Message | None:
        """Run ``step`` and pass its output on. On a direct route nothing is answered: the
        output, or the error that stopped it, goes on towards the coordinator."""
        session = self.session
        if session is None or not session.direct:
            return await self._step(step)
        try:
            outcome = await self._step(step)
        except ProtocolError as exc:
            outcome = Error(exc.code, exc.message)
        except Exception as exc:
            log.exception("a step failed")
            outcome = Error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        if isinstance(outcome, Error):
            await self._pass_on_error(session, attributed(outcome, self.server.peer_id))
        return None

    async def _step(self, step: inference.Step) -> Message | None:
        session = self.session
        if session is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SESSION, "open a session before stepping")
        if session.broken:
            raise ProtocolError(ErrorCode.NEXT_HOP_FAILED, session.broken)
        owed = session.position - session.receipted  # this node's own coordinator does not pay it
        if owed > self.server.limits.unpaid_tokens and session.owner != self.server.peer_id:
            raise ProtocolError(
                ErrorCode.PAYMENT_REQUIRED,
                f"{owed} tokens served without a receipt "
                f"(the limit is {self.server.limits.unpaid_tokens})",
            )
        # the coordinator sends a step once it has the last one's output: the rest of the
        # route did its work up to here. Paid before the step goes on, so the next hop has its
        # receipt before the step that would put it over its unpaid limit
        session.confirmed = max(session.confirmed, session.position)
        if session.downstream is not None and session.confirmed - session.paid >= RECEIPT_EVERY:
            await self._pay_successor(session)
        await self._bring_to(session, step)
        try:
            tensor = session.inbound.unwrap(step.hidden, step.sealed, step.position)
        except SealError as exc:  # the sender (our predecessor) is at fault, not us
            self._break(session, f"sealed step rejected: {exc}", self.remote)  # the counters have diverged
            return Error(ErrorCode.SEAL_FAILED, str(exc), peer=self.remote)
        if step.compact:
            await self._compact(session, step.compact)
        self._check_input(session, step, tensor)
        digest = tensor_digest(tensor)
        if not receipt_valid(self.remote, session.hop_session_id, step.position, digest, step.receipt):
            why = "no receipt signed by the sender for these activations"
            return Error(ErrorCode.BAD_RECEIPT, why, peer=self.remote)
        started = time.monotonic()
        output = await self.compute(session, step, from_wire(tensor))
        session.position += tensor.shape[1]
        self.server.steps_served += 1
        self.server.tokens_served += tensor.shape[1]
        await self.server.keep_prefix(session)
        sent = to_wire(output if step.return_all or session.downstream else output[:, -1:], session.dtype)
        commitment, sent_hash = session.audit.commit(
            self.server.identity, step, tensor, self.claimed_input_hash(session, digest), sent
        )
        commitments = (*step.commitments, commitment)
        if session.downstream is not None:
            return await self._pass_on(session, step, sent, sent_hash, started, commitments)
        output_message = inference.Hidden(
            step.position, *session.outbound.wrap(sent, step.position), commitments=commitments
        )
        if not session.direct:
            return output_message
        await self._to_coordinator(session, output_message)
        return None

    async def compute(self, session: Session, step: inference.Step, hidden: torch.Tensor) -> torch.Tensor:
        """This stage's output for ``hidden`` (on the compute thread). Tests override it to cheat."""
        session.last_start = step.position
        if session.relay:
            return hidden
        session.undo = self.server.blocks.undo_point(session.cache, hidden) if step.draft else None
        return await self.server.run(session, hidden, step.chunks, step.position)

    async def _bring_to(self, session: Session, step: inference.Step) -> None:
        """The session at ``step``'s position: where it is, or (``rewind``) taken back there,
        inside its last step (a draft's rejected tokens); the rest of the route rewinds when
        the step reaches it."""
        if step.rewind:
            if not session.last_start < step.position < session.position:
                raise ProtocolError(
                    ErrorCode.OUT_OF_ORDER,
                    f"cannot rewind to {step.position}: the last step covers {session.last_start + 1}.."
                    f"{session.position - 1}",
                )
            if self.server.blocks.recurrent and session.undo is None and not session.relay:
                why = "only a draft step can be rewound in recurrent blocks"
                raise ProtocolError(ErrorCode.OUT_OF_ORDER, why)
            if not session.relay:
                await run_compute(
                    self.server.blocks.rewind,
                    session.cache, session.last_start, session.position, step.position, session.undo,
                )
            session.position = step.position
            session.undo = None
        if step.position != session.position:
            raise ProtocolError(
                ErrorCode.OUT_OF_ORDER, f"step at {step.position}, session is at {session.position}"
            )

    def claimed_input_hash(self, session: Session, received: bytes) -> bytes:
        """The digest of the input this stage commits to having computed on (that of what it
        ``received``). Tests override it to lie."""
        return received

    def _check_input(self, session: Session, step: inference.Step, tensor: inference.Tensor) -> None:
        if step.chunks and sum(step.chunks) != tensor.shape[1]:
            raise ProtocolError(ErrorCode.BAD_FIELD, "chunks must sum to the tokens")
        tokens, width = tensor.shape[1], tensor.shape[2]
        if width != self.server.blocks.hidden_size and not session.relay:
            raise ProtocolError(
                ErrorCode.BAD_TENSOR,
                f"hidden size {width}, this model's is {self.server.blocks.hidden_size}",
            )
        if session.position + tokens > session.max_length:
            raise ProtocolError(
                ErrorCode.MAX_LENGTH_EXCEEDED,
                f"{session.position} + {tokens} tokens exceeds max_length {session.max_length}",
            )
        entries = cache_entries(session.cache) if session.compaction is not None else 0
        if entries + tokens > session.cache_tokens > 0:
            raise ProtocolError(
                ErrorCode.CACHE_FULL,
                f"{entries} cached + {tokens} tokens exceeds the {session.cache_tokens} granted "
                "(compact first)",
            )

    async def _compact(self, session: Session, target: int) -> None:
        """Compact the session's cache to ``target`` entries (on the compute thread)."""
        if session.relay:
            return
        how = session.compaction
        if how is None:
            raise ProtocolError(ErrorCode.BAD_FIELD, "this session was not opened for compaction")
        blocks = self.server.blocks
        await run_compute(blocks.compact, session.cache, target, how.selection, how.refit, how.shares)
        self.server.compactions += 1

    async def _pass_on(
        self, session: Session, step: inference.Step, output: inference.Tensor, digest: bytes,
        started: float, commitments: tuple[bytes, ...],
    ) -> Message | None:
        """Send this stage's output, with a receipt for it, to the next hop. On a relayed route
        its reply (the last stage's output, or an error naming the peer at fault) goes back
        upstream."""
        assert session.downstream is not None
        hidden, sealed = session.outbound.wrap(output, step.position)
        receipt = sign_receipt(self.server.identity, session.next_session_id, step.position, digest)
        forward = inference.Step(
            step.position, hidden, sealed, step.chunks, step.return_all, receipt, step.draft, step.rewind,
            commitments, step.compact,
        )
        # the rest of the route gets what is left of this step's time, so a stall further
        # down is reported (and blamed on the right peer) before our predecessor gives up
        budget = downstream_budget(session.step_timeout - (time.monotonic() - started))
        reply: Message | None = None
        try:
            if session.direct:
                await session.downstream.send(forward, budget)
            else:
                reply = await session.downstream.call(forward, budget)
        except HopFailed as exc:
            return self._next_failed(session, exc)
        if isinstance(reply, Error):  # our cache advanced and the rest of the route's did not
            self._break(session, f"next hop answered {reply.code}: {reply.message}",
                        reply.peer or session.downstream.peer_id)
            return attributed(reply, session.downstream.peer_id)
        return reply

    def _next_failed(self, session: Session, exc: HopFailed) -> Error:
        assert session.downstream is not None
        self._break(session, f"next hop {exc.peer_id} failed: {exc.reason}", exc.peer_id)
        session.next_failed = exc.peer_id == session.downstream.peer_id
        return hop_failed_error(exc)

    @staticmethod
    def _break(session: Session, why: str, blame: str) -> None:
        session.broken, session.blame = session.broken or why, session.blame or blame

    async def _to_coordinator(self, session: Session, message: Message) -> None:
        """(Direct route, last stage) ``message`` to the coordinator collecting the output."""
        if session.collector is None:
            raise ProtocolError(ErrorCode.UNEXPECTED, "nobody collects this session's output")
        try:
            with trio.fail_after(session.step_timeout):
                await session.collector.send(message)
        except Exception as exc:  # noqa: BLE001 - the coordinator's stream is gone: it will notice
            log.info("could not send a session's output to its coordinator: %s", exc)
            session.collector = None

    async def _pass_on_error(self, session: Session, error: Error) -> None:
        """(Direct route) ``error`` on towards the coordinator; the session steps no more."""
        self._break(session, f"{error.code}: {error.message}", error.peer)
        if session.downstream is None:
            if session.collector is not None:
                await self._to_coordinator(session, error)
            return
        try:
            await session.downstream.send(error, downstream_budget(session.step_timeout))
        except HopFailed as exc:  # found by the coordinator's probe
            self._next_failed(session, exc)

    async def _pass_error(self, error: Error) -> None:
        session = self.session
        if session is None or not session.direct:
            raise ProtocolError(ErrorCode.UNEXPECTED, "errors are passed on only along direct routes")
        await self._pass_on_error(session, attributed(error, self.remote))

    def _collect(self, request: inference.Collect) -> Message:
        if self.session is not None or self.collecting is not None:
            raise ProtocolError(ErrorCode.UNEXPECTED, "this stream already carries a session")
        session = self.server.collectable(request)
        if session is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SESSION, "no session here has that id and collect token")
        if session.collector is not None:
            raise ProtocolError(ErrorCode.UNEXPECTED, "this session's output is already collected")
        session.collector, self.collecting = self.outbox, session
        return inference.Collecting()

    async def _probe(self, probe: inference.Probe) -> Message:
        """Where the route got to, from this stage on; answered after every step before it."""
        session = self.session
        if session is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SESSION, "no session to probe")
        if session.broken:
            return Error(ErrorCode.NEXT_HOP_FAILED, session.broken, peer=session.blame)
        if session.downstream is None:
            return inference.Progress((session.position,))
        budget = downstream_budget(probe.timeout)
        try:
            reply = await session.downstream.call(inference.Probe(budget), budget)
        except HopFailed as exc:
            return self._next_failed(session, exc)
        if isinstance(reply, inference.Progress):
            return inference.Progress((session.position, *reply.positions)[: inference.MAX_HOPS])
        if isinstance(reply, Error):
            return attributed(reply, session.downstream.peer_id)
        odd = f"answered a probe with {reply.TYPE}"
        return Error(ErrorCode.NEXT_HOP_FAILED, odd, session.downstream.peer_id)

    async def _close(self, request: inference.CloseSession) -> Message:
        session = self.session
        if session is not None and request.done == session.position:
            session.confirmed = max(session.confirmed, request.done)
        self.done = request.done
        await self.aclose()
        return inference.SessionClosed()

    async def aclose(self) -> None:
        if self.collecting is not None and self.collecting.collector is self.outbox:
            self.collecting.collector = None
        session, self.session = self.session, None
        if session is None:
            return
        self.server.sessions.pop(session.id, None)
        self.server.batcher.leave(session.id)
        if session.direct and self.opened and self.done is None and not session.broken:
            # our predecessor died, or we are shutting down: the coordinator's probe tells which
            vanished = "the session's stream from the hop before ended without closing it"
            await self._pass_on_error(session, Error(ErrorCode.ROUTE_BROKEN, vanished, peer=self.remote))
        if session.downstream is None:
            return
        try:
            await self._pay_successor(session)  # while its session is still open
            if self.done is not None:
                with trio.move_on_after(CLOSE_TIMEOUT_S), suppress(HopFailed):
                    await session.downstream.send(inference.CloseSession(self.done), CLOSE_TIMEOUT_S)
        finally:  # however this ends (cancelled, next hop gone), the rest of the route is let go
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await session.downstream.aclose()

    async def _pay_successor(self, session: Session) -> None:
        """Pay the next hop for the rest of the route's work on this session so far: the steps
        that came back through it (a session broken further down still pays for those), unless
        the next hop itself died or stalled (its share of those steps stays with this stage)."""
        server = self.server
        done = session.confirmed
        if done <= session.paid or session.next_failed or session.next_hop is None or server.host is None:
            return
        body = receipt.ReceiptBody(
            payer=server.peer_id,
            payee=session.next_hop.peer_id,
            session_id=session.next_session_id,
            model=session.audit.chain.terms.model,
            layer_start=session.next_hop.layer_start,
            layer_end=session.next_hop.layer_end,
            tokens=done,
            units=done * (session.hops - 1),
            seq=session.pay_seq,
            work_root=work_root(step.out_hash for step in session.audit.chain.steps if step.position < done),
        )
        if await pay(server.host, server.identity, server.ledger, session.next_hop, body, server.tokens):
            session.paid, session.pay_seq = done, session.pay_seq + 1

