"""The token side of a running node: find the federation, pin its genesis, keep a replica of
the log current and claim mints for what this node's stage served."""

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils
import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from hydra.economy.config import TokenConfig
from hydra.economy.federation import ask, expect
from hydra.economy.proofs import evidence_ref
from hydra.economy.tokenlog import (
    PRICE_PER_UNIT,
    PRIORITY_BURN,
    TOKEN_LOG_FILE,
    TokenLog,
    genesis_hash,
    ticket_id,
)
from hydra.economy.wallet import TokenRefused, Wallet, remember_claim
from hydra.errors import ConfigError, HydraError, Unavailable
from protocols.codec import encode
from protocols.inference import Hop
from protocols.receipt import Receipt
from protocols.token import Equivocation, Event, Genesis, GetGenesis

log = logging.getLogger(__name__)

RETRY_S = 10.0  # between attempts to reach a federation
MAX_ACCUSATIONS = 64  # slashes waiting to be submitted
TICKET_MARGIN_S = 60.0  # a priority ticket this close to expiring is replaced before use


def split(addrs: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``(peer id, (address,))`` for each ``/.../p2p/PEER_ID`` multiaddr."""
    found = []
    for text in addrs:
        try:
            info = info_from_p2p_addr(Multiaddr(text))
        except Exception:  # noqa: BLE001 - multiaddr raises many types for bad text
            raise ConfigError(
                f"bad federation address {text!r}: expected /ip4/HOST/tcp/PORT/p2p/PEER_ID"
            ) from None
        found.append((info.peer_id.to_base58(), tuple(str(a) for a in info.addrs)))
    return found


def pinned_genesis(db: sqlite_utils.Database, genesis: Genesis) -> None:
    """Remember the first federation this node follows; refuse to follow a different one."""
    if not db["genesis"].exists():
        db["genesis"].create({"hash": bytes, "body": bytes}, pk="hash")
    row = db.execute("SELECT hash FROM genesis").fetchone()
    if row is None:
        db["genesis"].insert({"hash": genesis_hash(genesis), "body": encode(genesis)})
    elif row[0] != genesis_hash(genesis):
        raise ConfigError(
            f"the federation answering now is not the one this node follows (genesis {row[0].hex()[:16]}); "
            f"move {TOKEN_LOG_FILE} away to follow the new one"
        )


class NoFederation(Unavailable):
    """This node has no replica of the token log to move HYDRA with (yet)."""

    api_code = "no_federation"


class TokenService:
    """``wallet`` is None until a federation answered."""

    def __init__(
        self, host: IHost, identity: KeyPair, home: Path, config: TokenConfig, signposts: Sequence[str] = ()
    ) -> None:
        self.host = host
        self.identity = identity
        self.config = config
        self.path = home / TOKEN_LOG_FILE
        self.federation = split(config.federation or signposts)
        self.db = sqlite_utils.Database(self.path)
        self.wallet: Wallet | None = None
        self._ticket = b""  # this node's current priority ticket's secret
        self._ticketing = trio.Lock()
        self._accusations, self._accused = trio.open_memory_channel[Equivocation](MAX_ACCUSATIONS)

    def ready(self) -> Wallet:
        if self.wallet is None:
            raise NoFederation(
                "no HYDRA token federation has answered yet (run a signpost with --ledger, or give "
                "--federation)"
            )
        return self.wallet

    def status(self) -> dict[str, Any]:
        if self.wallet is None:
            return {"federation": None}
        genesis = self.wallet.log.genesis
        return {"federation": {"members": len(genesis.members), "k": genesis.k}, **self.wallet.account()}

    async def stake(self, amount: int) -> dict[str, Any]:
        wallet = self.ready()
        await wallet.submit(Event("stake", wallet.peer_id, amount))
        return wallet.account()

    async def unstake(self, amount: int) -> dict[str, Any]:
        wallet = self.ready()
        await wallet.submit(Event("unstake", wallet.peer_id, amount))
        return wallet.account()

    async def open_channel(self, payee: str, deposit: int) -> dict[str, Any]:
        wallet = self.ready()
        channel_id = await wallet.channels.open(payee, deposit)
        return {"id": channel_id.hex(), **wallet.account()}

    async def close_channel(self, channel_id: bytes) -> dict[str, Any]:
        wallet = self.ready()
        c = wallet.channels.channel(channel_id)
        if c is None or wallet.peer_id not in (c.opener, c.peer):
            raise TokenRefused("not_allowed", "this node has no open channel with that id")
        await wallet.channels.close(channel_id, self.addrs_of(c.peer))
        return wallet.account()

    async def pay_by_channel(self, hop: Hop, units: int) -> None:
        """Pay ``hop`` for ``units`` more stage-tokens over this node's channel to it, opening one
        first when ``channel_deposit`` says so; logged, never raised (the receipt stands)."""
        wallet = self.wallet
        if wallet is None or units <= 0:
            return
        book = wallet.channels
        try:
            channel_id = book.paying(hop.peer_id)
            deposit = min(self.config.channel_deposit, wallet.log.state.balances[wallet.peer_id])
            if channel_id is None and deposit > 0:  # as much as asked for, or all there is
                channel_id = await book.open(hop.peer_id, deposit)
            if channel_id is not None:
                await book.pay(channel_id, units * PRICE_PER_UNIT, hop.addrs)
        except (HydraError, trio.TooSlowError) as exc:
            log.info("paying %s by channel failed: %s", hop.peer_id, exc)

    def addrs_of(self, peer: str) -> tuple[str, ...]:
        """Where ``peer`` was last reached (the host's peerstore)."""
        try:
            return tuple(str(a) for a in self.host.get_peerstore().addrs(ID.from_base58(peer)))
        except Exception:  # noqa: BLE001 - an unknown peer or a malformed id: no address known
            return ()

    def gauges(self) -> dict[str, tuple[str, Callable[[], float]]]:
        """Prometheus gauges of this node's HYDRA (0 until a federation answers)."""

        def mine(read: Callable[[Wallet], float]) -> Callable[[], float]:
            return lambda: read(self.wallet) if self.wallet is not None else 0.0

        return {
            "hydra_token_balance": ("HYDRA this node holds, liquid", mine(lambda w: w.account()["hydra"])),
            "hydra_token_staked": ("HYDRA this node has staked", mine(lambda w: w.account()["staked"])),
            "hydra_channels_open": (
                "Payment channels this node is in, as payer or payee",
                mine(lambda w: len(w.account()["channels"])),
            ),
            "hydra_token_log_entries": (
                "Entries in this node's replica of the token log",
                mine(lambda w: w.log.length),
            ),
        }

    async def priority_ticket(self) -> bytes:
        """The secret of a priority ticket valid for a while yet, burning a new one when needed."""
        wallet = self.ready()
        async with self._ticketing:
            usable = wallet.log.state.ticket_valid(self._ticket, time.time() + TICKET_MARGIN_S)
            if not usable:
                secret = secrets.token_bytes(32)
                await wallet.submit(Event("burn", wallet.peer_id, PRIORITY_BURN, ref=ticket_id(secret)))
                self._ticket = secret
            return self._ticket

    async def ticket_valid(self, secret: bytes) -> bool:
        """Whether a session presenting ``secret`` gets priority on this node's stage."""
        wallet = self.wallet
        if wallet is None:
            return False
        if ticket_id(secret) not in wallet.log.state.tickets:
            await wallet.sync()  # burned a moment ago, perhaps
        return wallet.log.state.ticket_valid(secret, time.time())

    def stake_of(self, peer_id: str) -> int:
        return self.wallet.stake_of(peer_id) if self.wallet is not None else 0

    def earned(self, receipt: Receipt, countersignature: bytes) -> None:
        """A receipt this node's stage countersigned: mint for it (now or once a federation answers)."""
        remember_claim(self.db, receipt, countersignature)

    async def connect(self) -> Wallet | None:
        """Ask each known member for the genesis; open the replica on the first answer."""
        for peer, addrs in self.federation:
            try:
                genesis = expect(await ask(self.host, peer, addrs, GetGenesis(), timeout=5.0), Genesis)
            except (HydraError, trio.TooSlowError) as exc:
                log.debug("no token federation at %s: %s", peer, exc)
                continue
            pinned_genesis(self.db, genesis)
            members = {m: tuple(a) for m, a in zip(genesis.members, genesis.addrs, strict=False)}
            log_ = await trio.to_thread.run_sync(TokenLog, Genesis(genesis.members, genesis.k), self.path)
            self.wallet = Wallet(self.host, self.identity, log_, members)
            self.wallet.channels.attach(self.host)
            log.info("following the token federation of %d member(s), k=%d", len(genesis.members), genesis.k)
            return self.wallet
        return None

    def accuse(self, evidence: Equivocation) -> None:
        """Have the peer ``evidence`` convicts slashed (in the background: the federation
        re-checks it first). Dropped, logged, when too many are waiting."""
        try:
            self._accusations.send_nowait(evidence)
        except trio.WouldBlock:
            log.warning("too many accusations waiting; dropped the one against %s", evidence.peer)

    async def _slash(self, wallet: Wallet) -> None:
        async for evidence in self._accused:
            event = Event("slash", evidence.peer, ref=evidence_ref(evidence))
            try:
                await wallet.submit(event, encode(evidence))
                log.warning("%s slashed for signing two different outputs", evidence.peer)
            except HydraError as exc:
                log.info("the federation did not slash %s: %s", evidence.peer, exc)

    async def run(
        self, every: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Find the federation, then keep the replica current, claim mints, look after channels
        and submit accusations, until cancelled."""
        task_status.started()
        while self.wallet is None:
            if await self.connect() is None:
                await trio.sleep(RETRY_S)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._slash, self.wallet)
            await self.wallet.run(every, self.addrs_of)
