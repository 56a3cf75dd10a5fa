"""The economy end to end on swarms following a real federation: after a generation every
stage has minted HYDRA for exactly the tokens it served, each payer has paid its successor
over a channel for the rest of the route's work, and both sides of every channel hold the
same state; closing the channels moves exactly that much. A stage that signs two different
outputs for one step is slashed once every federation member has re-checked the evidence, and
a staked peer is preferred by routing."""

import dataclasses
import secrets
from pathlib import Path

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from hydra.coordinator.rtt import RttTable
from hydra.economy.config import TokenConfig
from hydra.economy.receipts import countersign
from hydra.economy.tokenlog import MICRO, PRICE_PER_UNIT, PRIORITY_BURN
from hydra.economy.wallet import Wallet
from hydra.errors import HydraError
from hydra.runtime.shard import StageBlocks
from hydra.runtime.wire import from_wire, to_wire
from hydra.stage.limits import StageLimits
from hydra.stage.server import StageConversation
from hydra.verification.config import VerificationConfig
from protocols import inference
from protocols.codec import Error
from protocols.errors import ErrorCode
from protocols.token import Event
from protocols.verify import tensor_digest
from tests.integration.test_receipts_real_hosts import REQUEST, SPEC
from tests.integration.test_stage_protocol_real_hosts import link_to, open_request, wrapped
from tests.integration.test_token_federation_real_hosts import receipt_from
from tests.peers import coordinator_for, replace_handler, stage_peer, swarm
from tests.rawpeer import client_host
from tests.tiny_models import save_tiny_model, tiny_llama_config
from tests.tokens import federation

FUNDING_TOKENS = 77_777  # what each payer is funded with (a mint no real session matches)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tiny_llama_config(), tmp_path_factory.mktemp("ckpt") / "tiny-llama")


async def fund(wallet: Wallet) -> None:
    signed = receipt_from(create_new_key_pair(), wallet.peer_id, FUNDING_TOKENS)
    wallet.earned(signed, countersign(wallet.identity, signed))
    assert await wallet.mint_pending() == 1


def mints(wallet: Wallet) -> list[int]:
    """The token counts of the mints ``wallet``'s node claimed, funding excluded."""
    return [
        s.entry.signed.event.amount
        for s in wallet.log.entries(0, 512)
        if s.entry.signed.author == wallet.peer_id
        and s.entry.signed.event.kind == "mint"
        and s.entry.signed.event.amount != FUNDING_TOKENS
    ]


async def test_stages_mint_what_they_served_and_channels_pay_hop_by_hop(
    checkpoint: Path, tmp_path: Path
) -> None:
    off = VerificationConfig(verify_rate=0.0)
    async with federation(tmp_path, n=1, k=1) as fed:
        token = TokenConfig(federation=(fed.multiaddr(),), channel_deposit=50 * MICRO)
        async with swarm(SPEC, checkpoint, [(0, 2), (2, 4), (4, 6)], verification=off, token=token) as (
            peers,
            coordinator,
        ):
            assert coordinator.tokens is not None
            wallets = [coordinator.tokens.wallet, *(p.stage.tokens.wallet for p in peers)]
            for wallet in wallets[:3]:  # every payer on the route holds HYDRA for its deposits
                await fund(wallet)
            done = await coordinator.generate(REQUEST)
            tokens = done.prompt_tokens + done.completion_tokens - 1  # the last token is never fed back

            def paid(payer: Wallet, payee: Wallet) -> tuple[int, int]:
                """What the payer's and the payee's books hold as paid on the payer's channel."""
                channel_id = payer.channels.paying(payee.peer_id)
                ends = [w.channels.held(channel_id) if channel_id else None for w in (payer, payee)]
                return tuple(h.state.paid if h else -1 for h in ends)

            owed = [(3 - i) * tokens * PRICE_PER_UNIT for i in range(3)]
            with trio.move_on_after(15):  # each stage pays its successor as its own session closes
                while [paid(wallets[i], wallets[i + 1]) for i in range(3)] != [(o, o) for o in owed]:
                    await trio.sleep(0.05)
            assert [paid(wallets[i], wallets[i + 1]) for i in range(3)] == [(o, o) for o in owed]
            for wallet in wallets[1:]:
                await wallet.mint_pending()
                assert mints(wallet) == [tokens], wallet.peer_id
            for i in range(3):
                payer, payee = wallets[i], wallets[i + 1]
                await payer.sync()
                before = payee.log.state.balances[payee.peer_id]
                await payer.channels.close(payer.channels.paying(payee.peer_id), tuple(
                    str(a) for a in payee.host.get_addrs()
                ))
                await payee.sync()
                assert payee.log.state.balances[payee.peer_id] == before + owed[i]
            await wallets[0].sync()
            assert wallets[0].log.state.supply == wallets[0].log.state.holdings()


class Equivocates(StageConversation):
    """Commits to what it computed, but sends its successor something else (with a receipt)."""

    async def _pass_on(self, session, step, output, digest, started, commitments):
        tampered = to_wire(from_wire(output) * 1.01, output.dtype)
        return await super()._pass_on(session, step, tampered, tensor_digest(tampered), started, commitments)


