"""Each side's book of the payment channels it is in, and the ``CHANNEL`` protocol between them.

The payer signs each new state and persists it before sending; the payee checks it against the
channel as the token log has it (its payer, deposit and age), persists it with its own
signature, then countersigns. Both keep the latest state both signed: that is what either
side closes with, and what the node's watcher submits when the other side closes with an
older one. Near the end of its TTL the payer closes cooperatively (a final state both sign);
a payee whose payer vanished closes unilaterally with the latest state it holds; whoever
notices the window has passed settles.
"""

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from hydra.economy.channels import TTL_S, sign_state, state_signed
from hydra.economy.tokenlog import Channel
from hydra.errors import HydraError
from hydra.p2p.limits import PeerRateLimiter
from hydra.p2p.streams import FramedStream, open_stream, request, serve
from protocols import channel
from protocols.channel import ChannelState, Countersigned, Update
from protocols.codec import Message
from protocols.errors import ErrorCode, ProtocolError
from protocols.ids import CHANNEL
from protocols.token import Event

if TYPE_CHECKING:
    from hydra.economy.wallet import Wallet

log = logging.getLogger(__name__)

CLOSE_MARGIN_S = 60.0  # a payer closes this long before the TTL ends
UPDATE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Held:
    """The latest state of a channel that both sides signed (as this side holds it)."""

    state: ChannelState
    payer_signature: bytes
    payee_signature: bytes

    def close_event(self, author: str) -> Event:
        return Event(
            "channel_close",
            author,
            ref=self.state.channel_id,
            state=self.state.to_bytes(),
            signatures=(self.payer_signature, self.payee_signature),
        )


