"""The HYDRA token log over real hosts: a 3-member federation (k=2) seals mints backed by
countersigned receipts, stakes and slashes backed by equivocation evidence; every member
checks every proof itself; refusals are typed and append nothing; replicas agree."""

import secrets
import time
from pathlib import Path

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from hydra.economy.federation import ask
from hydra.economy.proofs import claim, evidence_ref
from hydra.economy.receipts import countersign, sign
from hydra.economy.tokenlog import MICRO, MINT_PER_TOKEN, TokenLog, sign_event
from hydra.economy.wallet import TokenRefused
from hydra.errors import Unavailable
from hydra.p2p.streams import RemoteError
from hydra.verification.commitments import CommitmentChain, Terms, sign_head, sign_receipt
from protocols import receipt
from protocols.codec import encode
from protocols.errors import ErrorCode, ProtocolError
from protocols.token import ChainStep, Entry, Equivocation, Event, MintProof, Propose, Submit
from tests.tokens import FederationPeers, federation, peer_of, wallet_host


def receipt_from(payer, payee: str, tokens: int) -> receipt.Receipt:
    body = receipt.ReceiptBody(
        payer=peer_of(payer),
        payee=payee,
        session_id=secrets.token_bytes(16),
        model="m",
        layer_start=0,
        layer_end=2,
        tokens=tokens,
        units=tokens,
        seq=0,
        work_root=bytes(16),
    )
    return sign(payer, body)


def heads(fed: FederationPeers) -> set[bytes]:
    return {m.log.head for m in fed.members}


async def settled(fed: FederationPeers, length: int) -> None:
    """Wait for every member to have ``length`` entries (the last hand-out is in flight)."""
    with trio.fail_after(10):
        while any(m.log.length != length for m in fed.members):
            await trio.sleep(0.02)


