"""The economy end to end on a 3-peer swarm following a real one-member federation: after a
generation every stage has minted HYDRA for exactly the tokens it served, each payer has paid
its successor over a channel for the rest of the route's work, and both sides of every channel
hold the same state; closing the channels moves exactly that much."""

from pathlib import Path

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from hydra.economy.config import TokenConfig
from hydra.economy.receipts import countersign
from hydra.economy.tokenlog import MICRO, PRICE_PER_UNIT
from hydra.economy.wallet import Wallet
from hydra.verification.config import VerificationConfig
from tests.integration.test_receipts_real_hosts import REQUEST, SPEC
from tests.integration.test_token_federation_real_hosts import receipt_from
from tests.peers import swarm
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
