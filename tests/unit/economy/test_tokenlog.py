"""The HYDRA token log: chaining and co-signatures, the replay rules, the supply cap, channels."""

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair

from hydra.economy.channels import CHALLENGE_S, MAX_CHANNELS, TTL_S, sign_state
from hydra.economy.tokenlog import CAP, MICRO, MINT_PER_TOKEN, UNBOND_S, TokenLog, TokenState, mint_reward
from protocols.channel import ChannelState
from protocols.errors import ErrorCode, ProtocolError
from protocols.token import Entry, Event, Sealed
from tests.tokens import LocalFederation, peer_of


def claim_ref() -> bytes:
    return secrets.token_bytes(32)


def funded(fed: LocalFederation, tokens: int = 10_000):
    """A fresh account holding what serving ``tokens`` mints."""
    key = create_new_key_pair()
    fed.append(key, Event("mint", peer_of(key), tokens, ref=claim_ref()))
    return key


def refused(fed: LocalFederation, author, event: Event) -> str:
    before = (fed.log.length, fed.log.state.supply, dict(fed.log.state.balances))
    with pytest.raises(ProtocolError) as info:
        fed.append(author, event)
    assert (fed.log.length, fed.log.state.supply, dict(fed.log.state.balances)) == before
    return info.value.code


def test_a_claim_mints_only_its_increase() -> None:
    fed = LocalFederation()
    key, ref = create_new_key_pair(), claim_ref()
    fed.append(key, Event("mint", peer_of(key), 1000, ref=ref))
    first = fed.log.state.balances[peer_of(key)]
    assert first == 1000 * MINT_PER_TOKEN  # at a tiny supply the rate is full
    assert refused(fed, key, Event("mint", peer_of(key), 1000, ref=ref)) == ErrorCode.STALE
    fed.append(key, Event("mint", peer_of(key), 1500, ref=ref))
    assert fed.log.state.balances[peer_of(key)] == first + mint_reward(500, first)
    assert fed.log.state.supply == first + mint_reward(500, first)


def test_the_mint_rate_falls_to_nothing_at_the_cap() -> None:
    assert mint_reward(1000, 0) == 1000 * MINT_PER_TOKEN
    assert mint_reward(1000, CAP // 2) == 1000 * MINT_PER_TOKEN // 2
    assert mint_reward(10**12, CAP - 5) <= 5 and mint_reward(10**9, CAP) == 0


KINDS = ["mint", "burn", "stake", "unstake", "withdraw", "slash", "channel_open", "channel_settle"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(KINDS), st.integers(0, 3), st.integers(0, 1 << 62), st.floats(0, 2 * UNBOND_S)
        ),
        max_size=40,
    )
)
def test_the_supply_never_exceeds_69_million_and_always_equals_the_holdings(ops) -> None:
    """Replay arbitrary events at arbitrary times (refused ones change nothing): the supply stays
    within the cap and equals what accounts hold, liquid, staked, unbonding or deposited."""
    state = TokenState()
    accounts = [f"peer-{i}" for i in range(4)]
    at = 0.0
    for n, (kind, who, amount, wait) in enumerate(ops):
        account, other = accounts[who], accounts[(who + 1) % 4]
        at += wait
        ref = n.to_bytes(32, "big")
        if kind.startswith("channel"):  # settles the channel opened the step before, if any
            ref = ((n if kind == "channel_open" else n - 1) % 2**64).to_bytes(16, "big")
        event = Event(kind, account, amount, counterparty=other, ref=ref)
        try:
            state.apply_unsigned(event, at, other if kind == "slash" else account)
        except ProtocolError:
            pass
        assert 0 <= state.supply <= CAP
        assert state.supply == state.holdings()
        assert all(
            v >= 0 for v in (*state.balances.values(), *state.staked.values(), *state.unbonding.values())
        )


def test_unstaked_hydra_stays_slashable_until_it_is_withdrawn() -> None:
    fed = LocalFederation()
    cheat, accuser = funded(fed), funded(fed)
    fed.append(cheat, Event("stake", peer_of(cheat), 4 * MICRO))
    fed.append(cheat, Event("unstake", peer_of(cheat), 4 * MICRO))
    assert fed.log.state.staked[peer_of(cheat)] == 0  # out of routing at once
    assert refused(fed, cheat, Event("withdraw", peer_of(cheat), 4 * MICRO)) == ErrorCode.NOT_ALLOWED
    fed.append(accuser, Event("slash", peer_of(cheat), ref=claim_ref()))
    assert fed.log.state.unbonding[peer_of(cheat)] == 2 * MICRO
    fed.now += UNBOND_S
    held = fed.log.state.balances[peer_of(cheat)]
    fed.append(cheat, Event("withdraw", peer_of(cheat), 2 * MICRO))
    assert fed.log.state.balances[peer_of(cheat)] == held + 2 * MICRO


