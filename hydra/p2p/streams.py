"""Framed message streams over libp2p, dialing on demand, and a safe request/reply server loop.

``read_exactly`` is ours because py-libp2p 0.8.1's ``libp2p.io.utils.read_exactly`` gives up
after 100 partial reads, which a large activation frame can take. ``serve`` wraps every handler
so an exception resets one stream and is logged: in py-libp2p 0.8.1 a handler's exception
escapes through ``host.run`` and kills the host.
"""

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from hydra.errors import HydraError, PeerError
from hydra.p2p.limits import PeerRateLimiter
from protocols.codec import Error, Message, Schema, encode
from protocols.errors import ErrorCode, ProtocolError
from protocols.framing import DEFAULT_MAX_FRAME, HEADER_SIZE, decode_header, encode_frame

log = logging.getLogger(__name__)


class PeerUnreachable(PeerError):
    """Dialing a peer or opening a stream to it failed or timed out; ``reason`` says how."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"{peer}: {reason}")
        self.peer = peer
        self.reason = reason


class RemoteError(PeerError):
    """The remote peer answered with a typed ``Error`` message."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"remote error {error.code}: {error.message}")
        self.code = self.protocol_code = error.code
        self.message = error.message
        self.peer = error.peer


class FramedStream:
    """Length-prefixed msgpack messages over one libp2p stream."""

    def __init__(self, stream: INetStream, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.stream = stream
        self.max_frame = max_frame

    @property
    def remote_peer(self) -> ID:
        return self.stream.muxed_conn.peer_id

    async def read_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = await self.stream.read(n - len(buf))
            except StreamError:  # EOF or reset: the frame is truncated either way
                chunk = b""
            if not chunk:
                raise ProtocolError(ErrorCode.BAD_FRAME, f"stream ended {len(buf)}/{n} bytes in")
            buf += chunk
        return bytes(buf)

    async def receive_payload(self) -> bytes | None:
        """Next frame's payload, or None on a clean end of stream between frames."""
        try:
            first = await self.stream.read(HEADER_SIZE)
        except StreamError:
            return None
        if not first:
            return None
        header = first + await self.read_exactly(HEADER_SIZE - len(first))
        return await self.read_exactly(decode_header(header, self.max_frame))

    async def receive(self, schema: Schema) -> Message | None:
        payload = await self.receive_payload()
        return None if payload is None else schema.decode(payload)

    async def send(self, message: Message) -> None:
        await self.stream.write(encode_frame(encode(message), self.max_frame))

    async def close(self) -> None:
        try:
            await self.stream.close()
        except Exception:  # noqa: BLE001 - closing a stream the peer already reset is not our problem
            pass

    async def abort(self, grace: float = 1.0) -> None:
        """End a stream that can no longer be parsed, after the peer had a chance to read our
        last message: py-libp2p's Yamux discards unread data when a reset arrives, so we
        half-close, discard what the peer still sends (bounded in time and bytes), then reset."""
        await self.close()
        with trio.move_on_after(grace):
            discarded = 0
            while discarded < self.max_frame:
                try:
                    chunk = await self.stream.read(65536)
                except StreamError:
                    break
                if not chunk:
                    break
                discarded += len(chunk)
        await self.reset()

    async def reset(self) -> None:
        try:
            await self.stream.reset()
        except Exception:  # noqa: BLE001 - the stream is being thrown away either way
            pass


async def open_stream(
    host: IHost, peer: ID, addrs: Sequence[Multiaddr], protocol: str, timeout: float
) -> INetStream:
    """Dial ``peer`` if not connected, then open a stream; ``PeerUnreachable`` on any failure."""
    try:
        with trio.fail_after(timeout):
            if not host.get_network().get_connections(peer):
                await host.connect(PeerInfo(peer, list(addrs)))
            return await host.new_stream(peer, [TProtocol(protocol)])
    except trio.TooSlowError:
        raise PeerUnreachable(str(peer), f"no answer within {timeout:.1f}s") from None
    except Exception as exc:  # noqa: BLE001 - libp2p raises many unrelated types for a failed dial
        raise PeerUnreachable(str(peer), dial_failure(exc)) from None


def dial_failure(exc: BaseException) -> str:
    """A failed dial in words; py-libp2p wraps the cause (a refused connection, a handshake
    with a different peer) in several layers of generic errors."""
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            break
        if "failed to upgrade security" in str(cause):
            return ("a peer answers at that address but the secure handshake failed: it is not "
                    "this peer ID (check the /p2p/ part of the address)")
        if "fail to open connection" in str(cause) or "Failed to open TCP stream" in str(cause):
            return "nothing accepts connections at that address"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}"


async def request(stream: FramedStream, message: Message, replies: Schema) -> Message:
    """Send one request and read its reply; a typed ``Error`` reply raises ``RemoteError``."""
    await stream.send(message)
    reply = await stream.receive(replies)
    if reply is None:
        raise ProtocolError(ErrorCode.BAD_FRAME, "stream closed before the reply")
    if isinstance(reply, Error):
        raise RemoteError(reply)
    return reply


Handler = Callable[[Message, ID], Awaitable[Message]]


