"""A node's HYDRA wallet: its replica of the token log, the events it signs (stake, unstake,
burn, channels) and the mints it claims for the receipts its stage countersigned."""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils
import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from hydra.economy.channel_book import ChannelBook
from hydra.economy.config import MINT_EVERY_S
from hydra.economy.federation import ask, catch_up, expect
from hydra.economy.proofs import claim
from hydra.economy.receipts import opened
from hydra.economy.tokenlog import MICRO, TokenLog, sign_event
from hydra.errors import HydraError, InvalidRequest, Unavailable
from hydra.p2p.streams import RemoteError
from protocols.codec import encode
from protocols.receipt import Receipt
from protocols.token import Event, MintProof, Sealed, Submit

log = logging.getLogger(__name__)


def remember_claim(
    db: sqlite_utils.Database, receipt: Receipt | None = None, countersignature: bytes = b""
) -> None:
    """Keep the latest receipt of each session this node's stage countersigned, to mint for it
    (called with no receipt, only make sure the table exists)."""
    if not db["to_mint"].exists():
        db["to_mint"].create({"ref": bytes, "tokens": int, "proof": bytes}, pk="ref")
    body = opened(receipt) if receipt is not None else None
    if body is None:
        return
    proof = encode(MintProof(encode(receipt), countersignature))
    with db.conn:
        db.execute(
            "INSERT INTO to_mint (ref, tokens, proof) VALUES (?, ?, ?) ON CONFLICT(ref) DO UPDATE SET "
            "tokens = excluded.tokens, proof = excluded.proof WHERE excluded.tokens > to_mint.tokens",
            [claim(body), body.tokens, proof],
        )


class TokenRefused(InvalidRequest):
    """The federation refused an event (an overdraft, a 9th channel, a stale state...):
    ``protocol_code`` says which rule."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.protocol_code = code
        self.http_status = 503 if code == "overloaded" else 400


@dataclass(frozen=True)
class Member:
    peer_id: str
    addrs: tuple[str, ...]


class Wallet:
    def __init__(
        self, host: IHost, identity: KeyPair, log_: TokenLog, members: Mapping[str, Sequence[str]]
    ) -> None:
        self.host = host
        self.identity = identity
        self.peer_id = ID.from_pubkey(identity.public_key).to_base58()
        self.log = log_
        # the sequencer first: any member forwards a submission to it, asking it saves a hop
        self.members = [Member(m, tuple(members.get(m, ()))) for m in log_.genesis.members]
        remember_claim(log_.db)  # creates the table
        self.channels = ChannelBook(self)
        # one extension of the replica at a time: a payer's own submission and a payee's check
        # of a channel can both catch up at once, and the later one would append stale entries
        self._extending = trio.Lock()

    async def submit(self, event: Event, proof: bytes = b"") -> Sealed:
        """Sign ``event``, have it sealed, and append it to this replica. ``TokenRefused`` when a
        rule forbids it; ``Unavailable`` when no member answers."""
        submit = Submit(sign_event(self.identity, event), proof)
        failures = []
        for member in self.members:
            try:
                sealed = expect(await ask(self.host, member.peer_id, member.addrs, submit), Sealed)
            except RemoteError as exc:
                if exc.code != "overloaded":
                    raise TokenRefused(exc.code, exc.message) from None
                failures.append(f"{member.peer_id}: {exc.message}")
            except (HydraError, trio.TooSlowError) as exc:
                failures.append(f"{member.peer_id}: {exc}")
            else:
                await self._extend_to(sealed, member)
                return sealed
        raise Unavailable("no federation member sealed the event: " + "; ".join(failures))

    async def _extend_to(self, sealed: Sealed, member: Member) -> None:
        async with self._extending:
            if sealed.entry.seq == self.log.length:
                self.log.append(sealed)
            elif sealed.entry.seq > self.log.length:
                await catch_up(self.host, self.log, member.peer_id, member.addrs, upto=sealed.entry.seq + 1)

    async def sync(self) -> bool:
        """Catch this replica up with the first member that answers; False if none did."""
        for member in self.members:
            try:
                async with self._extending:
                    await catch_up(self.host, self.log, member.peer_id, member.addrs)
            except (HydraError, trio.TooSlowError) as exc:
                log.info("syncing the token log from %s failed: %s", member.peer_id, exc)
                continue
            return True
        return False

    # --- minting -----------------------------------------------------------------------------

    def earned(self, receipt: Receipt, countersignature: bytes) -> None:
        remember_claim(self.log.db, receipt, countersignature)

    async def mint_pending(self) -> int:
        """Claim every mint not in the log yet; the number sealed. A claim the federation
        refuses is dropped (logged); one it could not seal now stays for the next round."""
        rows = self.log.db.execute("SELECT ref, tokens, proof FROM to_mint").fetchall()
        minted = 0
        for ref, tokens, proof in rows:
            if tokens > self.log.state.claims.get(ref, 0):
                try:
                    await self.submit(Event("mint", self.peer_id, tokens, ref=ref), proof)
                    minted += 1
                except TokenRefused as exc:
                    log.warning("the federation refused a mint: %s", exc)
                except Unavailable as exc:
                    log.info("minting later: %s", exc)
                    continue
            with self.log.db.conn:
                self.log.db.execute("DELETE FROM to_mint WHERE ref = ? AND tokens = ?", [ref, tokens])
        return minted

    async def run(
        self, every: float = MINT_EVERY_S, addrs_of: Callable[[str], tuple[str, ...]] = lambda peer: ()
    ) -> None:
        """Keep the replica current, claim mints and look after channels, until cancelled."""
        while True:
            await self.sync()
            await self.mint_pending()
            await self.channels.watch(addrs_of)
            await self.withdraw_matured()
            await trio.sleep(every)

    async def withdraw_matured(self) -> None:
        """Move unstaked HYDRA whose unbonding has passed back to the liquid balance."""
        state = self.log.state
        waiting = state.unbonding[self.peer_id]
        if waiting and self.channels.clock() >= state.unbonded_at[self.peer_id]:
            try:
                await self.submit(Event("withdraw", self.peer_id, waiting))
            except HydraError as exc:
                log.info("withdrawing unstaked HYDRA later: %s", exc)

    # --- what it holds -----------------------------------------------------------------------

    def stake_of(self, peer_id: str) -> int:
        return self.log.state.staked[peer_id]

    def account(self, peer_id: str | None = None) -> dict[str, Any]:
        peer = peer_id or self.peer_id
        state = self.log.state
        channels = [
            {
                "id": ref.hex(),
                "payer": c.opener,
                "payee": c.peer,
                "deposit": c.deposit / MICRO,
                "paid": c.paid / MICRO,
                "nonce": c.nonce,
                "closing_until": c.closing_until,
            }
            for ref, c in state.channels.items()
            if peer in (c.opener, c.peer)
        ]
        return {
            "hydra": state.balances[peer] / MICRO,
            "staked": state.staked[peer] / MICRO,
            "unbonding": state.unbonding[peer] / MICRO,
            "unbonding_until": state.unbonded_at.get(peer),
            "burned": state.burned[peer] / MICRO,
            "slashed": state.slashed[peer] / MICRO,
            "channels": channels,
            "supply": state.supply / MICRO,
            "log_length": self.log.length,
        }