def test_spending_more_than_is_held_is_an_overdraft_and_changes_nothing() -> None:
    fed = LocalFederation()
    key = funded(fed)
    held = fed.log.state.balances[peer_of(key)]
    for kind in ("burn", "stake"):
        assert refused(fed, key, Event(kind, peer_of(key), held + 1)) == ErrorCode.OVERDRAFT
    assert refused(fed, key, Event("unstake", peer_of(key), 1)) == ErrorCode.OVERDRAFT
    assert refused(fed, key, Event("burn", peer_of(key), 0)) == ErrorCode.NOT_ALLOWED
    fed.append(key, Event("stake", peer_of(key), held // 2))
    fed.append(key, Event("burn", peer_of(key), held // 4))
    state = fed.log.state
    assert (state.balances[peer_of(key)], state.staked[peer_of(key)]) == (
        held - held // 2 - held // 4,
        held // 2,
    )
    assert state.supply == held - held // 4


def test_a_slash_burns_half_the_stake_once_per_evidence() -> None:
    fed = LocalFederation()
    cheat, accuser = funded(fed), funded(fed)
    fed.append(cheat, Event("stake", peer_of(cheat), 4 * MICRO))
    evidence = claim_ref()
    fed.append(accuser, Event("slash", peer_of(cheat), ref=evidence))
    assert fed.log.state.staked[peer_of(cheat)] == 2 * MICRO
    assert fed.log.state.slashed[peer_of(cheat)] == 2 * MICRO
    assert refused(fed, accuser, Event("slash", peer_of(cheat), ref=evidence)) == ErrorCode.DUPLICATE
    assert refused(fed, cheat, Event("slash", peer_of(cheat), ref=claim_ref())) == ErrorCode.NOT_ALLOWED


def test_an_event_about_another_account_is_refused() -> None:
    fed = LocalFederation()
    victim, thief = funded(fed), create_new_key_pair()
    assert refused(fed, thief, Event("stake", peer_of(victim), 1)) == ErrorCode.NOT_ALLOWED


def test_entries_must_chain_carry_k_member_signatures_and_be_signed_by_their_author() -> None:
    fed = LocalFederation(n=3, k=2)
    key = create_new_key_pair()
    entry = fed.entry(key, Event("mint", peer_of(key), 10, ref=claim_ref()))
    with pytest.raises(ProtocolError, match="co-signatures"):
        fed.log.append(fed.seal(entry, signers=1))
    outsider = LocalFederation().seal(entry)  # a valid signature by a non-member
    with pytest.raises(ProtocolError, match="co-signatures"):
        fed.log.append(Sealed(entry, fed.seal(entry, signers=1).cosignatures + outsider.cosignatures))
    wrong_prev = Entry(entry.seq, bytes(32), entry.at, entry.signed)
    with pytest.raises(ProtocolError) as info:
        fed.log.append(fed.seal(wrong_prev))
    assert info.value.code == ErrorCode.BAD_ENTRY
    forged = Entry(
        entry.seq, entry.prev, entry.at, type(entry.signed)(entry.signed.event, peer_of(key), bytes(64))
    )
    with pytest.raises(ProtocolError) as info:
        fed.log.append(fed.seal(forged))
    assert info.value.code == ErrorCode.BAD_SIGNATURE
    assert fed.log.length == 0
    fed.log.append(fed.seal(entry))
    assert fed.log.length == 1


def test_a_replica_reopened_from_disk_replays_to_the_same_state(tmp_path) -> None:
    fed = LocalFederation()
    fed.log = TokenLog(fed.genesis, tmp_path / "log.db")
    key = funded(fed)
    fed.append(key, Event("stake", peer_of(key), MICRO))
    again = TokenLog(fed.genesis, tmp_path / "log.db")
    assert (again.length, again.head, again.state.staked, again.state.supply) == (
        fed.log.length,
        fed.log.head,
        fed.log.state.staked,
        fed.log.state.supply,
    )


# --- channels -------------------------------------------------------------------------------


def open_channel(fed: LocalFederation, payer, payee, deposit: int = MICRO) -> bytes:
    ref = secrets.token_bytes(ChannelState.ID_BYTES)
    fed.append(payer, Event("channel_open", peer_of(payer), deposit, counterparty=peer_of(payee), ref=ref))
    return ref


def close(payer, payee, ref: bytes, nonce: int, paid: int, final: bool = False, by=None) -> Event:
    """A close by ``by`` (the payer unless given) with a state both sides signed."""
    state = ChannelState(ref, nonce, paid, final)
    signatures = (sign_state(payer, state), sign_state(payee, state))
    author = peer_of(by or payer)
    return Event("channel_close", author, 0, ref=ref, state=state.to_bytes(), signatures=signatures)


def test_a_cooperative_close_settles_at_once() -> None:
    fed = LocalFederation()
    payer, payee = funded(fed), create_new_key_pair()
    held = fed.log.state.balances[peer_of(payer)]
    ref = open_channel(fed, payer, payee)
    assert fed.log.state.balances[peer_of(payer)] == held - MICRO
    fed.append(payer, close(payer, payee, ref, 7, MICRO // 4, final=True))
    balances = fed.log.state.balances
    assert (balances[peer_of(payer)], balances[peer_of(payee)]) == (held - MICRO // 4, MICRO // 4)
    assert ref not in fed.log.state.channels


def test_a_stale_state_loses_the_challenge() -> None:
    fed = LocalFederation()
    payer, payee = funded(fed), create_new_key_pair()
    held = fed.log.state.balances[peer_of(payer)]
    ref = open_channel(fed, payer, payee)
    fed.append(payer, close(payer, payee, ref, 3, 100))  # the payer closes with an old state
    fed.now += CHALLENGE_S / 2
    fed.append(payee, close(payer, payee, ref, 9, 900, by=payee))  # the payee answers with its latest
    assert refused(fed, payer, close(payer, payee, ref, 5, 200)) == ErrorCode.STALE
    assert refused(fed, payee, Event("channel_settle", peer_of(payee), ref=ref)) == ErrorCode.NOT_ALLOWED
    fed.now += CHALLENGE_S
    fed.append(payee, Event("channel_settle", peer_of(payee), ref=ref))
    balances = fed.log.state.balances
    assert (balances[peer_of(payer)], balances[peer_of(payee)]) == (held - 900, 900)


def test_a_state_must_be_signed_by_both_sides_and_within_the_deposit() -> None:
    fed = LocalFederation()
    payer, payee, other = funded(fed), create_new_key_pair(), create_new_key_pair()
    ref = open_channel(fed, payer, payee)
    assert refused(fed, payer, close(payer, other, ref, 1, 10)) == ErrorCode.BAD_SIGNATURE
    assert refused(fed, payer, close(payer, payee, ref, 1, MICRO + 1)) == ErrorCode.OVERDRAFT
    assert refused(fed, other, close(payer, payee, ref, 1, 10, by=other)) == ErrorCode.NOT_ALLOWED


def test_the_ninth_channel_is_refused() -> None:
    fed = LocalFederation()
    payer = funded(fed, tokens=100_000)
    for _ in range(MAX_CHANNELS):
        open_channel(fed, payer, create_new_key_pair(), deposit=MICRO // 100)
    ref = secrets.token_bytes(16)
    ninth = Event("channel_open", peer_of(payer), 1, counterparty=peer_of(create_new_key_pair()), ref=ref)
    assert refused(fed, payer, ninth) == ErrorCode.TOO_MANY_CHANNELS


def test_after_the_ttl_an_unclosed_channel_settles_on_its_latest_state() -> None:
    fed = LocalFederation()
    payer, payee = funded(fed), create_new_key_pair()
    held = fed.log.state.balances[peer_of(payer)]
    ref = open_channel(fed, payer, payee)
    fed.now += TTL_S
    assert refused(fed, payer, Event("channel_settle", peer_of(payer), ref=ref)) == ErrorCode.NOT_ALLOWED
    fed.append(payee, close(payer, payee, ref, 4, 4000, by=payee))  # still within the window after the TTL
    fed.now += CHALLENGE_S
    fed.append(payer, Event("channel_settle", peer_of(payer), ref=ref))
    assert fed.log.state.balances[peer_of(payee)] == 4000
    assert fed.log.state.balances[peer_of(payer)] == held - 4000
