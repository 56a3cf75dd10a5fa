"""Commitment chains, receipts and the coordinator's ledger: what a stage signs, and which
broken chain convicts whom."""

import pytest
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from hydra.verification.commitments import (
    CommitmentChain,
    CommitmentCipher,
    Terms,
    head_signed,
    receipt_valid,
    sign_head,
    sign_receipt,
)
from hydra.verification.ledger import ChainBroken, RouteLedger
from protocols.verify import Commitment

KEY = bytes(range(32))


def identity() -> tuple[KeyPair, str]:
    private = Ed25519PrivateKey.new()
    pair = KeyPair(private, private.get_public_key())
    return pair, ID.from_pubkey(pair.public_key).to_base58()


def terms(session: bytes = b"s" * 16) -> Terms:
    return Terms(session, "m", 0, 3, b"h" * 16, "float32")


def digest(n: int) -> bytes:
    return bytes([n]) * 16


class Stage:
    """A stage's side of the chain, as ``hydra.stage.audit`` keeps it."""

    def __init__(self, session: bytes, key: bytes) -> None:
        self.pair, self.peer = identity()
        self.chain = CommitmentChain(terms(session))
        self.cipher = CommitmentCipher(key)

    def commit(self, position: int, tokens: int, in_hash: bytes, out_hash: bytes) -> bytes:
        record = self.chain.append(position, tokens, in_hash, out_hash)
        signature = sign_head(self.pair, record.head) if self.chain.signs(tokens) else b""
        return self.cipher.seal(Commitment(in_hash, out_hash, signature), position)


def route(n: int) -> tuple[list[Stage], RouteLedger]:
    stages = [Stage(bytes([i]) * 16, bytes([i]) * 32) for i in range(n)]
    ledger = RouteLedger(
        [s.peer for s in stages], [s.chain.terms for s in stages], [bytes([i]) * 32 for i in range(n)]
    )
    return stages, ledger


def step(stages: list[Stage], position: int, tokens: int, hashes: list[bytes]) -> tuple[bytes, ...]:
    """Each stage i commits to input hashes[i] and output hashes[i + 1]."""
    return tuple(s.commit(position, tokens, hashes[i], hashes[i + 1]) for i, s in enumerate(stages))


def test_an_honest_route_passes_and_signatures_cover_the_same_chain_on_both_sides() -> None:
    stages, ledger = route(3)
    ledger.accept(
        step(stages, 0, 5, [digest(0), digest(1), digest(2), digest(3)]), 0, 5, digest(0), digest(3)
    )
    for position in range(5, 25):
        hashes = [digest(position + k) for k in range(4)]
        ledger.accept(step(stages, position, 1, hashes), position, 1, hashes[0], hashes[-1])
    for stage, kept in zip(stages, ledger.stages, strict=True):
        assert kept.chain.head == stage.chain.head
        assert head_signed(stage.peer, kept.chain.head, sign_head(stage.pair, stage.chain.head))
        assert kept.signed_through >= len(kept.chain.steps) - 8  # one signature per 8 decode steps


@pytest.mark.parametrize(("liar", "convicted"), [(0, (0,)), (1, (0, 1)), (2, (1, 2))])
def test_a_false_input_breaks_the_chain_at_its_link(liar: int, convicted: tuple[int, ...]) -> None:
    stages, ledger = route(3)
    hashes = [digest(0), digest(1), digest(2), digest(3)]
    claimed = list(hashes[:-1])
    claimed[liar] = digest(99)
    sealed = tuple(s.commit(0, 1, claimed[i], hashes[i + 1]) for i, s in enumerate(stages))
    with pytest.raises(ChainBroken) as caught:
        ledger.accept(sealed, 0, 1, hashes[0], hashes[-1])
    assert caught.value.stages == convicted


def test_a_last_stage_committing_to_another_output_is_convicted_alone() -> None:
    stages, ledger = route(2)
    sealed = step(stages, 0, 1, [digest(0), digest(1), digest(2)])
    with pytest.raises(ChainBroken) as caught:
        ledger.accept(sealed, 0, 1, digest(0), digest(7))
    assert caught.value.stages == (1,)


def test_a_tampered_or_forged_commitment_is_caught() -> None:
    stages, ledger = route(2)
    sealed = list(step(stages, 0, 1, [digest(0), digest(1), digest(2)]))
    sealed[1] = bytes(b ^ 1 for b in sealed[1])  # a relay flips bits on the way back
    with pytest.raises(ChainBroken) as caught:
        ledger.accept(tuple(sealed), 0, 1, digest(0), digest(2))
    assert caught.value.stages == (1,)


def test_receipts_bind_sender_session_position_and_digest() -> None:
    pair, peer = identity()
    receipt = sign_receipt(pair, b"s" * 16, 4, digest(1))
    assert receipt_valid(peer, b"s" * 16, 4, digest(1), receipt)
    assert not receipt_valid(peer, b"t" * 16, 4, digest(1), receipt)
    assert not receipt_valid(peer, b"s" * 16, 5, digest(1), receipt)
    assert not receipt_valid(peer, b"s" * 16, 4, digest(2), receipt)
    assert not receipt_valid(identity()[1], b"s" * 16, 4, digest(1), receipt)


def test_commitments_cost_under_64_bytes_per_decoded_token() -> None:
    stage = Stage(b"s" * 16, KEY)
    sizes = [len(stage.commit(p, 1, digest(p), digest(p + 1))) for p in range(64)]
    assert sum(sizes) / len(sizes) <= 64, sizes
