"""Paying along the route (``protocols.receipt``): a stage countersigns its predecessor's
receipts for the work it did, and pays its successor for the rest of the route when its
session ends. Both sides post to their own ledger."""

import logging
from typing import TYPE_CHECKING

import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair

from hydra.economy.ledger import MICRO_PER_TOKEN, Ledger
from hydra.economy.receipts import countersign, countersigned, opened, post_earned, post_paid, sign, work_root
from hydra.economy.service import TokenService
from hydra.stage.links import RECEIPT_LINK, HopFailed, RemoteLink
from protocols import inference, receipt
from protocols.codec import Message
from protocols.errors import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from hydra.stage.server import StageServer

log = logging.getLogger(__name__)

PAY_TIMEOUT_S = 5.0


class ReceiptConversation:
    """One ``RECEIPT`` stream from ``remote``: receipts for sessions ``remote`` opened here."""

    def __init__(self, server: "StageServer", remote: str) -> None:
        self.server = server
        self.remote = remote

    async def aclose(self) -> None:
        """Nothing to free: each receipt is answered on its own."""

    async def handle(self, message: Message) -> Message:
        if not isinstance(message, receipt.Receipt):
            raise ProtocolError(ErrorCode.UNEXPECTED, f"{message.TYPE} is not a request")
        body = opened(message)
        server = self.server
        if body is None or body.payer != self.remote:
            raise ProtocolError(ErrorCode.BAD_RECEIPT_SIGNATURE, "the receipt is not signed by its sender")
        if body.payee != server.peer_id:
            raise ProtocolError(ErrorCode.WRONG_AMOUNT, "the receipt pays another peer")
        session = server.find_session(self.remote, body.session_id)
        if session is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SESSION, "no open session of yours has that id")
        if body.seq <= session.receipt_seq:
            raise ProtocolError(ErrorCode.STALE, f"receipt {body.seq} after receipt {session.receipt_seq}")
        # a receipt pays for a prefix of the session's steps: all of them, or (after a failure
        # further down the route) those that came back through it
        steps = session.audit.chain.steps
        boundaries = {s.position + s.tokens for s in steps} | {0}
        served = work_root(s.in_hash for s in steps if s.position < body.tokens)
        terms = session.audit.chain.terms
        expected = (body.tokens * session.hops, served, terms.model, terms.layer_start, terms.layer_end)
        if body.tokens not in boundaries or (
            body.units, body.work_root, body.model, body.layer_start, body.layer_end
        ) != expected:
            raise ProtocolError(
                ErrorCode.WRONG_AMOUNT,
                f"this session served {session.position} tokens through {session.hops} stage(s); "
                f"the receipt says {body.tokens} tokens, {body.units} stage-tokens",
            )
        post_earned(server.ledger, body)
        session.receipt_seq, session.receipted = body.seq, body.tokens
        signature = countersign(server.identity, message)
        if server.tokens is not None:
            server.tokens.earned(message, signature)
        return receipt.Countersigned(signature)


async def pay(
    host: IHost,
    identity: KeyPair,
    ledger: Ledger,
    hop: inference.Hop,
    body: receipt.ReceiptBody,
    tokens: TokenService | None = None,
) -> bool:
    """Send ``body`` signed to ``hop``; post it once countersigned, and pay the increase in
    HYDRA too when this node has a channel to ``hop``. False (logged) if the payee did not
    countersign: the work stays unpaid, nothing is posted."""
    signed = sign(identity, body)
    try:
        with trio.CancelScope(shield=True), trio.fail_after(PAY_TIMEOUT_S):
            link = await RemoteLink.open(host, hop, PAY_TIMEOUT_S, RECEIPT_LINK)
            try:
                reply = await link.call(signed, PAY_TIMEOUT_S)
            finally:
                await link.aclose()
    except (HopFailed, trio.TooSlowError) as exc:
        log.info("paying %s failed: %s", hop.peer_id, exc)
        return False
    if not isinstance(reply, receipt.Countersigned) or not countersigned(
        hop.peer_id, signed, reply.payee_signature
    ):
        log.info("%s did not countersign its receipt: %s", hop.peer_id, reply)
        return False
    posted = post_paid(ledger, body)
    if tokens is not None and posted.new:
        await tokens.pay_by_channel(hop, posted.amount // MICRO_PER_TOKEN)
    return True
