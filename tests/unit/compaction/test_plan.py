"""hydra.compaction.plan and hydra.coordinator.compaction: what a coordinator asks of KV
compaction (flags, budgets files) and when it orders its stages to compact."""

import json
from pathlib import Path

import pytest

from hydra.compaction.plan import CompactionPlan, load_budgets
from hydra.coordinator.compaction import CacheFull, CacheSchedule
from hydra.errors import ConfigError


@pytest.mark.parametrize("bad", [{"mode": "always"}, {"ratio": 1.0}, {"ratio": float("nan")}, {"ratio": 65},
                                 {"phase": 5}, {"selection": "random"}])
def test_bad_settings_are_refused(bad) -> None:
    with pytest.raises(ConfigError):
        CompactionPlan(**bad)


def test_phases_decide_what_a_stage_is_told(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(json.dumps({"1": 2, "3": [4, 1, 2]}))
    shares = load_budgets(tmp_path / "b.json")
    assert shares == {1: (0.5,), 3: (1.0, 0.25, 0.5)}  # relative: the largest keeps it all
    assert CompactionPlan(phase=1).for_span(0, 4).refit is False
    assert CompactionPlan(phase=2, shares=shares).for_span(0, 4).shares == ()  # budgets from phase 3
    span = CompactionPlan(phase=3, shares=shares).for_span(1, 4)
    assert span.refit and span.shares == ((0.5,), (1.0,), (1.0, 0.25, 0.5))
    assert CompactionPlan(phase=3, shares=shares).for_span(2, 2).shares == ()  # a relay


@pytest.mark.parametrize("text", ["[1, 2]", "{}", '{"a": 1}', '{"0": -1}', '{"0": [1, "x"]}', '{"0": true}',
                                  "{not json"])
def test_a_bad_budgets_file_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "b.json").write_text(text)
    with pytest.raises(ConfigError, match="kv-compaction-budgets"):
        load_budgets(tmp_path / "b.json")


def test_auto_compacts_only_when_the_grant_is_full_and_makes_room_for_each_step() -> None:
    schedule = CacheSchedule(CompactionPlan(mode="auto", ratio=4.0), granted=100)
    assert schedule.step_limit() == 75
    schedule.sent(75, schedule.order(75))
    assert schedule.order(20) == 0
    schedule.sent(20, 0)
    assert schedule.order(10) == 23  # 95 entries, 10 more would overflow: compact to 95 / 4
    schedule.sent(10, 23)
    assert (schedule.entries, schedule.compactions, schedule.room()) == (33, 1, None)


def test_on_compacts_the_prompt_once_it_is_prefilled() -> None:
    schedule = CacheSchedule(CompactionPlan(mode="on", ratio=2.0))
    assert schedule.step_limit() is None  # granted the whole session: steps of any size
    schedule.sent(41, schedule.order(41))
    schedule.prompted = True
    assert schedule.order(1) == 20
    schedule.sent(1, 20)
    assert schedule.order(1) == 0


def test_phases_below_four_compact_once_then_the_session_ends() -> None:
    schedule = CacheSchedule(CompactionPlan(mode="auto", ratio=2.0, phase=2), granted=40)
    schedule.sent(20, 0)
    schedule.sent(20, schedule.order(20))
    assert schedule.room() is None  # not compacted yet
    schedule.sent(10, schedule.order(10))  # full: compacts to 20
    assert schedule.room() == 10
    schedule.sent(10, 0)
    with pytest.raises(CacheFull, match="compacts once"):
        schedule.order(1)
