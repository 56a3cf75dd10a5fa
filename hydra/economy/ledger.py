"""Barter credits: each node's double-entry ledger of what it served and what it consumed.

SQLite in WAL mode with ``synchronous=FULL`` (a committed posting survives a crash and a power
loss), through sqlite-utils. Every transaction's entries sum to zero, amounts are integer
micro-credits (1 credit = 1,000,000; serving 1,000 tokens earns 1 credit), and a transaction
is keyed by what caused it, so posting the same thing twice changes nothing. Cumulative
receipts post only their increase over the last one posted for their session, in the same
SQLite transaction that records it: a replayed or stale receipt posts nothing, and a crash
leaves either all of a posting or none of it.

Balances decay by 5% per day, computed at read time: each entry counts for
``amount * 0.95 ** age_in_days``. Both sides of a transaction share its timestamp, so decayed
balances still sum to zero across the ledger.
"""

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from hydra.errors import InvalidRequest

MICRO = 1_000_000  # micro-credits per credit
MICRO_PER_TOKEN = MICRO // 1000  # 1 credit per 1,000 tokens served
DAILY_DECAY = 0.95
DAY_S = 86400.0
MAX_AMOUNT = 1 << 62  # any single entry; keeps every sum inside SQLite's 64-bit integers
LEDGER_FILE = "ledger.db"  # in the node's home


class LedgerError(InvalidRequest):
    """A posting the ledger refuses: unbalanced, non-integer, negative or overflowing."""


@dataclass(frozen=True)
class Posted:
    """The outcome of posting: ``amount`` micro-credits moved (0 when it was already posted)."""

    key: str
    amount: int

    @property
    def new(self) -> bool:
        return self.amount > 0


class Ledger:
    """Open with a path, or None for an in-memory ledger (tests). ``clock`` gives unix seconds
    (injected in tests to age entries)."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.db = sqlite_utils.Database(path) if path is not None else sqlite_utils.Database(memory=True)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.clock = clock
        if not self.db["transactions"].exists():
            self.db["transactions"].create({"key": str, "at": float, "memo": str}, pk="key")
            self.db["entries"].create(
                {"tx": str, "account": str, "amount": int}, foreign_keys=[("tx", "transactions", "key")]
            )
            self.db["entries"].create_index(["account"])
            self.db["receipts"].create({"session": str, "tokens": int, "seq": int}, pk="session")

    def post(self, key: str, entries: Mapping[str, int], memo: str = "") -> Posted:
        """Record a balanced transaction once: a second post under ``key`` changes nothing."""
        check_entries(entries)
        with self._transaction() as conn:
            return self._post(conn, key, entries, memo)

    def post_receipt(self, session: str, seq: int, tokens: int, payer: str, payee: str) -> Posted:
        """Credit ``payee`` (debit ``payer``) for a cumulative receipt: ``tokens`` served so far
        in ``session``, its ``seq``-th receipt. Only an increase over the last receipt posted for
        the session moves credits; older or equal ones post nothing."""
        if tokens < 0 or seq < 0 or tokens > MAX_AMOUNT // MICRO_PER_TOKEN:
            raise LedgerError(f"a receipt for {tokens} tokens (sequence {seq}) is out of range")
        with self._transaction() as conn:
            row = conn.execute("SELECT tokens, seq FROM receipts WHERE session = ?", [session]).fetchone()
            before, last_seq = row if row is not None else (0, -1)
            if seq <= last_seq or tokens <= before:
                return Posted(f"{session}:{seq}", 0)
            amount = (tokens - before) * MICRO_PER_TOKEN
            conn.execute(
                "INSERT INTO receipts (session, tokens, seq) VALUES (?, ?, ?) "
                "ON CONFLICT(session) DO UPDATE SET tokens = excluded.tokens, seq = excluded.seq",
                [session, tokens, seq],
            )
            memo = f"receipt {seq} of {session}: {tokens} tokens served"
            return self._post(conn, f"{session}:{seq}", {payee: amount, payer: -amount}, memo)

    def balance(self, account: str) -> int:
        """Micro-credits held by ``account`` now, each entry decayed by its age."""
        now = self.clock()
        rows = self.db.execute(
            "SELECT e.amount, t.at FROM entries e JOIN transactions t ON e.tx = t.key WHERE e.account = ?",
            [account],
        ).fetchall()
        return round(sum(amount * decay(now - at) for amount, at in rows))

    def posted(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM transactions WHERE key = ?", [key]).fetchone() is not None

    def unbalanced(self) -> list[str]:
        """Keys of transactions whose entries do not sum to zero (there should be none)."""
        rows = self.db.execute("SELECT tx FROM entries GROUP BY tx HAVING SUM(amount) != 0").fetchall()
        return [r[0] for r in rows]

    def _post(self, conn: sqlite3.Connection, key: str, entries: Mapping[str, int], memo: str) -> Posted:
        try:
            conn.execute(
                "INSERT INTO transactions (key, at, memo) VALUES (?, ?, ?)", [key, self.clock(), memo]
            )
        except sqlite3.IntegrityError:  # already posted: idempotent
            return Posted(key, 0)
        conn.executemany(
            "INSERT INTO entries (tx, account, amount) VALUES (?, ?, ?)",
            [(key, account, amount) for account, amount in entries.items()],
        )
        return Posted(key, sum(a for a in entries.values() if a > 0))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction holding the write lock from its start (a read-modify-write
        cannot interleave with another writer), committed on success, rolled back otherwise."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def check_entries(entries: Mapping[str, int]) -> None:
    if len(entries) < 2:
        raise LedgerError("a transaction moves credits between at least two accounts")
    for account, amount in entries.items():
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise LedgerError(f"{account}: amounts are integer micro-credits, not {amount!r}")
        if not account or abs(amount) > MAX_AMOUNT:
            raise LedgerError(f"{account!r}: amount {amount} out of range")
    if sum(entries.values()) != 0:
        raise LedgerError(f"entries sum to {sum(entries.values())}, not zero")


def decay(age_s: float) -> float:
    """What one micro-credit earned ``age_s`` seconds ago is worth now."""
    return DAILY_DECAY ** (max(0.0, age_s) / DAY_S)
