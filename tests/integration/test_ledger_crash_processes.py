"""kill -9 during settlement, 100 times: the ledger survives every crash whole.

A child process posts cumulative receipts to one SQLite ledger file as fast as it can and
prints each one after ``post_receipt`` returns (committed); the parent kills it with SIGKILL
at a random moment, 100 times over the same file. Afterwards the database passes SQLite's
integrity check, every transaction sums to zero, every acknowledged receipt is there exactly
once, and each session's credits equal its last receipt's tokens."""

import random
import subprocess
import sys
import time
from pathlib import Path

from hydra.economy.ledger import MICRO_PER_TOKEN, Ledger

KILLS = 100
CHILD = """
import sys
from pathlib import Path
from hydra.economy.ledger import Ledger

ledger = Ledger(Path(sys.argv[1]))
run = sys.argv[2]
print("ready", flush=True)
for seq in range(100000):
    session = f"{run}-{seq // 10}"
    ledger.post_receipt(session, seq % 10, 100 * (seq % 10 + 1), payer="coordinator", payee="stage")
    print(f"ack {session} {seq % 10}", flush=True)
"""


def test_kill_9_during_settlement_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    rng = random.Random(5)
    acked: list[tuple[str, int]] = []
    for run in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), f"run{run}"], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        child.kill()  # SIGKILL: no cleanup, no flush, mid-transaction as likely as not
        out, _ = child.communicate()
        lines = [line.split() for line in out.splitlines()]  # the last may be cut mid-write
        acked += [(words[1], int(words[2])) for words in lines if len(words) == 3 and words[0] == "ack"]
    assert len(acked) > KILLS  # the child did get work done between kills
    print(f"{KILLS} kills, {len(acked)} receipts acknowledged")

    ledger = Ledger(path)
    assert ledger.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert ledger.unbalanced() == []
    for session, seq in acked:
        assert ledger.posted(f"{session}:{seq}"), f"acknowledged receipt {session}:{seq} lost"
    keys = [r[0] for r in ledger.db.execute("SELECT key FROM transactions")]
    assert len(keys) == len(set(keys))
    # each session's credit is its last posted receipt's tokens: no receipt counted twice
    for session, tokens in ledger.db.execute("SELECT session, tokens FROM receipts"):
        credited = ledger.db.execute(
            "SELECT SUM(amount) FROM entries WHERE account = 'stage' AND tx LIKE ?", [f"{session}:%"]
        ).fetchone()[0]
        assert credited == tokens * MICRO_PER_TOKEN, session
