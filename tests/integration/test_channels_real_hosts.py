"""Payment channels over real hosts (``/hydra/channel/1.0.0``) with a real federation: updates
signed by both sides with increasing nonces, a cooperative close, a stale close that loses the
challenge, the TTL closing and settling channels, the 9th channel refused, hostile updates
answered with typed errors while nothing held changes."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from hydra.economy.channel_book import CLOSE_MARGIN_S, ChannelBook
from hydra.economy.channels import CHALLENGE_S, MAX_CHANNELS, TTL_S, sign_state
from hydra.economy.receipts import countersign
from hydra.economy.tokenlog import MICRO
from hydra.economy.wallet import TokenRefused, Wallet
from hydra.p2p.streams import RemoteError
from protocols.channel import ChannelState, Update
from protocols.errors import ErrorCode
from tests.integration.test_token_federation_real_hosts import receipt_from
from tests.tokens import federation, wallet_host


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def funded(wallet: Wallet, tokens: int = 40_000) -> None:
    signed = receipt_from(create_new_key_pair(), wallet.peer_id, tokens)
    wallet.earned(signed, countersign(wallet.identity, signed))
    assert await wallet.mint_pending() == 1


def addrs(wallet: Wallet) -> tuple[str, ...]:
    return tuple(str(a) for a in wallet.host.get_addrs())


@asynccontextmanager
async def funded_pair(tmp_path: Path) -> AsyncIterator[tuple[Clock, Wallet, Wallet]]:
    """A payer holding HYDRA and a payee, following one federation, all on one test clock."""
    clock = Clock()
    async with (
        federation(tmp_path, clock=clock) as fed,
        wallet_host(fed, clock=clock) as payer,
        wallet_host(fed, clock=clock) as payee,
    ):
        await funded(payer)
        yield clock, payer, payee


async def synced(*wallets: Wallet) -> None:
    for wallet in wallets:
        assert await wallet.sync()


async def test_updates_then_a_cooperative_close_pay_the_payee(tmp_path: Path) -> None:
    async with funded_pair(tmp_path) as (_, payer, payee):
        before = payer.log.state.balances[payer.peer_id]
        channel_id = await payer.channels.open(payee.peer_id, 10 * MICRO)
        assert payer.channels.paying(payee.peer_id) == channel_id
        for _ in range(5):
            await payer.channels.pay(channel_id, MICRO // 2, addrs(payee))
        held = payee.channels.held(channel_id)
        assert held is not None and (held.state.nonce, held.state.paid) == (4, 5 * MICRO // 2)
        await payer.channels.close(channel_id, addrs(payee))
        await synced(payer, payee)
        assert channel_id not in payer.log.state.channels
        assert payee.log.state.balances[payee.peer_id] == 5 * MICRO // 2
        assert payer.log.state.balances[payer.peer_id] == before - 5 * MICRO // 2


async def test_a_stale_close_loses_to_the_later_state_in_the_window(tmp_path: Path) -> None:
    async with funded_pair(tmp_path) as (clock, payer, payee):
        channel_id = await payer.channels.open(payee.peer_id, 10 * MICRO)
        early = await payer.channels.pay(channel_id, MICRO, addrs(payee))
        await payer.channels.pay(channel_id, 3 * MICRO, addrs(payee))
        await payer.submit(early.close_event(payer.peer_id))  # the payer cheats with an old state
        await payee.sync()
        clock.now += CHALLENGE_S / 2
        await payee.channels.watch(lambda peer: ())  # the payee answers with its later state
        with pytest.raises(TokenRefused) as info:  # and the old one cannot come back
            await payer.submit(early.close_event(payer.peer_id))
        assert info.value.protocol_code == ErrorCode.STALE
        clock.now += CHALLENGE_S
        await payee.channels.watch(lambda peer: ())  # past the window: settle
        await synced(payer, payee)
        assert channel_id not in payee.log.state.channels
        assert payee.log.state.balances[payee.peer_id] == 4 * MICRO


async def test_the_ttl_closes_and_settles_a_channel_whose_payer_vanished(tmp_path: Path) -> None:
    async with funded_pair(tmp_path) as (clock, payer, payee):
        channel_id = await payer.channels.open(payee.peer_id, 10 * MICRO)
        await payer.channels.pay(channel_id, 2 * MICRO, addrs(payee))
        await payer.host.close()  # gone without closing
        clock.now += TTL_S - CLOSE_MARGIN_S
        assert payer.channels.paying(payee.peer_id) is None  # too close to the TTL to use
        await payee.channels.watch(lambda peer: ())
        assert payee.log.state.channels[channel_id].closing_until is not None
        clock.now += CHALLENGE_S
        await payee.channels.watch(lambda peer: ())
        assert channel_id not in payee.log.state.channels
        assert payee.log.state.balances[payee.peer_id] == 2 * MICRO


async def test_an_overdraft_and_the_ninth_channel_are_refused(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed, wallet_host(fed) as payer:
        await funded(payer)
        with pytest.raises(TokenRefused) as info:  # a deposit beyond the balance is an overdraft
            await payer.channels.open("someone", 10**6 * MICRO)
        assert info.value.protocol_code == ErrorCode.OVERDRAFT
        for _ in range(MAX_CHANNELS):
            await payer.channels.open(ID.from_pubkey(create_new_key_pair().public_key).to_base58(), MICRO)
        with pytest.raises(TokenRefused) as info:
            await payer.channels.open(ID.from_pubkey(create_new_key_pair().public_key).to_base58(), MICRO)
        assert info.value.protocol_code == ErrorCode.TOO_MANY_CHANNELS


async def test_hostile_updates_get_typed_errors_and_change_nothing_held(tmp_path: Path) -> None:
    async with (
        federation(tmp_path) as fed,
        wallet_host(fed) as payer,
        wallet_host(fed) as payee,
        wallet_host(fed) as stranger,
    ):
        await funded(payer)
        channel_id = await payer.channels.open(payee.peer_id, 2 * MICRO)
        await payer.channels.pay(channel_id, MICRO, addrs(payee))
        held = payee.channels.held(channel_id)

        def update(signer, nonce: int, paid: int) -> Update:
            state = ChannelState(channel_id, nonce, paid)
            return Update(state.to_bytes(), sign_state(signer, state))

        attempts = {
            "replayed nonce": (payer, update(payer.identity, 0, MICRO), ErrorCode.STALE),
            "paying back": (payer, update(payer.identity, 5, MICRO // 2), ErrorCode.WRONG_AMOUNT),
            "over the deposit": (payer, update(payer.identity, 5, 3 * MICRO), ErrorCode.WRONG_AMOUNT),
            "forged signer": (payer, update(stranger.identity, 5, MICRO), ErrorCode.BAD_SIGNATURE),
            "not the payer": (stranger, update(stranger.identity, 5, MICRO), ErrorCode.NOT_ALLOWED),
        }
        for name, (sender, message, code) in attempts.items():
            book = ChannelBook(sender)
            with pytest.raises(RemoteError) as info:
                await book._send(payee.peer_id, addrs(payee), message)
            assert info.value.code == code, name
        assert payee.channels.held(channel_id) == held
        await payer.channels.pay(channel_id, MICRO // 4, addrs(payee))  # it still serves
        assert payee.channels.held(channel_id).state.paid == MICRO + MICRO // 4
