"""The coordinator's record of one route's commitments, checked as every step's reply arrives.

Per stage it keeps a replica of the stage's commitment chain; each step it decrypts the
stages' commitments, checks the chain across the route (what the coordinator sent is what the
first stage committed to as input; stage i's output is stage i+1's input; the last stage's
output is what came back) and every signature against its replica. A check that fails raises
``ChainBroken`` naming the link, at once and at no compute cost.
"""

from dataclasses import dataclass

from hydra.errors import PeerError
from hydra.verification.commitments import CommitmentChain, CommitmentCipher, StepRecord, Terms, head_signed
from protocols.errors import ProtocolError
from protocols.verify import Commitment


class ChainBroken(PeerError):
    """Commitments that do not fit together. ``stages`` are the route indices it implicates:
    one when the coordinator can tell alone (its own link, a bad signature), two for a break
    between stages, which a reveal of the later stage's receipt settles."""

    def __init__(self, stages: tuple[int, ...], reason: str, position: int) -> None:
        super().__init__(reason)
        self.stages = stages
        self.reason = reason
        self.position = position


@dataclass
class StageLedger:
    peer_id: str
    chain: CommitmentChain
    cipher: CommitmentCipher
    commitments: list[Commitment]  # as received, one per step (kept as evidence)
    signed_through: int = -1  # index of the last step a valid signature covers


class RouteLedger:
    def __init__(self, peer_ids: list[str], terms: list[Terms], report_keys: list[bytes]) -> None:
        self.stages = [
            StageLedger(peer, CommitmentChain(t), CommitmentCipher(key), [])
            for peer, t, key in zip(peer_ids, terms, report_keys, strict=True)
        ]

    def accept(
        self, sealed: tuple[bytes, ...], position: int, tokens: int, sent_hash: bytes, received_hash: bytes
    ) -> None:
        """Check one step's commitments; ``ChainBroken`` if they do not fit together."""
        if len(sealed) != len(self.stages):  # the last stage hands the coordinator the route's list
            last = len(self.stages) - 1
            raise ChainBroken((last,), f"{len(sealed)} commitments for {len(self.stages)} stages", position)
        commitments = [self._open(i, c, position) for i, c in enumerate(sealed)]
        expected_in = sent_hash
        for i, (stage, commitment) in enumerate(zip(self.stages, commitments, strict=True)):
            stage.commitments.append(commitment)
            record = stage.chain.append(position, tokens, commitment.in_hash, commitment.out_hash)
            if commitment.signature:
                if not head_signed(stage.peer_id, record.head, commitment.signature):
                    raise ChainBroken((i,), "a commitment signature does not verify", position)
                stage.signed_through = len(stage.chain.steps) - 1
            terms = stage.chain.terms
            if terms.layer_start == terms.layer_end and commitment.in_hash != commitment.out_hash:
                raise ChainBroken((i,), "a relay altered what it passed on", position)
            if commitment.in_hash != expected_in:
                culprits = (i,) if i == 0 else (i - 1, i)
                raise ChainBroken(culprits, "committed to an input its predecessor did not send", position)
            expected_in = commitment.out_hash
        if expected_in != received_hash:
            last = len(self.stages) - 1
            raise ChainBroken((last,), "committed to an output other than the one it returned", position)

    def _open(self, index: int, sealed: bytes, position: int) -> Commitment:
        try:
            return self.stages[index].cipher.open(sealed, position)
        except ProtocolError as exc:
            raise ChainBroken((index,), f"an unreadable commitment: {exc.message}", position) from None

    def record(self, index: int, position: int) -> StepRecord | None:
        return self.stages[index].chain.at(position)
