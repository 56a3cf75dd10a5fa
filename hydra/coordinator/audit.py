"""Audits from the coordinator's side: the mystery shopper (tier 1), the checks behind
redundant execution (tier 2) and the outside re-checks that keep agreeing routes honest
(tier 3).

After each step the coordinator's private randomness picks which stages' steps to audit; no
stage can tell, since nothing is sent until the generation ends. Then, while the session is
still open, each chosen stage is challenged once, along the route, for its inputs up to the
last chosen step and the chosen steps' outputs; the reveal must match its signed
commitments. A peer serving the same span on none of the audited routes (or this node, when
it serves it) recomputes them from the revealed inputs in a background task, through a relay
so it never learns who asks; the outputs are compared with the tolerances of their precision
class, and the result goes to the reputation store, with the evidence when the check fails.
The user's reply never waits on a recompute, and nothing the user receives depends on one.
"""

import logging
import random
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import torch
import trio

from hydra.coordinator.params import SamplingParams
from hydra.coordinator.pipeline import Pipeline, PipelineConfig
from hydra.coordinator.routing import Candidate
from hydra.economy.proofs import check_equivocation, evidence_ref
from hydra.errors import PeerError
from hydra.privacy.sealing import SealError
from hydra.runtime.compute import run_compute
from hydra.runtime.wire import from_wire
from hydra.stage.links import HopFailed
from hydra.verification.commitments import ANSWER, CHALLENGE, AuditSeal, head_signed, receipt_valid
from hydra.verification.compare import Verdict, compare, tolerance_for
from hydra.verification.config import VerificationConfig
from hydra.verification.ledger import ChainBroken
from hydra.verification.reputation import Reputation
from protocols import inference, verify
from protocols.codec import Error, encode
from protocols.errors import ProtocolError
from protocols.token import ChainStep, Equivocation, Event
from protocols.verify import MAX_AUDITED, Audit, AuditedStep, Forward, Reveal, tensor_digest

if TYPE_CHECKING:
    from hydra.coordinator.generation import Coordinator

log = logging.getLogger(__name__)

CHALLENGE_TIMEOUT_S = 30.0
MAX_QUEUED = 64  # recomputes waiting; more are dropped (counted) rather than piling up
MAX_PAGES = 64
CANDIDATES_MAX_AGE_S = 30.0  # a verifier may come from a lookup this recent


class RevealRejected(PeerError):
    """A stage's reveal does not match what it committed to."""


@dataclass(frozen=True)
class AuditJob:
    """A revealed step, checked against its commitments, waiting to be recomputed."""

    model: str
    stage: Candidate
    route: frozenset[str]  # the audited route's peers: none of them may verify it
    dtype: str  # of the exchanged activations
    steps: tuple[AuditedStep, ...]  # every input up to the last audited step
    positions: tuple[int, ...]  # the audited steps
    outputs: tuple[inference.Tensor, ...]  # their outputs as the stage sent them
    last: bool  # the model's last span: compare logits through the head too
    evidence: bytes
    probe: bool
    relay: Candidate | None  # the hop a recompute session goes through, so a verifier never sees us

    def kept(self) -> dict[int, int]:
        """How many of each step's positions the session kept: all, or (a draft step that the
        next step rewound into) up to where that step began."""
        starts = [s.position for s in self.steps]
        ends = [s.position + s.input.shape[1] for s in self.steps]
        afters = [*starts[1:], ends[-1]]
        return {s: min(e, a) - s for s, e, a in zip(starts, ends, afters, strict=True)}

    def history(self) -> list[tuple[torch.Tensor, tuple[int, ...]]]:
        """The inputs the session kept, step by step in their chunks: what a verifier replays."""
        kept = self.kept()
        history = []
        for step in self.steps:
            tokens, keep = step.input.shape[1], kept[step.position]
            hidden = from_wire(step.input)
            history.append((hidden, step.chunks) if keep == tokens else (hidden[:, :keep], ()))
        return history


@dataclass
class AuditResult:
    peer_id: str
    outcome: str  # "passed", "failed", "unverifiable"
    verdict: Verdict | None = None
    verifier: str = ""
    reason: str = ""
    probe: bool = False  # the audited step was part of a synthetic probe generation