async def test_mints_and_stakes_are_sealed_and_replayed_alike_everywhere(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed, wallet_host(fed) as wallet:
        payer = create_new_key_pair()
        signed = receipt_from(payer, wallet.peer_id, 4000)
        wallet.earned(signed, countersign(wallet.identity, signed))
        assert await wallet.mint_pending() == 1
        assert wallet.account()["hydra"] == 4000 * MINT_PER_TOKEN / MICRO
        wallet.earned(signed, countersign(wallet.identity, signed))  # the same receipt again
        assert await wallet.mint_pending() == 0
        await wallet.submit(Event("stake", wallet.peer_id, 3 * MICRO))
        await settled(fed, 2)
        assert len(heads(fed)) == 1 and wallet.log.head in heads(fed)
        for member in fed.members:
            assert member.log.state.staked[wallet.peer_id] == 3 * MICRO
        fresh = TokenLog(fed.genesis, tmp_path / "fresh.db")  # a newcomer replays the log
        async with wallet_host(fed) as newcomer:
            newcomer.log = fresh
            assert await newcomer.sync()
        assert fresh.head == wallet.log.head and fresh.state.balances == wallet.log.state.balances


async def test_a_replica_caught_up_twice_at_once_appends_each_entry_once(tmp_path: Path) -> None:
    """A stage pays its successor while its predecessor's channel makes it check the log: two
    catch-ups of one wallet at once must not append the same entries twice (a stale append
    used to fail the payment with ``bad_entry``)."""
    # one member: a failed catch-up has no other member to fall back on
    async with federation(tmp_path, n=1, k=1) as fed, wallet_host(fed) as busy, wallet_host(fed) as other:
        for tokens in (1000, 2000, 3000):  # the log grows by three mints the busy wallet has not seen
            signed = receipt_from(create_new_key_pair(), other.peer_id, tokens)
            other.earned(signed, countersign(other.identity, signed))
        assert await other.mint_pending() == 3
        synced = []

        async def sync() -> None:
            synced.append(await busy.sync())

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(sync)
        assert synced == [True] * 3
        assert busy.log.length == 3 and busy.log.head == other.log.head


async def test_refused_events_are_typed_and_append_nothing(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed, wallet_host(fed) as wallet:
        with pytest.raises(TokenRefused) as info:
            await wallet.submit(Event("stake", wallet.peer_id, 1))
        assert info.value.protocol_code == ErrorCode.OVERDRAFT
        payer, other = create_new_key_pair(), create_new_key_pair()
        good = receipt_from(payer, wallet.peer_id, 100)
        body = receipt.BODIES.decode(good.body)
        forged = receipt.Receipt(good.body, sign(other, body).payer_signature)
        proofs = {
            ErrorCode.BAD_RECEIPT_SIGNATURE: MintProof(encode(forged), countersign(wallet.identity, forged)),
            ErrorCode.BAD_EVIDENCE: MintProof(  # pays someone else
                encode(r := receipt_from(payer, peer_of(other), 100)), countersign(other, r)
            ),
        }
        for code, proof in proofs.items():
            with pytest.raises(TokenRefused) as info:
                await wallet.submit(Event("mint", wallet.peer_id, 100, ref=claim(body)), encode(proof))
            assert info.value.protocol_code == code
        with pytest.raises(TokenRefused) as info:  # a mint without its proof
            await wallet.submit(Event("mint", wallet.peer_id, 100, ref=claim(body)))
        assert info.value.protocol_code == ErrorCode.BAD_EVIDENCE
        assert all(m.log.length == 0 for m in fed.members)


async def test_every_member_rechecks_what_the_sequencer_proposes(tmp_path: Path) -> None:
    """A sequencer that skipped the checks gets no co-signature: the others check themselves."""
    async with federation(tmp_path) as fed:
        sequencer = fed.members[0]
        someone = create_new_key_pair()
        unbacked = sign_event(someone, Event("mint", peer_of(someone), 10**6, ref=secrets.token_bytes(32)))
        proposal = Propose(Entry(0, sequencer.log.head, time.time(), unbacked), b"")
        with pytest.raises(ProtocolError, match="1 of 2 members co-signed"):
            await sequencer._seal(proposal)  # skipping its own checks
        assert all(m.log.length == 0 for m in fed.members)
        for member in fed.members[1:]:  # and a member takes proposals from the sequencer only
            with pytest.raises(RemoteError) as info:
                await ask(fed.peers[2].host, member.peer_id, fed.addrs[member.peer_id], proposal)
            assert info.value.code in (ErrorCode.NOT_ALLOWED, ErrorCode.BAD_EVIDENCE)


def equivocation(stage, honest: bool = False) -> Equivocation:
    """``stage`` committed one output for the step at 0 and signed a receipt for another."""
    terms = Terms(secrets.token_bytes(16), "m", 0, 2, bytes(16), "float32")
    chain = CommitmentChain(terms)
    out = secrets.token_bytes(16)
    chain.append(0, 5, secrets.token_bytes(16), out)
    next_session = secrets.token_bytes(16)
    sent = out if honest else secrets.token_bytes(16)
    return Equivocation(
        peer=peer_of(stage),
        session_id=terms.session_id,
        model=terms.model,
        layer_start=0,
        layer_end=2,
        model_hash=terms.model_hash,
        dtype=terms.dtype,
        steps=tuple(ChainStep(s.position, s.tokens, s.in_hash, s.out_hash) for s in chain.steps),
        head_signature=sign_head(stage, chain.head),
        position=0,
        next_session_id=next_session,
        digest=sent,
        receipt=sign_receipt(stage, next_session, 0, sent),
    )


async def test_equivocation_evidence_slashes_once_and_honest_evidence_does_not(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed, wallet_host(fed) as accuser, wallet_host(fed) as stage_wallet:
        stage = stage_wallet.identity
        signed = receipt_from(create_new_key_pair(), stage_wallet.peer_id, 8000)
        stage_wallet.earned(signed, countersign(stage, signed))
        await stage_wallet.mint_pending()
        await stage_wallet.submit(Event("stake", stage_wallet.peer_id, 4 * MICRO))
        for evidence, code in (
            (equivocation(stage, honest=True), ErrorCode.BAD_EVIDENCE),
            (equivocation(create_new_key_pair()), ErrorCode.BAD_EVIDENCE),
        ):
            with pytest.raises(TokenRefused) as info:
                await accuser.submit(
                    Event("slash", stage_wallet.peer_id, ref=evidence_ref(evidence)), encode(evidence)
                )
            assert info.value.protocol_code == code
        evidence = equivocation(stage)
        slash = Event("slash", stage_wallet.peer_id, ref=evidence_ref(evidence))
        await accuser.submit(slash, encode(evidence))
        with pytest.raises(TokenRefused) as info:
            await accuser.submit(slash, encode(evidence))
        assert info.value.protocol_code == ErrorCode.DUPLICATE
        await settled(fed, 3)
        for member in fed.members:
            assert member.log.state.staked[stage_wallet.peer_id] == 2 * MICRO
            assert member.log.state.slashed[stage_wallet.peer_id] == 2 * MICRO


async def test_a_member_down_leaves_k_to_seal_and_two_down_refuse_cleanly(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed, wallet_host(fed) as wallet:
        payer = create_new_key_pair()
        await fed.peers[2].host.close()
        first = receipt_from(payer, wallet.peer_id, 1000)
        wallet.earned(first, countersign(wallet.identity, first))
        assert await wallet.mint_pending() == 1
        await fed.peers[1].host.close()
        with pytest.raises(Unavailable):
            await wallet.submit(Event("stake", wallet.peer_id, 1))
        assert fed.members[0].log.length == 1  # the unsealed proposal stays pending, unappended
        assert fed.members[0]._pending() is not None


async def test_hostile_submissions_get_typed_errors_and_the_member_keeps_serving(tmp_path: Path) -> None:
    async with federation(tmp_path, n=1, k=1) as fed, wallet_host(fed) as wallet:
        member = fed.members[0]
        forged = sign_event(wallet.identity, Event("stake", wallet.peer_id, 5))
        forged = type(forged)(forged.event, peer_of(create_new_key_pair()), forged.signature)
        with pytest.raises(RemoteError) as info:
            await ask(wallet.host, member.peer_id, fed.addrs[member.peer_id], Submit(forged))
        assert info.value.code == ErrorCode.BAD_SIGNATURE
        payer = create_new_key_pair()
        signed = receipt_from(payer, wallet.peer_id, 10)
        wallet.earned(signed, countersign(wallet.identity, signed))
        assert await wallet.mint_pending() == 1
