"""A stage's side of verification: it commits to every step, keeps the session's inputs (the
audit window is the session's life, counted against its cache reservation) and answers
challenges on ``protocols.ids.VERIFY``, relaying those meant for a later stage of the route.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from libp2p.crypto.keys import KeyPair

from hydra.privacy.sealing import SealError
from hydra.stage.links import VERIFY_LINK, HopFailed, RemoteLink, attributed, hop_failed_error
from hydra.verification.commitments import (
    ANSWER,
    CHALLENGE,
    AuditSeal,
    CommitmentChain,
    CommitmentCipher,
    Terms,
    sign_head,
)
from protocols import inference, verify
from protocols.codec import Error, Message, encode
from protocols.errors import ErrorCode, ProtocolError
from protocols.verify import Audit, AuditedStep, Commitment, Forward, Reveal, tensor_digest

if TYPE_CHECKING:
    from hydra.stage.server import Session, StageServer

RELAY_TIMEOUT_S = 30.0


@dataclass
class SessionAudit:
    """What one session's stage committed to and must be able to reveal."""

    chain: CommitmentChain
    cipher: CommitmentCipher
    seal: AuditSeal
    steps: list[AuditedStep] = field(default_factory=list)
    outputs: dict[int, inference.Tensor] = field(default_factory=dict)  # position -> output as sent
    # whether inputs and outputs are kept for audits: a compacting session's are not (a
    # verifier could not recompute its steps from them alone; it commits all the same)
    kept: bool = True

    @classmethod
    def start(cls, terms: Terms, report_key: bytes, kept: bool = True) -> "SessionAudit":
        return cls(
            CommitmentChain(terms), CommitmentCipher(report_key), AuditSeal(report_key, terms.session_id),
            kept=kept,
        )

    def commit(
        self,
        identity: KeyPair,
        step: inference.Step,
        received: inference.Tensor,
        in_hash: bytes,
        output: inference.Tensor,
    ) -> tuple[bytes, bytes]:
        """Record the step; its commitment (encrypted for the coordinator) and its output's
        digest. ``in_hash`` is the digest of ``received`` for an honest stage."""
        tokens = received.shape[1]
        record = self.chain.append(step.position, tokens, in_hash, tensor_digest(output))
        if self.kept:
            self.steps.append(AuditedStep(step.position, step.chunks, received, step.receipt))
            self.outputs[step.position] = output
        signature = sign_head(identity, record.head) if self.chain.signs(tokens) else b""
        sealed = self.cipher.seal(Commitment(record.in_hash, record.out_hash, signature), step.position)
        return sealed, record.out_hash

    def reveal(self, audit: Audit, identity: KeyPair) -> Reveal:
        """One page of the inputs from ``audit.start``; the last page adds the audited steps'
        outputs and a signature over the chain up to the last of them."""
        if not self.kept:
            raise ProtocolError(ErrorCode.BAD_FIELD, "a compacted session's steps are not kept for audits")
        missing = [p for p in audit.positions if p not in self.outputs]
        if missing:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"no step of this session began at {missing[0]}")
        last = audit.positions[-1]
        page: list[AuditedStep] = []
        size = 0
        for step in self.steps:
            if not audit.start <= step.position <= last:
                continue
            if page and size + len(step.input.data) > verify.REVEAL_ROOM:
                return Reveal(tuple(page))
            page.append(step)
            size += len(step.input.data)
        target = self.chain.at(last)
        assert target is not None  # every output kept has its step in the chain
        outputs = tuple(self.outputs[p] for p in audit.positions)
        return Reveal(tuple(page), outputs, sign_head(identity, target.head))


class VerifyConversation:
    """One ``VERIFY`` stream from ``remote``: challenges for sessions ``remote`` opened here."""

    def __init__(self, server: "StageServer", remote: str) -> None:
        self.server = server
        self.remote = remote

    async def aclose(self) -> None:
        """Nothing to free: a challenge holds no state beyond its one reply."""

    async def handle(self, message: Message) -> Message:
        if not isinstance(message, verify.Challenge):
            raise ProtocolError(ErrorCode.UNEXPECTED, f"{message.TYPE} is not a request")
        session = self.server.find_session(self.remote, message.session_id)
        if session is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SESSION, "no open session of yours has that id")
        audit = session.audit
        try:
            layer = verify.LAYERS.decode(audit.seal.open(message.layer, CHALLENGE))
        except SealError:
            raise ProtocolError(ErrorCode.SEAL_FAILED, "the challenge is not sealed for this stage") from None
        if isinstance(layer, Audit):
            page = audit.reveal(layer, self.server.identity)
            return verify.Revealed(audit.seal.seal(encode(page), ANSWER))
        assert isinstance(layer, Forward)
        return await self._relay(session, layer)

    async def _relay(self, session: "Session", layer: Forward) -> Message:
        """Pass the challenge's inner layer to the next hop; wrap its answer in our layer."""
        hop = session.next_hop
        host = self.server.host
        if hop is None or host is None:
            raise ProtocolError(ErrorCode.NOT_FOR_ROUTE, "no stage of this route can open the challenge")
        try:
            link = await RemoteLink.open(host, hop, RELAY_TIMEOUT_S, VERIFY_LINK)
            try:
                reply = await link.call(
                    verify.Challenge(session.next_session_id, layer.layer), RELAY_TIMEOUT_S
                )
            finally:
                await link.aclose()
        except HopFailed as exc:
            return hop_failed_error(exc)
        if isinstance(reply, Error):
            return attributed(reply, hop.peer_id)
        assert isinstance(reply, verify.Revealed)
        return verify.Revealed(session.audit.seal.seal(reply.layer, ANSWER))