@dataclass
class AuditStats:
    chosen: int = 0
    probes: int = 0
    passed: int = 0
    failed: int = 0
    unverifiable: int = 0
    dropped: int = 0
    recent: deque[AuditResult] = field(default_factory=lambda: deque(maxlen=256))


def requests_until_flagged(
    checks: Callable[[int], bool], steps: int, config: VerificationConfig, steps_per_request: int, limit: int
) -> int | None:
    """How many requests of ``steps_per_request`` steps an always-cheating stage survives when
    its steps are picked for audit as ``Auditor.choose`` picks them; ``checks(i)``: whether the
    audit of step ``i`` (of ``steps``, cycled) passes. None: not flagged within ``limit``."""
    auditor = Auditor(None, config, Reputation())  # type: ignore[arg-type]  # choosing needs no network
    for request in range(1, limit + 1):
        for k in range(steps_per_request):
            if auditor.choose(1, probe=False) and not checks(((request - 1) * steps_per_request + k) % steps):
                return request
    return None


PROBE_SUBJECTS = (
    "the water cycle",
    "a sourdough starter",
    "binary search",
    "the French revolution",
    "tide pools",
    "compound interest",
    "how vaccines work",
    "a bicycle gear",
    "plate tectonics",
    "jazz harmony",
    "the immune system",
    "recursion",
    "coffee roasting",
    "solar panels",
    "the printing press",
)
PROBE_FORMS = (
    "Explain {} to a curious child.",
    "Write two sentences about {}.",
    "What is the most surprising fact about {}?",
    "Summarize {} in plain words.",
    "Give me a short list of tips about {}.",
    "Why does {} matter?",
)


def comparable(audited: str, verifier: str) -> bool:
    """Whether a verifier computing in ``verifier`` precision can judge a stage computing in
    ``audited``: always between unquantized ones (the catalog's mixed-precision bounds cover
    float32 against bfloat16); a quantized stage only by its own class, since what
    quantization moves is not bounded yet (SmolLM2 int8 against float32: cosine distance
    0.0039 on blocks 0:15, KL 0.031 on 15:30, past the mixed bounds)."""
    return not ("+" in audited or "+" in verifier) or audited == verifier


def relay_for(route: list[Candidate]) -> Candidate | None:
    """The hop recompute sessions go through: the route's first remote stage. It already has
    this node as its predecessor in the session being audited, so relaying teaches it nothing
    about who asks, and the verifier sees it, not us, as the sender. It cannot alter what it
    passes on unnoticed: a relay's commitment must have equal input and output digests."""
    for candidate in route:
        if not candidate.local:
            hop = inference.Hop(candidate.peer_id, candidate.hop.addrs, 0, 0)
            return Candidate(hop, kx_key=candidate.kx_key, kx_signature=candidate.kx_signature)
    return None


def synthetic_prompt(rng: random.Random) -> str:
    """A plausible user prompt, drawn afresh each time so no fixed list gives probes away."""
    return rng.choice(PROBE_FORMS).format(rng.choice(PROBE_SUBJECTS))


def probe_sampling(rng: random.Random) -> SamplingParams:
    return SamplingParams(max_tokens=rng.randint(8, 24), temperature=0.7, seed=rng.getrandbits(31))


