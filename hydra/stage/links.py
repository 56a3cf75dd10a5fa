"""A hop of a pipeline as seen from the side that drives it: a stream to a remote stage, or
an in-process stage when the coordinator serves that span itself. Messages go both ways one
at a time (``call`` sends one and waits for the next to come back); a hop that cannot answer
raises ``HopFailed`` naming the peer."""

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from hydra.errors import PeerError
from hydra.p2p.streams import Conversation, FramedStream, Outbox, PeerUnreachable, open_stream
from protocols import inference, receipt, verify
from protocols.codec import Error, Message, Schema
from protocols.errors import ErrorCode, ProtocolError
from protocols.ids import INFERENCE, RECEIPT, VERIFY

log = logging.getLogger(__name__)


class HopFailed(PeerError):
    """The stage ``peer_id`` died, stalled, or broke the protocol."""

    def __init__(self, peer_id: str, reason: str) -> None:
        super().__init__(f"{peer_id}: {reason}")
        self.peer_id = peer_id
        self.reason = reason


@dataclass(frozen=True)
class LinkProtocol:
    """Which protocol a link speaks: its ID, the replies it accepts and its frame limit."""

    id: str
    replies: Schema
    max_frame: int


INFERENCE_LINK = LinkProtocol(INFERENCE, inference.REPLIES, inference.MAX_FRAME)
VERIFY_LINK = LinkProtocol(VERIFY, verify.REPLIES, verify.MAX_LAYER + 4096)
RECEIPT_LINK = LinkProtocol(RECEIPT, receipt.REPLIES, 1 << 16)


class Link(Protocol):
    peer_id: str

    async def call(self, message: Message, timeout: float) -> Message:
        """Send ``message``; the next message from the hop."""
        ...

    async def send(self, message: Message, timeout: float) -> None: ...

    async def receive(self, timeout: float) -> Message: ...

    async def aclose(self) -> None: ...


class RemoteLink:
    def __init__(self, peer_id: str, stream: FramedStream, replies: Schema = inference.REPLIES) -> None:
        self.peer_id = peer_id
        self.stream = stream
        self.replies = replies

    @classmethod
    async def open(
        cls, host: IHost, hop: inference.Hop, timeout: float, protocol: LinkProtocol = INFERENCE_LINK
    ) -> "RemoteLink":
        try:
            peer, addrs = ID.from_base58(hop.peer_id), [Multiaddr(a) for a in hop.addrs]
            raw = await open_stream(host, peer, addrs, protocol.id, timeout)
        except (PeerUnreachable, ValueError) as exc:
            raise HopFailed(hop.peer_id, f"unreachable: {exc}") from None
        return cls(hop.peer_id, FramedStream(raw, protocol.max_frame), protocol.replies)

    async def call(self, message: Message, timeout: float) -> Message:
        with blamed(self.peer_id, timeout):
            await self.stream.send(message)
            return await self._receive()

    async def send(self, message: Message, timeout: float) -> None:
        with blamed(self.peer_id, timeout):
            await self.stream.send(message)

    async def receive(self, timeout: float) -> Message:
        with blamed(self.peer_id, timeout):
            return await self._receive()

    async def _receive(self) -> Message:
        reply = await self.stream.receive(self.replies)
        if reply is None:
            raise HopFailed(self.peer_id, "closed the stream")
        return reply

    async def aclose(self) -> None:
        await self.stream.close()


class LocalLink:
    """A stage in this process, driven without a stream (same messages, same checks):
    ``converse`` makes the conversation a stream would carry, given where it sends."""

    def __init__(self, peer_id: str, converse: Callable[[Outbox], Conversation]) -> None:
        self.peer_id = peer_id
        # what the conversation sends unasked waits here for ``receive``
        self._outbox, self._inbox = trio.open_memory_channel[Message](math.inf)
        self.conversation = converse(self._outbox)

    async def call(self, message: Message, timeout: float) -> Message:
        with blamed(self.peer_id, timeout, local=True):
            reply = await self._handle(message)
            return await self._inbox.receive() if reply is None else reply

    async def send(self, message: Message, timeout: float) -> None:
        with blamed(self.peer_id, timeout, local=True):
            reply = await self._handle(message)
            if reply is not None:  # a reply nobody waits for yet: the next ``receive`` gets it
                self._outbox.send_nowait(reply)

    async def receive(self, timeout: float) -> Message:
        with blamed(self.peer_id, timeout, local=True):
            return await self._inbox.receive()

    async def _handle(self, message: Message) -> Message | None:
        try:
            return await self.conversation.handle(message)
        except ProtocolError as exc:
            return Error(code=exc.code, message=exc.message)

    async def aclose(self) -> None:
        await self.conversation.aclose()


@contextmanager
def blamed(peer_id: str, timeout: float, local: bool = False) -> Iterator[None]:
    """Within ``timeout``, or ``HopFailed``: whatever goes wrong, the hop ``peer_id`` is at
    fault (a remote one's stream broke or its peer is gone; a ``local`` one hit a bug or ran
    out of memory, which is logged, and is routed around like any other)."""
    try:
        with trio.fail_after(timeout):
            yield
    except trio.TooSlowError:
        raise HopFailed(peer_id, f"no answer within {timeout:.1f}s") from None
    except HopFailed:
        raise
    except ProtocolError as exc:
        raise HopFailed(peer_id, f"broken stream: {exc}") from None
    except Exception as exc:  # libp2p stream errors of many kinds, or a local failure
        if local:
            log.exception("the local stage failed")
        raise HopFailed(peer_id, f"{type(exc).__name__}: {exc}") from None


def attributed(error: Error, peer_id: str) -> Error:
    """``error`` with the peer at fault filled in (the hop that answered it, unless set)."""
    if error.peer:
        return error
    return Error(code=error.code, message=error.message, peer=peer_id)


def hop_failed_error(exc: HopFailed) -> Error:
    return Error(code=ErrorCode.NEXT_HOP_FAILED, message=exc.reason, peer=exc.peer_id)


def downstream_budget(timeout: float) -> float:
    """Time the next hop gets, so the deepest stage that notices a stall reports it before
    anyone upstream gives up on the whole chain."""
    return max(0.5, timeout - max(0.5, 0.1 * timeout))