class Conversation(Protocol):
    """The state one stream carries (e.g. an inference session): created when the stream
    opens, asked to answer each request (None: no answer), closed when the stream ends,
    however it ends."""

    async def handle(self, message: Message) -> Message | None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Busy(Protocol):
    """A conversation that may be in use while its peer says nothing (it sends, unasked):
    the idle timeout does not close its stream while ``busy()``."""

    def busy(self) -> bool: ...


class Outbox(Protocol):
    """Where a conversation sends messages nobody asked for at that moment (a direct route's
    outputs, on the stream its coordinator collects them from)."""

    async def send(self, message: Message) -> None: ...


class StreamOutbox:
    """A served stream's sending side: replies and pushed messages, one frame at a time."""

    def __init__(self, stream: FramedStream) -> None:
        self.stream = stream
        self._lock = trio.Lock()

    async def send(self, message: Message) -> None:
        async with self._lock:
            await self.stream.send(message)


class Stateless:
    """A conversation with no state: every request is answered by ``handle(message, peer)``."""

    def __init__(self, handle: Handler, remote: ID) -> None:
        self._handle, self._remote = handle, remote

    async def handle(self, message: Message) -> Message:
        return await self._handle(message, self._remote)

    async def aclose(self) -> None:
        pass


# Errors after which the byte stream is out of sync (a frame was cut short or left unread),
# so nothing more can be parsed from it: the stream is aborted after the error reply.
_UNRECOVERABLE = {ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE}


def serve(
    requests: Schema,
    handle: Handler | None = None,
    *,
    conversation: Callable[[ID, Outbox], Conversation] | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    idle_timeout: float | None = None,
    limiter: PeerRateLimiter | None = None,
) -> Callable[[INetStream], Awaitable[None]]:
    """A libp2p stream handler answering requests one by one until the peer closes.

    Give ``handle`` for stateless request/reply, or ``conversation`` to keep state per
    stream. A refused message (any ``HydraError``) gets an ``Error`` reply with its code and
    the loop continues; a frame-level error (oversized or truncated frame) gets an ``Error``
    reply, then the stream is aborted, since it can no longer be parsed. A stream silent for
    ``idle_timeout`` seconds is closed, unless its conversation is ``Busy``. A peer over
    ``limiter``'s rate gets ``overloaded`` errors until it slows down. No exception ever leaves
    the handler."""
    if conversation is None:
        if handle is None:
            raise TypeError("give exactly one of handle and conversation")
        stateless = handle
        conversation = lambda remote, _: Stateless(stateless, remote)  # noqa: E731
    elif handle is not None:
        raise TypeError("give exactly one of handle and conversation")
    return _StreamServer(requests, conversation, max_frame, idle_timeout, limiter).handler


@dataclass(frozen=True)
class _StreamServer:
    requests: Schema
    conversation: Callable[[ID, Outbox], Conversation]
    max_frame: int
    idle_timeout: float | None
    limiter: PeerRateLimiter | None

    async def handler(self, raw: INetStream) -> None:
        stream = FramedStream(raw, self.max_frame)
        outbox = StreamOutbox(stream)
        talk = self.conversation(stream.remote_peer, outbox)
        peer = str(stream.remote_peer)  # base58 once, not per message
        try:
            while await self._answer(stream, outbox, talk, peer):
                pass
        except StreamError:  # the peer left before our answer (e.g. it closed after its last request)
            log.debug("a stream from %s ended before its answer was sent", peer)
            await stream.reset()
        except Exception:  # whatever broke, only this stream may suffer
            log.exception("stream handler failed; resetting the stream")
            await stream.reset()
        finally:
            with trio.CancelScope(shield=True):
                await talk.aclose()

    async def _answer(
        self, stream: FramedStream, outbox: StreamOutbox, talk: Conversation, peer: str
    ) -> bool:
        """Read one request and answer it; False once the stream has ended (closed by the
        peer, idle too long, or no longer parseable)."""
        try:
            with trio.fail_after(self.idle_timeout or math.inf):
                payload = await stream.receive_payload()
            if payload is None:
                await stream.close()
                return False
            if self.limiter is not None and not self.limiter.allow(peer):
                raise ProtocolError(ErrorCode.OVERLOADED, "request rate limit exceeded")
            reply = await talk.handle(self.requests.decode(payload))
        except trio.TooSlowError:
            if isinstance(talk, Busy) and talk.busy():
                return True
            log.info("closing a stream from %s idle for %ss", peer, self.idle_timeout)
            await stream.close()
            return False
        except HydraError as exc:  # refused: the peer gets the typed error
            log.info("rejected message from %s: %s", peer, exc)
            await outbox.send(Error(code=exc.protocol_code, message=exc.message))
            if exc.protocol_code in _UNRECOVERABLE:
                await stream.abort()
                return False
            return True
        except Exception:  # a bug in a handler: answer, log, keep serving others
            log.exception("handler failed on a message from %s", peer)
            await outbox.send(Error(code=ErrorCode.INTERNAL, message="internal error"))
            return True
        if reply is not None:
            await outbox.send(reply)
        return True
