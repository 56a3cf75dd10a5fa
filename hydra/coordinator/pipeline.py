"""One generation's chain of stages, with failover.

The coordinator sends steps to the first hop only; each stage opens the next. On a direct
route (the default) the coordinator also opens a stream to the last stage and collects each
step's output there, N+1 messages per token; on a relayed one the output comes back through
every stage. A stage that fails names the peer at fault; a step that gets neither output nor
error in time is followed by a probe, and the first stage short of the step's end (or, when
all reached it, the last stage) is blamed for the stall. The pipeline keeps
every input it sent (the embeddings, in the chunks it sent them), so when a stage dies or
stalls it can exclude that peer, plan a new route over the peers still serving the model,
replay the history with the original chunk shapes (each new cache is bit-identical to the
lost one) and retry the step: the generation continues with the output it would have had.

Every step's reply carries each stage's commitment; the pipeline checks them together
(``hydra.verification.ledger``) before using the output, so a stage caught lying is treated
like one that failed: excluded, and the step retried on a new route. An auditor (when given)
picks steps to audit after each one and challenges them before the session closes.
"""

import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

import torch
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from libp2p.crypto.keys import KeyPair

from hydra.compaction.plan import CompactionPlan
from hydra.coordinator.compaction import CacheSchedule
from hydra.coordinator.prefix import PrefixMemory
from hydra.coordinator.routing import Candidate, NoRoute
from hydra.economy.receipts import work_root
from hydra.privacy.keys import UnboundKey, verify_kx
from hydra.privacy.onion import WrappedRoute, wrap_route
from hydra.privacy.sealing import SealError
from hydra.runtime.compute import run_compute
from hydra.runtime.wire import from_wire, to_wire
from hydra.stage.links import HopFailed, Link, downstream_budget
from hydra.verification.commitments import Terms, sign_receipt
from hydra.verification.ledger import ChainBroken, RouteLedger
from protocols import inference
from protocols.codec import Error, Message
from protocols.errors import ErrorCode, ProtocolError
from protocols.receipt import RECEIPT_EVERY, ReceiptBody
from protocols.verify import tensor_digest

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0
FRAME_SLACK = 4096  # msgpack envelope around a step's tensor bytes, and the seal's tag
CHUNK_BYTES = 9  # a replayed step's chunk size in its ``chunks`` list (the largest msgpack int)


class Network(Protocol):
    """What a pipeline needs from its coordinator."""

    peer_id: str

    async def plan(self, model: str, exclude: frozenset[str] = frozenset()) -> list[Candidate] | None:
        """The best route now over the peers serving ``model`` (a fresh DHT lookup)."""
        ...

    async def link(self, candidate: Candidate, timeout: float) -> Link: ...

    @property
    def identity(self) -> KeyPair:
        """Signs the receipts for what the coordinator sends the first stage."""
        ...

    async def pay(self, hop: inference.Hop, body: ReceiptBody) -> bool:
        """Send the first stage a signed receipt for the route's work; post it once countersigned."""
        ...

    @property
    def prefixes(self) -> PrefixMemory:
        """Which prefix blocks each route's stages keep (``hydra.coordinator.prefix``)."""
        ...


class Audits(Protocol):
    """What a pipeline asks of the coordinator's auditor (``hydra.coordinator.audit``)."""

    def choose(self, stages: int, probe: bool) -> list[int]: ...

    async def audit(self, pipeline: "Pipeline", pending: list[tuple[int, int]]) -> None: ...

    async def settle(self, pipeline: "Pipeline", broken: ChainBroken) -> str: ...


@dataclass
class PipelineConfig:
    model: str
    num_layers: int
    max_length: int
    dtype: str = "float32"
    step_timeout: float = 30.0
    max_failovers: int = 3
    protect: bool = True  # onion-wrapped route, sealed activations on every hop
    probe: bool = False  # a synthetic generation of the auditor's (``--verify-probes-only``)
    priority: bytes = b""  # a priority ticket's secret (``TokenService.priority_ticket``)
    prefix: tuple[bytes, ...] = ()  # the prompt's block hashes, for the stages' prefix caches
    reuse_limit: int = 0  # tokens of the prompt a session may start after (one must remain)
    public_blocks: int = 0  # leading blocks of a shared system prompt: tried even if never sent
    direct_return: bool = True  # collect the output from the last stage (else relayed back)
    compaction: CompactionPlan | None = None  # KV cache compaction (``hydra.coordinator.compaction``)