class Auditor:
    def __init__(
        self, coordinator: "Coordinator", config: VerificationConfig, reputation: Reputation
    ) -> None:
        self.coordinator = coordinator
        self.config = config
        self.reputation = reputation
        self.rng: random.Random = (
            random.Random(config.seed) if config.seed is not None else secrets.SystemRandom()
        )
        self.stats = AuditStats()
        self._send, self._receive = trio.open_memory_channel[AuditJob](MAX_QUEUED)
        self._probe_send, self._probe_receive = trio.open_memory_channel[tuple[str, list[Candidate]]](1)
        self.idle = trio.Event()  # set while no recompute or probe is queued or running
        self.idle.set()
        self._busy = 0

    # --- during a generation -----------------------------------------------------------------

    def choose(self, stages: int, probe: bool) -> list[int]:
        """Route indices of the stages whose latest step gets audited (decided after the step);
        none of a user's steps under ``--verify-probes-only``."""
        if self.config.probes_only and not probe:
            return []
        chosen = [i for i in range(stages) if self.rng.random() < self.config.verify_rate]
        self.stats.chosen += len(chosen)
        return chosen

    def after_generation(self, model: str, route: list[Candidate]) -> None:
        """Under ``--verify-probes-only``, follow a user's generation with a synthetic one on the
        same route (at most one waiting), whose steps are audited in its place."""
        if not self.config.probes_only or not self.config.verify_rate:
            return
        try:
            self._probe_send.send_nowait((model, list(route)))
        except trio.WouldBlock:
            return
        self._begin()

    async def audit(self, pipeline: Pipeline, pending: list[tuple[int, int]]) -> None:
        """Challenge each stage with audited steps of ``pipeline``'s open session once, for all
        of them; queue one recompute per stage."""
        by_stage: dict[int, set[int]] = {}
        for index, position in pending:
            by_stage.setdefault(index, set()).add(position)
        for index, chosen in sorted(by_stage.items()):
            positions = tuple(sorted(chosen))[-MAX_AUDITED:]
            stage = pipeline.route[index]
            try:
                steps, reveal = await self.challenge(pipeline, index, positions, start=0)
                self._check_reveal(pipeline, index, positions, steps, reveal)
            except RevealRejected as exc:
                detail = {"reason": str(exc), "positions": list(positions)}
                self._record_failure(
                    stage.peer_id, "reveal", detail, self._evidence(pipeline, index, steps=None)
                )
                continue
            except (HopFailed, SealError, ProtocolError) as exc:
                log.info("audit of %s got no reveal: %s", stage.peer_id, exc)
                self.reputation.record_contact(stage.peer_id, False)
                continue
            job = AuditJob(
                pipeline.config.model,
                stage,
                frozenset(c.peer_id for c in pipeline.route) | pipeline.companions,
                pipeline.config.dtype,
                tuple(steps),
                positions,
                reveal.outputs,
                index == len(pipeline.route) - 1,
                self._evidence(pipeline, index, steps, reveal),
                pipeline.config.probe,
                relay_for(pipeline.route),
            )
            self._enqueue(job)

    async def challenge(
        self, pipeline: Pipeline, index: int, positions: tuple[int, ...], start: int
    ) -> tuple[list[AuditedStep], Reveal]:
        """Every page of stage ``index``'s reveal of the steps at ``positions``, from ``start``."""
        steps: list[AuditedStep] = []
        for _ in range(MAX_PAGES):
            page = await self._challenge_once(pipeline, index, Audit(positions, start))
            steps.extend(page.steps)
            if page.outputs:
                return steps, page
            if not page.steps:
                break
            start = page.steps[-1].position + 1
        raise RevealRejected("the reveal never reached the audited steps")

    async def _challenge_once(self, pipeline: Pipeline, index: int, audit: Audit) -> Reveal:
        wrapped = pipeline.wrapped
        seals = [
            AuditSeal(key, sid) for key, sid in zip(wrapped.report_keys, wrapped.session_ids, strict=True)
        ]
        layer = seals[index].seal(encode(audit), CHALLENGE)
        for seal in reversed(seals[:index]):
            layer = seal.seal(encode(Forward(layer)), CHALLENGE)
        first = pipeline.route[0]
        link = await self.coordinator.verify_link(first, CHALLENGE_TIMEOUT_S)
        try:
            reply = await link.call(verify.Challenge(wrapped.session_ids[0], layer), CHALLENGE_TIMEOUT_S)
        finally:
            await link.aclose()
        if isinstance(reply, Error):
            raise HopFailed(reply.peer or first.peer_id, f"{reply.code}: {reply.message}")
        assert isinstance(reply, verify.Revealed)
        answer = reply.layer
        for seal in seals[: index + 1]:
            answer = seal.open(answer, ANSWER)
        page = verify.REVEALS.decode(answer)
        assert isinstance(page, Reveal)
        return page

    def _check_reveal(
        self,
        pipeline: Pipeline,
        index: int,
        positions: tuple[int, ...],
        steps: list[AuditedStep],
        reveal: Reveal,
    ) -> None:
        ledger = pipeline.ledger.stages[index]
        records = [r for r in ledger.chain.steps if r.position <= positions[-1]]
        if [s.position for s in steps] != [r.position for r in records]:
            raise RevealRejected("revealed steps differ from the committed ones")
        for step, record in zip(steps, records, strict=True):
            if tensor_digest(step.input) != record.in_hash or step.input.shape[1] != record.tokens:
                raise RevealRejected(
                    f"the input revealed for position {step.position} is not the committed one"
                )
            if step.chunks and sum(step.chunks) != record.tokens:
                raise RevealRejected(f"chunks revealed for position {step.position} do not sum to its tokens")
        committed = {r.position: r.out_hash for r in records}
        if len(reveal.outputs) != len(positions) or any(
            tensor_digest(output) != committed.get(position)
            for output, position in zip(reveal.outputs, positions, strict=True)
        ):
            raise RevealRejected("the outputs revealed are not the committed ones")
        if not head_signed(ledger.peer_id, records[-1].head, reveal.signature):
            raise RevealRejected("the reveal's signature does not cover the committed chain")

    async def settle(self, pipeline: Pipeline, broken: ChainBroken) -> str:
        """The peer a broken chain convicts. Between two stages, the later one's reveal of the
        earlier one's receipt decides: it proves the earlier one signed two different outputs,
        or it fails to, and the later one lied about its input."""
        culprit, proof = broken.stages[-1], None
        if len(broken.stages) == 2:
            earlier = broken.stages[0]
            try:
                steps, _ = await self.challenge(pipeline, culprit, (broken.position,), start=broken.position)
                step = steps[-1]
                digest = tensor_digest(step.input)
                committed = pipeline.ledger.stages[culprit].commitments[-1].in_hash
                sender = pipeline.route[earlier].peer_id
                sid = pipeline.wrapped.session_ids[culprit]
                if digest == committed and receipt_valid(sender, sid, broken.position, digest, step.receipt):
                    culprit = earlier
                    proof = await self._equivocation(
                        pipeline, earlier, broken.position, sid, digest, step.receipt
                    )
            except (HopFailed, SealError, ProtocolError, RevealRejected, IndexError) as exc:
                log.info("settling a broken chain: no usable reveal (%s)", exc)
        peer = pipeline.route[culprit].peer_id
        detail = {"reason": broken.reason, "position": broken.position, "stages": list(broken.stages)}
        if proof is not None:
            detail["slashable"] = True
            self._record_failure(peer, "equivocation", detail, encode(proof))
            if self.coordinator.tokens is not None:
                self.coordinator.tokens.accuse(proof)
        else:
            self._record_failure(peer, "chain", detail, self._evidence(pipeline, culprit, steps=None))
        return peer

    async def _equivocation(
        self,
        pipeline: Pipeline,
        index: int,
        position: int,
        next_session: bytes,
        digest: bytes,
        receipt: bytes,
    ) -> Equivocation | None:
        """Stage ``index`` signed a receipt for ``digest`` at ``position``; with a signature over
        its chain through that step (the commitment's own, else a reveal's), the two make
        evidence anyone can check. None when the stage signs no such chain."""
        ledger = pipeline.ledger.stages[index]
        through = next(i for i, s in enumerate(ledger.chain.steps) if s.position == position)
        if ledger.signed_through >= through:
            records = ledger.chain.steps[: ledger.signed_through + 1]
            signature = ledger.commitments[ledger.signed_through].signature
        else:
            _, reveal = await self.challenge(pipeline, index, (position,), start=position)
            records, signature = ledger.chain.steps[: through + 1], reveal.signature
        terms = ledger.chain.terms
        proof = Equivocation(
            ledger.peer_id, terms.session_id, terms.model, terms.layer_start, terms.layer_end,
            terms.model_hash, terms.dtype,
            tuple(ChainStep(r.position, r.tokens, r.in_hash, r.out_hash) for r in records),
            signature, position, next_session, digest, receipt,
        )
        try:
            check_equivocation(Event("slash", ledger.peer_id, ref=evidence_ref(proof)), proof)
        except ProtocolError as exc:
            log.info("no slashable evidence against %s: %s", ledger.peer_id, exc)
            return None
        return proof

    # --- recomputing, in the background ------------------------------------------------------

    def _begin(self) -> None:
        self._busy += 1
        if self.idle.is_set():
            self.idle = trio.Event()

    def _end(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self.idle.set()

    def _enqueue(self, job: AuditJob) -> None:
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            self.stats.dropped += 1
            return
        self._begin()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recompute queued audits one at a time, and run probe generations, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._recompute_loop)
            nursery.start_soon(self._probe_loop)
            task_status.started()

    async def _recompute_loop(self) -> None:
        async for job in self._receive:
            try:
                await self.verify(job)
            except Exception:  # one broken audit must not stop the next ones
                log.exception("audit of %s failed to run", job.stage.peer_id)
            finally:
                self._end()

    async def _probe_loop(self) -> None:
        from hydra.coordinator.generation import GenerationRequest  # the coordinator imports us

        async for model, route in self._probe_receive:
            request = GenerationRequest(
                model, prompt=synthetic_prompt(self.rng), params=probe_sampling(self.rng), probe=True
            )
            try:
                await self.coordinator.generate(request, route)
                self.stats.probes += 1
            except PeerError as exc:
                log.info("a probe generation failed: %s", exc)
            finally:
                self._end()

    async def verify(self, job: AuditJob) -> AuditResult:
        """Recompute the audited step on a verifier and judge it. When an outside verifier
        disagrees, a second one (if any) decides which of the two lied, so a lying verifier
        cannot frame an honest stage."""
        verifier = await self._verifier_for(job)
        if verifier is None:
            return self._result(
                AuditResult(
                    job.stage.peer_id, "unverifiable", reason="no other peer serves the span", probe=job.probe
                )
            )
        verdict = await self._judge(job, verifier)
        if verdict is None:
            return self._result(
                AuditResult(
                    job.stage.peer_id,
                    "unverifiable",
                    verifier=verifier.peer_id,
                    reason="the verifier failed",
                    probe=job.probe,
                )
            )
        judge = verifier
        if not verdict.passed and not verifier.local:
            second = await self._verifier_for(job, also_exclude=verifier.peer_id)
            second_verdict = await self._judge(job, second) if second is not None else None
            if second is not None and second_verdict is not None and second_verdict.passed:
                detail = {"reason": "recomputed a step wrongly", "second_verifier": second.peer_id}
                self._record_failure(verifier.peer_id, "verifier", detail, job.evidence)
                judge, verdict = second, second_verdict  # the first verifier lied, not the stage
        if verdict.passed:
            self.reputation.record_check(job.stage.peer_id, True)
        else:
            detail = {"verdict": verdict.reason, "metrics": verdict.metrics, "verifier": judge.peer_id}
            self._record_failure(job.stage.peer_id, "recompute", detail, job.evidence)
        outcome = "passed" if verdict.passed else "failed"
        return self._result(AuditResult(job.stage.peer_id, outcome, verdict, judge.peer_id, probe=job.probe))

    async def _judge(self, job: AuditJob, verifier: Candidate) -> Verdict | None:
        """The audited outputs against ``verifier``'s recompute: the first that fails, else the
        furthest from the reference (None if the verifier failed)."""
        try:
            reference = await self.recompute(job, verifier)
        except PeerError as exc:
            log.info("verifier %s failed: %s", verifier.peer_id, exc)
            return None
        spec = self.coordinator.catalog.resolve(job.model)
        # the wire's rounding is not a difference to tolerate: the reference crossed the same
        # wire dtype (the recompute pipeline uses the audited session's) as the claimed output
        stage, other = job.stage.dtype or job.dtype, verifier.dtype or job.dtype
        tolerance = tolerance_for(stage, other, mixed=spec.mixed_precision)
        head = (await self.coordinator.load(job.model)).head if job.last else None
        logits = head.all_logits if head is not None else None
        tokens = {s.position: s.input.shape[1] for s in job.steps}
        kept = job.kept()
        verdicts = []
        for position, output in zip(job.positions, job.outputs, strict=True):
            claimed = from_wire(output)  # every position of the step, or (last stage) its last
            if claimed.shape[1] == tokens[position]:  # only the positions the session kept count
                claimed = claimed[:, : kept[position]]
            elif kept[position] < tokens[position]:  # its one row was a rejected draft's
                continue
            end = position + kept[position]
            expected = reference[:, end - claimed.shape[1] : end]
            verdict = await run_compute(compare, claimed, expected, tolerance, spec.massive_channels, logits)
            if not verdict.passed:
                verdict.reason = f"step at {position}: {verdict.reason}"
                return verdict
            verdicts.append(verdict)
        if not verdicts:
            return Verdict(True, tolerance.name)  # nothing the session kept was audited
        return max(verdicts, key=lambda v: v.metrics.get("rel_l2", 0.0))

    async def _verifier_for(self, job: AuditJob, also_exclude: str = "") -> Candidate | None:
        """Another peer serving exactly the audited span and on none of the audited routes
        (tier 3: redundant copies agreeing proves nothing): this node first, then peers of the
        audited stage's precision, then the best reputed."""
        hop = job.stage.hop
        same = job.stage.dtype  # a verifier of the same precision judges by the strict class
        found = [
            c
            for c in await self.coordinator.candidates(job.model, max_age=CANDIDATES_MAX_AGE_S)
            if (c.hop.layer_start, c.hop.layer_end) == (hop.layer_start, hop.layer_end)
            and c.peer_id not in job.route
            and c.peer_id != also_exclude
            and self.coordinator.admissible(c.peer_id)
            and comparable(same, c.dtype)
        ]
        found.sort(
            key=lambda c: (not c.local, c.dtype != same, -self.reputation.score(c.peer_id).total, c.peer_id)
        )
        return found[0] if found else None

    async def recompute(self, job: AuditJob, verifier: Candidate) -> torch.Tensor:
        """The verifier's output at every position, from the revealed inputs (replayed in their
        original chunks, so a same-precision verifier computes with the same shapes)."""
        tokens = sum(s.input.shape[1] for s in job.steps)
        config = PipelineConfig(
            job.model,
            self.coordinator.catalog.resolve(job.model).num_layers,
            tokens,
            dtype=job.dtype,
            max_failovers=0,
            direct_return=False,  # the verifier must not learn who asked
        )
        route = [verifier] if job.relay is None or verifier.local else [job.relay, verifier]
        async with Pipeline(self.coordinator, config, route) as pipeline:
            return await pipeline.recompute(job.history())

    # --- bookkeeping -------------------------------------------------------------------------

    def _result(self, result: AuditResult) -> AuditResult:
        """Count and keep ``result`` (for status and tests)."""
        setattr(self.stats, result.outcome, getattr(self.stats, result.outcome) + 1)
        self.stats.recent.append(result)
        log.info(
            "audit of %s: %s %s",
            result.peer_id,
            result.outcome,
            result.reason or (result.verdict.metrics if result.verdict else ""),
        )
        return result

    def _record_failure(self, peer_id: str, kind: str, detail: dict[str, Any], evidence: bytes) -> None:
        self.reputation.record_check(peer_id, False)
        self.reputation.record_evidence(peer_id, kind, detail, evidence)
        if kind != "recompute":
            self._result(AuditResult(peer_id, "failed", reason=f"{kind}: {detail.get('reason', '')}"))

    @staticmethod
    def _evidence(
        pipeline: Pipeline, index: int, steps: list[AuditedStep] | None, reveal: Reveal | None = None
    ) -> bytes:
        """The stage's terms, its commitments as received (signed), and what it revealed: the
        inputs with their receipts, the audited outputs and the signature over them."""
        ledger = pipeline.ledger.stages[index]
        terms = ledger.chain.terms
        return msgpack.packb(
            {
                "peer": ledger.peer_id,
                "terms": [
                    terms.session_id,
                    terms.model,
                    terms.layer_start,
                    terms.layer_end,
                    terms.model_hash,
                    terms.dtype,
                ],
                "steps": [[r.position, r.tokens] for r in ledger.chain.steps],
                "commitments": [c.to_bytes() for c in ledger.commitments],
                "revealed": [encode(s) for s in steps or ()],
                "outputs": [encode(o) for o in reveal.outputs] if reveal is not None else [],
                "signature": reveal.signature if reveal is not None else b"",
            },
            use_bin_type=True,
        )
