"""What becomes of a schedule: after a run, when late, when changed by hand."""

from __future__ import annotations

import dataclasses

import pytest

from p2v.errors import InputError
from p2v.jobs.schedules import Policy, Schedule, changed, settle, too_late
from p2v.jobs.triggers import Trigger

NOW = 1_750_000_000.0
POLICY = Policy(grace=300, retries=3, retry_delay=10)
HOURLY = Schedule(
    id="sched-1", verb="copy", argv=["a b.raw", "c.raw"], cwd="/srv", created=NOW - 7200,
    trigger=Trigger(at=NOW - 3600, every=3600), next_run=NOW, state="active", failures=0,
    reason=None,
)  # fmt: skip
ONCE = dataclasses.replace(HOURLY, trigger=Trigger(at=NOW))


def test_a_run_that_went_well_goes_on_to_the_next_or_ends_a_one_off() -> None:
    after = settle(dataclasses.replace(HOURLY, failures=2), True, None, NOW + 3600, NOW, POLICY)
    assert (after.state, after.next_run, after.failures) == ("active", NOW + 3600, 0)
    once = settle(ONCE, True, None, None, NOW, POLICY)
    assert (once.state, once.next_run) == ("done", None)


def test_a_failed_run_is_tried_again_later_and_later_then_paused_saying_why() -> None:
    schedule, waits = HOURLY, []
    for _ in range(POLICY.retries):
        schedule = settle(schedule, False, "no such file", NOW + 3600, NOW, POLICY)
        assert schedule.state == "active" and schedule.next_run is not None
        waits.append(schedule.next_run - NOW)
    assert waits == [10, 20, 40]
    paused = settle(schedule, False, "no such file", NOW + 3600, NOW, POLICY)
    assert (paused.state, paused.failures) == ("paused", 4)
    assert paused.reason == "paused after 4 failed runs in a row; the last: no such file"
    never = settle(HOURLY, False, "boom", None, NOW, dataclasses.replace(POLICY, retries=0))
    assert never.state == "paused"


def test_a_run_more_late_than_the_grace_is_missed() -> None:
    assert not too_late(NOW - 300, NOW, POLICY)
    assert too_late(NOW - 301, NOW, POLICY)


def test_pause_resume_and_cancel() -> None:
    paused = changed(HOURLY, "pause", NOW - 10)
    assert (paused.state, paused.next_run, paused.reason) == ("paused", NOW, "paused by hand")
    # Resumed after its run went by: the next one of its trigger.
    resumed = changed(dataclasses.replace(paused, failures=4), "resume", NOW + 5)
    assert (resumed.state, resumed.next_run, resumed.failures, resumed.reason) == (
        "active", NOW + 3600, 0, None)  # fmt: skip
    assert changed(paused, "resume", NOW - 5).next_run == NOW  # its run is still ahead
    # A one-off paused after its time runs when resumed.
    one_off = changed(dataclasses.replace(ONCE, state="paused", next_run=None), "resume", NOW + 60)
    assert one_off.next_run == NOW + 60
    cancelled = changed(paused, "cancel", NOW)
    assert (cancelled.state, cancelled.next_run) == ("cancelled", None)


@pytest.mark.parametrize(
    ("state", "action", "says"),
    [
        ("active", "resume", "schedule sched-1 is active, not paused"),
        ("paused", "pause", "schedule sched-1 is paused already"),
        ("cancelled", "resume", "schedule sched-1 is cancelled: nothing to resume"),
        ("done", "cancel", "schedule sched-1 is done: nothing to cancel"),
    ],
)
def test_changes_that_make_no_sense_are_refused(state: str, action: str, says: str) -> None:
    with pytest.raises(InputError, match=says):
        changed(dataclasses.replace(HOURLY, state=state), action, NOW)


def test_a_schedule_shows_its_command_as_typed() -> None:
    assert HOURLY.command == "p2v copy 'a b.raw' c.raw"
    assert HOURLY.to_json()["trigger"] == {
        "at": NOW - 3600,
        "every": 3600,
        "cron": None,
        "zone": None,
    }
