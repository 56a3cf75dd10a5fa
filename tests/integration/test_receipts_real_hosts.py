"""Paying along the route over real hosts: after a generation on a 3-peer swarm, every
stage's ledger holds credits for exactly the tokens it served, and each pair of neighbours
agrees on what passed between them; a route abandoned by a failover is paid for what it
completed. Bad receipts get typed errors and post nothing."""

import dataclasses
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from hydra.coordinator.generation import GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.economy.ledger import MICRO_PER_TOKEN
from hydra.economy.receipts import SELF, peer_account, sign, work_root
from hydra.stage.limits import StageLimits
from hydra.stage.links import RECEIPT_LINK, RemoteLink
from hydra.stage.server import StageConversation
from hydra.verification.config import VerificationConfig
from protocols import inference, receipt
from protocols.codec import Error
from protocols.errors import ErrorCode
from tests.integration.test_stage_protocol_real_hosts import hop_of, wrapped
from tests.peers import coordinator_for, replace_handler, spec_for, stage_peer, swarm
from tests.rawpeer import RawSession, client_host
from tests.tiny_models import save_tiny_model, tiny_llama_config

SPEC = spec_for("tiny-llama", 6)
# a prompt long enough (byte tokens) that receipts also flow mid-session, not only at its end
REQUEST = GenerationRequest(SPEC.id, prompt="Pay me. " * 40, params=SamplingParams(max_tokens=8))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("ckpt") / "tiny-llama")


async def test_every_stage_is_credited_for_exactly_what_it_served(checkpoint: Path) -> None:
    off = VerificationConfig(verify_rate=0.0)
    async with swarm(SPEC, checkpoint, [(0, 2), (2, 4), (4, 6)], verification=off) as (peers, coordinator):
        done = await coordinator.generate(REQUEST)
        tokens = done.prompt_tokens + done.completion_tokens - 1  # the last token is never fed back
        earned = tokens * MICRO_PER_TOKEN
        assert coordinator.ledger.balance(SELF) == -3 * earned
        with trio.move_on_after(10):  # each stage pays its successor as its own session closes
            while any(p.stage.ledger.balance(SELF) != earned for p in peers):
                await trio.sleep(0.05)
        for peer in peers:
            assert peer.stage.ledger.balance(SELF) == earned, peer.peer_id
        chain = [coordinator.peer_id, *(p.peer_id for p in peers)]
        ledgers = [coordinator.ledger, *(p.stage.ledger for p in peers)]
        for i in range(3):  # payer i and payee i+1 agree on what passed between them
            owed = (3 - i) * earned
            assert ledgers[i].balance(peer_account(chain[i + 1])) == owed
            assert ledgers[i + 1].balance(peer_account(chain[i])) == -owed
        for ledger in ledgers:
            assert ledger.unbalanced() == []
        receipts = coordinator.ledger.db.execute("SELECT seq FROM receipts").fetchall()
        assert [r[0] for r in receipts] == [1]  # two receipts: after the prompt, then at the close


async def test_a_prompt_over_the_unpaid_limit_is_paid_along_the_route_before_the_next_step(
    checkpoint: Path,
) -> None:
    """A 320-token prompt through stages that serve at most 300 tokens unpaid: each stage must
    pay its successor for the prompt before passing the next step on, or the successor refuses
    it (``payment_required``) on a direct route, where no reply tells a stage the prompt is done."""
    limits = StageLimits(unpaid_tokens=300)
    off = VerificationConfig(verify_rate=0.0)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(stage_peer(SPEC, checkpoint, (0, 2), limits=limits))
        for span in ((2, 4), (4, 6)):
            joining = stage_peer(SPEC, checkpoint, span, (first.multiaddr,), limits=limits)
            await stack.enter_async_context(joining)
        coordinator = await stack.enter_async_context(
            coordinator_for(SPEC, checkpoint, first.multiaddr, verification=off)
        )
        with trio.fail_after(15):
            while len(await coordinator.candidates(SPEC.id)) < 3:
                await trio.sleep(0.1)
        done = await coordinator.generate(REQUEST)
    assert done.prompt_tokens > 300 and done.completion_tokens == 8 and done.failovers == 0


def receipt_for(session: RawSession, payee: str, tokens: int, steps: int) -> receipt.ReceiptBody:
    """What a raw client owes a one-stage route for its first ``steps`` steps."""
    return receipt.ReceiptBody(
        payer=session.host.get_id().to_base58(),
        payee=payee,
        session_id=session.route.session_ids[0],
        model=SPEC.id,
        layer_start=0,
        layer_end=SPEC.num_layers,
        tokens=tokens,
        units=tokens,
        seq=0,
        work_root=work_root(session.made[:steps]),
    )