async def test_a_stage_that_signs_two_outputs_is_slashed_by_a_federation_that_rechecks(
    checkpoint: Path, tmp_path: Path
) -> None:
    off = VerificationConfig(verify_rate=0.0)
    async with federation(tmp_path, n=3, k=2) as fed:
        token = TokenConfig(federation=(fed.multiaddr(1),))  # asking a member that is not the sequencer
        async with swarm(SPEC, checkpoint, [(0, 3), (0, 3), (3, 6)], verification=off, token=token) as (
            peers,
            coordinator,
        ):
            cheat, honest, last = peers
            wallet = cheat.stage.tokens.wallet
            await fund(wallet)
            await wallet.submit(Event("stake", wallet.peer_id, 8 * MICRO))
            candidates = {c.peer_id: c for c in await coordinator.candidates(SPEC.id)}
            through = [candidates[honest.peer_id], candidates[last.peer_id]]
            expected = await coordinator.generate(REQUEST, through)
            replace_handler(cheat, Equivocates)
            done = await coordinator.generate(REQUEST, [candidates[cheat.peer_id], candidates[last.peer_id]])
            assert done.token_ids == expected.token_ids and cheat.peer_id not in done.route
            assert [e["kind"] for e in coordinator.reputation.evidence(cheat.peer_id)] == ["equivocation"]
            with trio.fail_after(15):
                while any(m.log.state.slashed[cheat.peer_id] == 0 for m in fed.members):
                    await trio.sleep(0.05)
            for member in fed.members:  # each re-checked it before signing or appending it
                assert member.log.state.staked[cheat.peer_id] == 4 * MICRO
                assert len(member.log.state.evidence) == 1


async def test_a_staked_peer_is_preferred_by_routing(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """Two peers serve the same blocks; the one that stakes wins the route (reputation's stake
    term lowers its hop's cost), and loses it again when it unstakes. Stake is worth at most
    15% of a hop's cost, so the two are made equal otherwise: the same announced throughput and
    the same round trip (measured ones differ by more than that on a shared machine)."""
    monkeypatch.setattr(StageBlocks, "measure_throughput", lambda self, steps=8: 1000.0)

    async def same_round_trips(self, candidates) -> None:
        self.values.update({c.peer_id: 0.001 for c in candidates})

    monkeypatch.setattr(RttTable, "measure", same_round_trips)
    async with federation(tmp_path, n=1, k=1) as fed:
        token = TokenConfig(federation=(fed.multiaddr(),))
        off = VerificationConfig(verify_rate=0.0)
        async with swarm(SPEC, checkpoint, [(0, 6), (0, 6)], verification=off, token=token) as (
            peers,
            coordinator,
        ):
            route = await coordinator.plan(SPEC.id)
            assert route is not None
            chosen = route[0].peer_id
            other = next(p for p in peers if p.peer_id != chosen)
            wallet = other.stage.tokens.wallet
            await fund(wallet)
            await wallet.submit(Event("stake", wallet.peer_id, 70 * MICRO))
            await coordinator.tokens.wallet.sync()
            assert coordinator.reputation.score(other.peer_id).stake > 0.8
            route = await coordinator.plan(SPEC.id)
            assert route is not None and route[0].peer_id == other.peer_id
            await wallet.submit(Event("unstake", wallet.peer_id, 70 * MICRO))
            await coordinator.tokens.wallet.sync()
            assert coordinator.reputation.score(other.peer_id).stake == 0


async def test_a_full_stage_admits_a_request_that_burned_for_priority(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Four ordinary sessions fill a stage of five slots (one kept for priority): an ordinary
    request is refused, a request with a priority ticket (0.01 HYDRA burned, every stage on the
    route checks the burn in its replica) is served; a made-up ticket is worth nothing."""
    limits = StageLimits(max_sessions=5, peer_share=1.0)  # priority_share 0.2: one slot kept
    async with federation(tmp_path, n=1, k=1) as fed:
        token = TokenConfig(federation=(fed.multiaddr(),))
        async with (
            stage_peer(SPEC, checkpoint, (0, 6), limits=limits, token=token) as stage,
            coordinator_for(SPEC, checkpoint, stage.multiaddr, token=token) as coordinator,
            client_host() as squatter,
        ):
            for _ in range(4):
                link = await link_to(squatter, stage)
                assert isinstance(await link.call(open_request(stage), 10.0), inference.SessionOpened)
            with pytest.raises(HydraError, match="no session slot left"):
                await coordinator.generate(REQUEST)
            link = await link_to(squatter, stage)
            made_up = await link.call(wrapped([stage], 16, priority=secrets.token_bytes(32)).open, 10.0)
            assert isinstance(made_up, Error) and made_up.code == ErrorCode.OVERLOADED
            await fund(coordinator.tokens.wallet)
            done = await coordinator.generate(dataclasses.replace(REQUEST, priority=True))
            assert done.completion_tokens > 0
            burns = [s.entry.signed.event for s in fed.members[0].log.entries(0, 64)]
            assert [(e.kind, e.amount) for e in burns if e.kind == "burn"] == [("burn", PRIORITY_BURN)]
            again = await coordinator.generate(dataclasses.replace(REQUEST, priority=True))
            assert again.token_ids == done.token_ids  # the same ticket serves ten minutes
            assert fed.members[0].log.state.burned[coordinator.peer_id] == PRIORITY_BURN