@dataclass(eq=False)  # compared and hashed by identity
class Pipeline:
    """Open with ``async with``: the session opens along ``planned`` when given (the route the
    request was admitted on), else along a route planned now."""

    network: Network
    config: PipelineConfig
    planned: list[Candidate] | None = None
    route: list[Candidate] = field(default_factory=list)
    position: int = 0
    failovers: int = 0
    excluded: dict[str, str] = field(default_factory=dict)  # peer id -> why
    history: list[torch.Tensor] = field(default_factory=list)  # inputs as sent, one per step
    hop_seconds: list[float] = field(default_factory=list)  # per step: round trip / hops
    commitment_bytes: int = 0  # received with the steps' replies, all stages together
    paid: int = 0  # tokens of this route's session the first stage has a receipt for
    pay_seq: int = 0
    auditor: Audits | None = None
    pending_audits: list[tuple[int, int]] = field(default_factory=list)  # (route index, position)
    companions: frozenset[str] = frozenset()  # peers of redundant copies: none may verify this route
    rewinding: bool = False  # the last step's rejected drafts are dropped: the next step rewinds
    step_end: int = 0  # where the last step ended: receipts pay up to a step's end (drafts rewound
    # since were computed all the same)
    reused: int = 0  # prompt tokens the route's sessions restored from the stages' prefix caches
    _noted: tuple[str, ...] = ()  # the route whose stages this pipeline gave the prompt's blocks
    schedule: CacheSchedule | None = None  # when the stages compact (sessions opened compacting)
    orders: dict[int, int] = field(default_factory=dict)  # history index -> compaction target before it
    _link: Link | None = None  # to the first hop
    _collect: Link | None = None  # from the last hop, on a direct route
    _wrapped: WrappedRoute | None = None
    _ledger: RouteLedger | None = None
    on_reroute: Callable[[list[Candidate]], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        plan = self.config.compaction
        if plan is not None and plan.mode == "on":
            self.schedule = CacheSchedule(plan)

    async def __aenter__(self) -> "Pipeline":
        try:
            await self._build(self.planned)
        except BaseException:  # cancelled or failed mid-open: __aexit__ will not run
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        # a generator closed after its last item exits with GeneratorExit: still a success
        if exc_type in (None, GeneratorExit) and self.auditor is not None and self.pending_audits:
            pending, self.pending_audits = self.pending_audits, []
            with trio.move_on_after(self.config.step_timeout):
                await self.auditor.audit(self, pending)
        await self._pay()
        await self.close()

    async def _pay(self) -> None:
        """Pay the first stage for the whole route's work so far (each stage then pays its
        successor for the rest): every ``RECEIPT_EVERY`` tokens, and before the session closes.
        This node's own stage is not paid."""
        if self._link is None or self.step_end <= self.paid or not self.route or self.route[0].local:
            return
        first = self.route[0]
        body = ReceiptBody(
            payer=self.network.peer_id,
            payee=first.peer_id,
            session_id=self.wrapped.session_ids[0],
            model=self.config.model,
            layer_start=first.hop.layer_start,
            layer_end=first.hop.layer_end,
            tokens=self.step_end,
            units=self.step_end * len(self.route),
            seq=self.pay_seq,
            work_root=work_root(step.in_hash for step in self.ledger.stages[0].chain.steps),
        )
        if await self.network.pay(first.hop, body):
            self.paid, self.pay_seq = self.step_end, self.pay_seq + 1

    @property
    def wrapped(self) -> WrappedRoute:
        assert self._wrapped is not None, "the pipeline is not open"
        return self._wrapped

    @property
    def ledger(self) -> RouteLedger:
        assert self._ledger is not None, "the pipeline is not open"
        return self._ledger

    async def close(self) -> None:
        """End the session on every hop. Shielded: a cancelled generation (a client that
        hung up) must still free the peers' caches now, not after their idle timeout."""
        link, self._link = self._link, None
        collect, self._collect = self._collect, None
        with trio.CancelScope(shield=True):
            if collect is not None:
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await collect.aclose()
            if link is not None:
                # the route is paid up to the outputs received (an in-process first stage pays
                # its successor right here, hence a time limit of its own)
                with trio.move_on_after(CLOSE_TIMEOUT_S), suppress(HopFailed):
                    await link.send(inference.CloseSession(self.step_end), CLOSE_TIMEOUT_S)
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await link.aclose()

    async def forward(
        self, hidden: torch.Tensor, return_all: bool = False, draft: bool = False
    ) -> torch.Tensor:
        """Send ``hidden`` [1, T, H] through the route; the last stage's output (last position
        only unless ``return_all``). A ``draft`` step (drafted tokens, one message) is followed
        by ``accept``."""
        if self.position + hidden.shape[1] > self.config.max_length:
            raise ValueError(f"{self.position} + {hidden.shape[1]} tokens exceeds max_length")
        if self.reused and not self.history:  # the prompt: its start is in the sessions already
            self.history.append(hidden[:, : self.reused])
            self.position = self.reused
            hidden = hidden[:, self.reused :]
        pieces = torch.split(hidden, self._max_tokens_per_step(hidden), dim=1)
        if draft and len(pieces) > 1:
            raise ValueError("a draft step must fit one message")
        outputs = []
        for piece in pieces:
            compact = self.schedule.order(piece.shape[1]) if self.schedule is not None else 0
            outputs.append(await self._step_with_failover(piece, return_all, draft, compact))
        if self.schedule is not None:
            self.schedule.prompted = True
        prompt_blocks = len(self.config.prefix) * inference.PREFIX_BLOCK
        noting = self.config.prefix and self.schedule is None and self._noted != self.route_key
        if noting and self.position >= prompt_blocks:
            self._noted = self.route_key  # every stage of this route has kept the prompt's blocks
            self.network.prefixes.kept(self._noted, self.config.prefix)
        return await run_compute(torch.cat, outputs, 1) if return_all else outputs[-1]

    def accept(self, kept: int) -> None:
        """Keep the first ``kept`` positions of the last (draft) step; the stages drop the rest
        with the next step."""
        last = self.history[-1]
        if not 0 < kept <= last.shape[1]:
            raise ValueError(f"keep 1..{last.shape[1]} positions of the last step, not {kept}")
        if kept < last.shape[1]:
            self.history[-1] = last[:, :kept]
            self.position -= last.shape[1] - kept
            self.rewinding = True
            if self.schedule is not None:
                self.schedule.entries -= last.shape[1] - kept

    def room(self) -> int | None:
        """Tokens the sessions can still take beyond what ``max_length`` allows for (None: no
        further limit): a session compacted once (phases 1 to 3) ends when its cache is full."""
        return self.schedule.room() if self.schedule is not None else None

    async def _step_with_failover(
        self, hidden: torch.Tensor, return_all: bool, draft: bool, compact: int = 0
    ) -> torch.Tensor:
        while True:
            try:
                output = await self._send_step(hidden, (), self.position, return_all, draft, compact)
            except HopFailed as exc:
                await self._fail_over(exc)
                continue
            if compact:
                self.orders[len(self.history)] = compact
            if self.schedule is not None:
                self.schedule.sent(hidden.shape[1], compact)
            self.history.append(hidden)
            self.position += hidden.shape[1]
            if self.position - self.paid >= RECEIPT_EVERY:
                await self._pay()
            return output

    async def _send_step(
        self, hidden: torch.Tensor, chunks: tuple[int, ...], position: int, return_all: bool,
        draft: bool = False, compact: int = 0,
    ) -> torch.Tensor:
        assert self._link is not None and self._wrapped is not None
        wrapped = self._wrapped
        tensor = to_wire(hidden, self.config.dtype)
        sent_hash = tensor_digest(tensor)
        receipt = sign_receipt(self.network.identity, wrapped.session_ids[0], position, sent_hash)
        sent, sealed = wrapped.to_first.wrap(tensor, position)
        step = inference.Step(
            position, sent, sealed, chunks, return_all, receipt, draft, self.rewinding, compact=compact
        )
        started = trio.current_time()
        reply = await self._exchange(step, position + hidden.shape[1])
        self.rewinding = False  # done, or (a failure) the new route's sessions start past it
        self.hop_seconds.append((trio.current_time() - started) / max(1, len(self.route)))
        if not isinstance(reply, inference.Hidden) or reply.position != position:
            raise self._failure(reply, self._collect or self._link)
        last = self.route[-1].peer_id
        try:
            output = wrapped.from_last.unwrap(reply.hidden, reply.sealed, position)
        except (SealError, ProtocolError) as exc:  # altered on the way back
            raise HopFailed(last, f"returned output rejected: {exc}") from None
        expected = (1, hidden.shape[1] if return_all else 1, hidden.shape[2])
        if tuple(output.shape) != expected or output.dtype != self.config.dtype:
            raise HopFailed(last, f"returned a {output.dtype} {list(output.shape)} tensor, "
                                  f"expected {self.config.dtype} {list(expected)}")
        await self._check_commitments(reply, position, hidden.shape[1], sent_hash, tensor_digest(output))
        self.step_end = position + hidden.shape[1]
        return from_wire(output)

    async def _check_commitments(
        self, reply: inference.Hidden, position: int, tokens: int, sent_hash: bytes, received_hash: bytes
    ) -> None:
        """Check the stages' commitments; a broken chain fails the step on the stage it convicts.
        Then pick the stages (if any) whose step gets audited."""
        self.commitment_bytes += sum(len(c) for c in reply.commitments)
        try:
            self.ledger.accept(reply.commitments, position, tokens, sent_hash, received_hash)
        except ChainBroken as broken:
            culprit = self.route[broken.stages[-1]].peer_id
            if self.auditor is not None:
                culprit = await self.auditor.settle(self, broken)
            raise HopFailed(culprit, f"commitments: {broken.reason}") from None
        # a session that restored a cached prefix is not audited: a verifier cannot rebuild the
        # prefix's activations at later stages (the coordinator never saw them)
        # nor a compacted one: the stages keep no inputs of it (``hydra.stage.audit``)
        if self.auditor is not None and not self.reused and self.schedule is None:
            chosen = self.auditor.choose(len(self.route), self.config.probe)
            self.pending_audits.extend((index, position) for index in chosen)

    async def _exchange(self, step: inference.Step, end: int) -> Message:
        """Send ``step``; the last stage's output for it (or the error that stopped it)."""
        assert self._link is not None
        timeout = self.config.step_timeout
        if self._collect is None:
            return await self._link.call(step, timeout)
        await self._link.send(step, timeout)
        with trio.move_on_after(timeout):
            reply = await self._collect.receive(math.inf)
            if not (isinstance(reply, Error) and reply.code == ErrorCode.ROUTE_BROKEN):
                return reply
        # no answer, or a stage saw its predecessor go (a hint: the one that went may be it)
        stalled = await self._stalled(end)
        if stalled is None:  # every stage got there: the output is late, or the last stage kept it
            with trio.move_on_after(timeout):
                return await self._collect.receive(math.inf)
            stalled = HopFailed(self.route[-1].peer_id, "computed the step but sent no output")
        raise stalled

    async def _stalled(self, end: int) -> HopFailed | None:
        """Who to blame for a step that came back with neither output nor error in time (or
        with a broken route): a stage that does not answer a probe, or the first short of
        ``end``; None if every stage reached it."""
        assert self._link is not None
        reply = await self._link.call(inference.Probe(self.config.step_timeout), self.config.step_timeout)
        if not isinstance(reply, inference.Progress):
            return self._failure(reply, self._link)
        for candidate, reached in zip(self.route, reply.positions, strict=False):
            if reached < end:
                return HopFailed(candidate.peer_id, f"stalled at position {reached} (the step ends at {end})")
        if len(reply.positions) < len(self.route):  # a stage left its successors' answers out
            liar = self.route[len(reply.positions) - 1].peer_id
            return HopFailed(liar, "answered a probe for part of the route")
        return None

    @staticmethod
    def _failure(reply: Message, link: Link) -> HopFailed:
        """What ``reply`` (not what was expected, from ``link``) says about who failed."""
        if isinstance(reply, Error):
            return HopFailed(reply.peer or link.peer_id, f"{reply.code}: {reply.message}")
        return HopFailed(link.peer_id, f"unexpected reply {reply.TYPE}")

    async def _fail_over(self, exc: HopFailed) -> None:
        """Pay the old route for the steps it completed (unless its first stage is the one that
        failed), exclude the failed peer, open a new route and replay the history into it."""
        if self.route and self.route[0].peer_id != exc.peer_id:
            await self._pay()
        while True:
            self.failovers += 1
            log.warning("stage %s failed (%s); re-routing", exc.peer_id, exc.reason)
            if self.failovers > self.config.max_failovers:
                raise NoRoute(f"gave up after {self.config.max_failovers} failovers: {exc}") from None
            self.excluded[exc.peer_id] = exc.reason
            self.pending_audits.clear()  # they were for sessions that close now
            self.paid = self.pay_seq = 0  # a new route, new sessions to pay
            await self.close()
            await self._build()
            try:
                await self._replay()
                return
            except HopFailed as again:
                exc = again

    async def _build(self, planned: list[Candidate] | None = None) -> None:
        """Open a session along ``planned``, or along a route planned now that avoids the
        excluded peers; on a failed open, exclude the peer at fault and plan again."""
        while True:
            route = planned or await self.network.plan(self.config.model, frozenset(self.excluded))
            planned = None
            if route is None:
                raise NoRoute(
                    f"no chain of peers covers {self.config.model}'s {self.config.num_layers} blocks"
                    + "".join(f"; excluded {peer}: {why}" for peer, why in self.excluded.items())
                )
            self.rewinding = False  # new sessions start where the kept history ends
            try:
                await self._open(route)
            except HopFailed as exc:
                self.failovers += 1
                if self.failovers > self.config.max_failovers:
                    raise NoRoute(f"could not open a route: {exc}") from None
                self.excluded[exc.peer_id] = exc.reason
                await self.close()
                continue
            if self.on_reroute is not None:
                await self.on_reroute(route)
            return

    @property
    def route_key(self) -> tuple[str, ...]:
        return tuple(f"{c.peer_id}/{c.hop.layer_start}:{c.hop.layer_end}" for c in self.route)

    async def _open(self, route: list[Candidate]) -> None:
        """Open the route's sessions; a fresh generation's start from the stages' prefix caches
        when this coordinator gave them its prompt's first blocks before, or they are a shared
        system prompt's (a stage without them answers ``prefix_miss``: then from the start)."""
        self.route = route
        self.reused = self.step_end = 0  # new sessions: nothing of theirs has come back yet
        if not self.failovers and not self.history and self.config.prefix and self.schedule is None:
            # a first open only (a compacted cache keeps no prefix):
            # a failover resends what it has from the start
            known = self.network.prefixes.reusable(self.route_key, self.config.prefix)
            blocks = max(known, self.config.public_blocks)
            self.reused = min(blocks * inference.PREFIX_BLOCK, self.config.reuse_limit)
            self.reused -= self.reused % inference.PREFIX_BLOCK
        reply = await self._open_sessions(route)
        if isinstance(reply, Error) and reply.code == ErrorCode.PREFIX_MISS and self.reused:
            self.network.prefixes.forget(self.route_key)
            await self.close()
            self.reused = 0
            reply = await self._open_sessions(route)
        plan = self.config.compaction
        if self._compacting_helps(reply) and plan is not None:
            # no room for the whole session somewhere: open it compacting, granted less cache
            await self.close()
            self.schedule = CacheSchedule(plan)
            self.reused = 0
            reply = await self._open_sessions(route)
        if not isinstance(reply, inference.SessionOpened):
            assert self._link is not None
            raise self._failure(reply, self._link)
        if self.schedule is not None:  # granted the whole session: no limit to keep to
            self.schedule.granted = reply.cache_tokens if reply.cache_tokens < self.config.max_length else 0

    def _compacting_helps(self, reply: Message) -> bool:
        """Whether ``reply`` refused the session for room that compaction (``auto``) can save."""
        plan = self.config.compaction
        refused = isinstance(reply, Error) and reply.code == ErrorCode.OVERLOADED
        fresh = self.schedule is None and not self.history  # a session replays as it began
        return refused and fresh and plan is not None and plan.mode == "auto"

    async def _open_sessions(self, route: list[Candidate]) -> Message:
        timeouts = [self.config.step_timeout]
        for _ in route[1:]:
            timeouts.append(downstream_budget(timeouts[-1]))
        kx_keys = [self._kx_key(c) for c in route] if self.config.protect else None
        plan = self.schedule.plan if self.schedule is not None else None
        compactions = [plan.for_span(c.hop.layer_start, c.hop.layer_end) for c in route] if plan else None
        self._wrapped = wrap_route(
            [c.hop for c in route],
            kx_keys,
            self.config.model,
            self.config.max_length,
            self.config.dtype,
            timeouts,
            self.config.priority,
            () if compactions else self.config.prefix,  # a compacted cache is no prefix to keep
            self.reused,
            direct=self.config.direct_return and len(route) > 1,  # one hop: the same messages
            compactions=compactions,
        )
        self._ledger = RouteLedger(
            [c.peer_id for c in route],
            [
                Terms(sid, self.config.model, c.hop.layer_start, c.hop.layer_end, c.model_hash,
                      self.config.dtype)
                for c, sid in zip(route, self._wrapped.session_ids, strict=True)
            ],
            list(self._wrapped.report_keys),
        )
        timeout = self.config.step_timeout
        self._link = await self.network.link(route[0], timeout)
        opened = await self._link.call(self._wrapped.open, timeout)
        if self._wrapped.collect is None or not isinstance(opened, inference.SessionOpened):
            return opened
        self._collect = await self.network.link(route[-1], timeout)
        collecting = await self._collect.call(self._wrapped.collect, timeout)
        if not isinstance(collecting, inference.Collecting):
            raise self._failure(collecting, self._collect)
        return opened

    def _kx_key(self, candidate: Candidate) -> X25519PublicKey:
        """The key to seal ``candidate``'s header for; it must be signed by its identity."""
        try:
            return verify_kx(candidate.peer_id, candidate.kx_key, candidate.kx_signature)
        except UnboundKey as exc:
            raise HopFailed(candidate.peer_id, str(exc)) from None

    async def _replay(self, keep: bool = False) -> list[torch.Tensor]:
        """Rebuild the new route's caches from the history, in the original chunk shapes,
        packed into as few messages as the frame limit allows; with ``keep``, the output at
        every position."""
        position, index, outputs = 0, 0, []
        for batch in pack_history(self.history, self.config.dtype, frozenset(self.orders)):
            chunks = tuple(t.shape[1] for t in batch)
            hidden = await run_compute(torch.cat, batch, 1)
            compact = self.orders.get(index, 0)  # the same compactions, at the same places
            outputs.append(await self._send_step(hidden, chunks, position, keep, compact=compact))
            position, index = position + sum(chunks), index + len(batch)
        return outputs if keep else []

    async def recompute(self, steps: list[tuple[torch.Tensor, tuple[int, ...]]]) -> torch.Tensor:
        """This route's output at every position of ``steps``, each run in its own chunks after
        the ones before it (how a verifier recomputes revealed steps)."""
        self.orders = {}
        self.history = [
            piece
            for hidden, chunks in steps
            for piece in torch.split(hidden, list(chunks) or [hidden.shape[1]], dim=1)
        ]
        outputs = await self._replay(keep=True)
        self.position = sum(t.shape[1] for t in self.history)
        return await run_compute(torch.cat, outputs, 1)

    def _max_tokens_per_step(self, hidden: torch.Tensor) -> int:
        """What one message carries, and what a compacting session's cache always has room for."""
        fits = max(1, MESSAGE_ROOM // wire_bytes(hidden[:, :1], self.config.dtype))
        limit = self.schedule.step_limit() if self.schedule is not None else None
        return fits if limit is None else min(fits, limit)


MESSAGE_ROOM = inference.MAX_FRAME - FRAME_SLACK  # tensor bytes one Step frame can carry


def wire_bytes(hidden: torch.Tensor, dtype: str) -> int:
    """Bytes ``hidden`` [1, T, H] takes on the wire as ``dtype``."""
    return hidden.shape[1] * hidden.shape[2] * inference.TENSOR_DTYPES[dtype]


def pack_history(
    history: list[torch.Tensor], dtype: str, breaks: frozenset[int] = frozenset()
) -> list[list[torch.Tensor]]:
    """Consecutive runs of ``history`` that each fit one replayed ``Step`` frame: the tensor
    bytes plus, per item, its entry in the message's ``chunks`` list. An item whose index is in
    ``breaks`` (a compaction came before it) starts a run."""
    batches: list[list[torch.Tensor]] = []
    size = MESSAGE_ROOM + 1  # start a new batch with the first item
    for index, item in enumerate(history):
        item_size = wire_bytes(item, dtype) + CHUNK_BYTES
        if size + item_size > MESSAGE_ROOM or index in breaks:
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item_size
    return batches