async def test_forged_wrong_and_replayed_receipts_are_refused(checkpoint: Path) -> None:
    async with swarm(SPEC, checkpoint, [(0, 6)]) as (peers, _), client_host() as host:
        target = peers[0]
        session = RawSession(host, wrapped([target], max_length=16))
        link = await RemoteLink.open(host, hop_of(target), 5.0)
        await link.call(session.route.open, 10.0)
        await link.call(session.step(0, tokens=3), 10.0)
        payments = await RemoteLink.open(host, hop_of(target), 5.0, RECEIPT_LINK)
        body = receipt_for(session, target.peer_id, tokens=3, steps=1)
        identity = session.identity

        async def answer(message):
            return await payments.call(message, 10.0)

        forged = dataclasses.replace(sign(identity, body), payer_signature=bytes(64))
        assert (await answer(forged)).code == ErrorCode.BAD_RECEIPT_SIGNATURE
        too_much = sign(identity, dataclasses.replace(body, units=30))
        assert (await answer(too_much)).code == ErrorCode.WRONG_AMOUNT
        other_span = sign(identity, dataclasses.replace(body, layer_start=2))
        assert (await answer(other_span)).code == ErrorCode.WRONG_AMOUNT
        ok = await answer(sign(identity, body))
        assert isinstance(ok, receipt.Countersigned)
        replayed = await answer(sign(identity, body))
        assert isinstance(replayed, Error) and replayed.code == ErrorCode.STALE
        assert target.stage.ledger.balance(SELF) == 3 * MICRO_PER_TOKEN  # posted once
        await payments.aclose()
        await link.aclose()


async def test_a_stage_stops_serving_work_nobody_pays_for(checkpoint: Path) -> None:
    limits = StageLimits(unpaid_tokens=4)
    async with stage_peer(SPEC, checkpoint, (0, 6), limits=limits) as target, client_host() as host:
        session = RawSession(host, wrapped([target], max_length=32))
        link = await RemoteLink.open(host, hop_of(target), 5.0)
        await link.call(session.route.open, 10.0)
        assert isinstance(await link.call(session.step(0, tokens=3), 10.0), inference.Hidden)
        assert isinstance(await link.call(session.step(3, tokens=3), 10.0), inference.Hidden)
        refused = await link.call(session.step(6), 10.0)
        assert isinstance(refused, Error) and refused.code == ErrorCode.PAYMENT_REQUIRED
        body = receipt_for(session, target.peer_id, tokens=6, steps=2)  # the refused step is not paid
        payments = await RemoteLink.open(host, hop_of(target), 5.0, RECEIPT_LINK)
        assert isinstance(await payments.call(sign(session.identity, body), 10.0), receipt.Countersigned)
        assert isinstance(await link.call(session.step(6), 10.0), inference.Hidden)  # paid: serving again
        await payments.aclose()
        await link.aclose()


class GivesUpOnItsThirdStep(StageConversation):
    """Serves two steps of each session, then refuses the third (a typed error)."""

    async def _step(self, step):
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps == 3:
            return Error(ErrorCode.OVERLOADED, "going away")
        return await super()._step(step)


async def test_the_work_a_failed_over_route_completed_is_paid_for(checkpoint: Path) -> None:
    """A middle stage fails mid-generation; the coordinator pays the abandoned route for the
    steps it completed before re-routing, each stage pays on for them, and the failed stage is
    paid for what it did: every stage ends with credits for exactly what came back through it."""
    off = VerificationConfig(verify_rate=0.0)
    spans = [(0, 2), (2, 4), (2, 4), (4, 6)]
    async with swarm(SPEC, checkpoint, spans, verification=off) as (peers, coordinator):
        first, failing, spare, last = peers
        candidates = {c.peer_id: c for c in await coordinator.candidates(SPEC.id)}
        replace_handler(failing, GivesUpOnItsThirdStep)
        route = [candidates[p.peer_id] for p in (first, failing, last)]
        done = await coordinator.generate(REQUEST, route)
        assert done.failovers == 1 and spare.peer_id in done.route
        served = (done.prompt_tokens + done.completion_tokens - 1) * MICRO_PER_TOKEN  # the new route
        with trio.move_on_after(10):  # stages pay on as their sessions close
            while last.stage.ledger.balance(SELF) <= served or spare.stage.ledger.balance(SELF) < served:
                await trio.sleep(0.05)
        abandoned = failing.stage.ledger.balance(SELF)  # the two steps it completed
        assert abandoned > 0
        assert spare.stage.ledger.balance(SELF) == served
        assert first.stage.ledger.balance(SELF) == last.stage.ledger.balance(SELF) == served + abandoned
        total = sum(p.stage.ledger.balance(SELF) for p in peers)
        assert coordinator.ledger.balance(SELF) == -total