class ChannelBook:
    """``wallet`` gives the identity, the log replica and the federation; states persist in the
    replica's database (table ``channel_states``)."""

    def __init__(self, wallet: "Wallet", clock: Callable[[], float] = time.time) -> None:
        self.wallet = wallet
        self.clock = clock
        self.db = wallet.log.db
        self._locks: dict[bytes, trio.Lock] = {}
        if not self.db["channel_states"].exists():
            self.db["channel_states"].create(
                {
                    "id": bytes,
                    "signed_nonce": int,  # the highest nonce this side ever signed (payers never reuse one)
                    "nonce": int,
                    "paid": int,
                    "final": int,
                    "payer_signature": bytes,
                    "payee_signature": bytes,
                },
                pk="id",
            )

    # --- what the log and the book say ------------------------------------------------------

    def channel(self, channel_id: bytes) -> Channel | None:
        return self.wallet.log.state.channels.get(channel_id)

    def held(self, channel_id: bytes) -> Held | None:
        row = self.db.execute(
            "SELECT nonce, paid, final, payer_signature, payee_signature FROM channel_states WHERE id = ?",
            [channel_id],
        ).fetchone()
        if row is None or not row[4]:
            return None
        nonce, paid, final, payer_signature, payee_signature = row
        return Held(ChannelState(channel_id, nonce, paid, bool(final)), payer_signature, payee_signature)

    def _signed_nonce(self, channel_id: bytes) -> int:
        row = self.db.execute("SELECT signed_nonce FROM channel_states WHERE id = ?", [channel_id]).fetchone()
        return row[0] if row is not None else -1

    def _keep(self, state: ChannelState, payer_signature: bytes, payee_signature: bytes = b"") -> None:
        """Persist a state (and, once both signed, as the one held) before any signature leaves."""
        with self.db.conn:
            self.db.execute(
                "INSERT INTO channel_states (id, signed_nonce, nonce, paid, final, payer_signature, "
                "payee_signature) VALUES (?, ?, -1, 0, 0, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "signed_nonce = MAX(signed_nonce, excluded.signed_nonce)",
                [state.channel_id, state.nonce, b"", b""],
            )
            if payee_signature:
                self.db.execute(
                    "UPDATE channel_states SET nonce = ?, paid = ?, final = ?, payer_signature = ?, "
                    "payee_signature = ? WHERE id = ? AND nonce < ?",
                    [
                        state.nonce,
                        state.paid,
                        int(state.final),
                        payer_signature,
                        payee_signature,
                        state.channel_id,
                        state.nonce,
                    ],
                )

    def paying(self, payee: str) -> bytes | None:
        """An open channel from this node to ``payee`` with time left, if any."""
        me, now = self.wallet.peer_id, self.clock()
        for ref, c in self.wallet.log.state.channels.items():
            usable = c.closing_until is None and now < c.opened_at + TTL_S - CLOSE_MARGIN_S
            if (c.opener, c.peer) == (me, payee) and usable:
                return ref
        return None

    # --- the payer's side -------------------------------------------------------------------

    async def open(self, payee: str, deposit: int) -> bytes:
        channel_id = secrets.token_bytes(ChannelState.ID_BYTES)
        await self.wallet.submit(
            Event("channel_open", self.wallet.peer_id, deposit, counterparty=payee, ref=channel_id)
        )
        return channel_id

    async def pay(self, channel_id: bytes, amount: int, addrs: tuple[str, ...], final: bool = False) -> Held:
        """Move ``amount`` more micro-HYDRA to the payee (0 with ``final`` to end the channel);
        the new state once the payee countersigned it."""
        lock = self._locks.setdefault(channel_id, trio.Lock())
        async with lock:
            c = self.channel(channel_id)
            if c is None or c.opener != self.wallet.peer_id:
                raise ProtocolError(ErrorCode.NOT_ALLOWED, "no open channel of this node's has that id")
            held = self.held(channel_id)
            paid = (held.state.paid if held else 0) + amount
            if amount < 0 or paid > c.deposit:
                raise ProtocolError(
                    ErrorCode.OVERDRAFT, f"{paid} micro-HYDRA is over the {c.deposit} deposit"
                )
            state = ChannelState(channel_id, self._signed_nonce(channel_id) + 1, paid, final)
            signature = sign_state(self.wallet.identity, state)
            self._keep(state, signature)
            reply = await self._send(c.peer, addrs, Update(state.to_bytes(), signature))
            if not state_signed(c.peer, state, reply.signature):
                raise ProtocolError(ErrorCode.BAD_SIGNATURE, "the payee's countersignature is not its own")
            self._keep(state, signature, reply.signature)
            return Held(state, signature, reply.signature)

    async def _send(self, peer: str, addrs: tuple[str, ...], update: Update) -> Countersigned:
        host = self.wallet.host
        with trio.fail_after(UPDATE_TIMEOUT_S):
            raw = await open_stream(
                host, ID.from_base58(peer), [Multiaddr(a) for a in addrs], CHANNEL, UPDATE_TIMEOUT_S
            )
            stream = FramedStream(raw, 4096)
            try:
                reply = await request(stream, update, channel.REPLIES)
            finally:
                await stream.close()
        if not isinstance(reply, Countersigned):
            raise ProtocolError(ErrorCode.UNEXPECTED, f"expected a countersignature, got {reply.TYPE}")
        return reply

    # --- the payee's side -------------------------------------------------------------------

    def attach(self, host: IHost, limiter: PeerRateLimiter | None = None) -> None:
        """Take channel updates on ``host`` (by default at most 20 a second per peer, bursts of 100:
        honest payers send one per receipt)."""
        limiter = limiter or PeerRateLimiter(20.0, 100.0)
        host.set_stream_handler(
            TProtocol(CHANNEL), serve(channel.REQUESTS, self.handle, max_frame=4096, limiter=limiter)
        )

    async def handle(self, message: Message, remote: ID) -> Message:
        if not isinstance(message, Update):
            raise ProtocolError(ErrorCode.UNEXPECTED, f"{message.TYPE} is not a request")
        state = ChannelState.from_bytes(message.state)
        c = self.channel(state.channel_id)
        if c is None:
            await self.wallet.sync()  # opened a moment ago, perhaps
            c = self.channel(state.channel_id)
        if c is None or c.peer != self.wallet.peer_id or c.opener != remote.to_base58():
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "no open channel from you to this node has that id")
        if not state_signed(c.opener, state, message.signature):
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "the state is not signed by the channel's payer")
        held = self.held(state.channel_id)
        if held is not None and (state.nonce <= held.state.nonce or held.state.final):
            raise ProtocolError(ErrorCode.STALE, f"state {state.nonce} after state {held.state.nonce}")
        if state.paid < (held.state.paid if held else 0) or state.paid > c.deposit:
            raise ProtocolError(ErrorCode.WRONG_AMOUNT, f"a channel state paying {state.paid} of {c.deposit}")
        if c.closing_until is not None or self.clock() >= c.opened_at + TTL_S:
            raise ProtocolError(ErrorCode.STALE, "the channel is closing or past its TTL")
        signature = sign_state(self.wallet.identity, state)
        self._keep(state, message.signature, signature)
        return Countersigned(signature)

    # --- closing and watching ---------------------------------------------------------------

    async def close(self, channel_id: bytes, addrs: tuple[str, ...] = ()) -> None:
        """End a channel: cooperatively when this node pays and the payee answers, else with the
        latest state both signed (the challenge window opens; ``watch`` settles it later)."""
        c = self.channel(channel_id)
        if c is None:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "no open channel has that id")
        if c.opener == self.wallet.peer_id and addrs:
            try:
                held = await self.pay(channel_id, 0, addrs, final=True)
            except (HydraError, trio.TooSlowError) as exc:
                log.info("the payee did not sign a final state (%s): closing alone", exc)
            else:
                await self.wallet.submit(held.close_event(self.wallet.peer_id))
                return
        held = self.held(channel_id)
        if held is None:  # nothing was ever paid: the deposit goes back once the TTL has passed
            return
        await self.wallet.submit(held.close_event(self.wallet.peer_id))

    async def watch(self, addrs_of: Callable[[str], tuple[str, ...]]) -> None:
        """One pass over this node's channels: answer a stale close with a later state, close
        channels at the end of their TTL, settle those whose window has passed."""
        me, now = self.wallet.peer_id, self.clock()
        for ref, c in list(self.wallet.log.state.channels.items()):
            if me not in (c.opener, c.peer):
                continue
            held = self.held(ref)
            try:
                if now >= c.settles_at():
                    await self.wallet.submit(Event("channel_settle", me, ref=ref))
                elif c.closing_until is not None and held is not None and held.state.nonce > c.nonce:
                    await self.wallet.submit(held.close_event(me))  # the other side closed with an old state
                elif c.closing_until is None and now >= c.opened_at + TTL_S - CLOSE_MARGIN_S:
                    await self.close(ref, addrs_of(c.peer) if c.opener == me else ())
            except HydraError as exc:
                log.info("channel %s: %s", ref.hex()[:8], exc)
