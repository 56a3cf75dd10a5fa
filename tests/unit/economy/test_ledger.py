"""The barter ledger: balanced integer postings, idempotency, cumulative receipts, decay."""

import pytest

from hydra.economy.ledger import MICRO, Ledger, LedgerError


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_posting_is_balanced_and_happens_once() -> None:
    ledger = Ledger()
    assert ledger.post("tx-1", {"stage": 5 * MICRO, "coordinator": -5 * MICRO}).new
    assert not ledger.post("tx-1", {"stage": 5 * MICRO, "coordinator": -5 * MICRO}).new
    assert ledger.balance("stage") == 5 * MICRO and ledger.balance("coordinator") == -5 * MICRO
    assert ledger.unbalanced() == []


@pytest.mark.parametrize(
    "entries",
    [
        {"a": 1, "b": -2}, {"a": 1.5, "b": -1.5}, {"a": True, "b": -1},
        {"a": 1 << 63, "b": -(1 << 63)}, {"a": 0},
    ],
)
def test_bad_postings_are_refused_and_nothing_is_written(entries) -> None:
    ledger = Ledger()
    with pytest.raises(LedgerError):
        ledger.post("bad", entries)
    assert not ledger.posted("bad")


def test_cumulative_receipts_post_their_increase_once() -> None:
    ledger = Ledger()
    assert ledger.post_receipt("s1", 0, 400, payer="coordinator", payee="stage").amount == 400 * 1000
    assert ledger.post_receipt("s1", 1, 1000, payer="coordinator", payee="stage").amount == 600 * 1000
    assert not ledger.post_receipt("s1", 1, 1000, payer="coordinator", payee="stage").new  # replayed
    assert not ledger.post_receipt("s1", 0, 400, payer="coordinator", payee="stage").new  # stale
    assert not ledger.post_receipt("s1", 2, 900, payer="coordinator", payee="stage").new  # fewer tokens
    assert ledger.balance("stage") == MICRO  # 1,000 tokens served: one credit
    with pytest.raises(LedgerError):
        ledger.post_receipt("s2", 0, -5, payer="coordinator", payee="stage")


def test_credits_decay_five_percent_a_day() -> None:
    clock = Clock()
    ledger = Ledger(clock=clock)
    ledger.post("earned", {"stage": 1000 * MICRO, "coordinator": -1000 * MICRO})
    clock.now += 86400
    assert ledger.balance("stage") == 950 * MICRO
    clock.now += 86400
    assert ledger.balance("stage") == pytest.approx(902.5 * MICRO, abs=1)
    assert abs(ledger.balance("stage") + ledger.balance("coordinator")) <= 1  # rounding of a zero sum
