"""Schedules: a job-making command (`p2v copy ...`, `p2v convert ...`) to run later,
once or again and again.

They live in the journal's `schedules` table, which is what `p2v scheduler` goes by:
it reads the table again every few seconds, so what `p2v schedule pause|resume|
cancel` changes from another process takes effect. What happens to a schedule
(a change asked for, the outcome of a run, a run missed) is decided by pure
functions here; the functions that write do only that.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shlex
from dataclasses import dataclass
from typing import Any

from p2v.errors import InputError
from p2v.jobs import schema
from p2v.jobs.journal import Journal, Lock
from p2v.jobs.triggers import Trigger
from p2v.units import format_time

# The lock a running `p2v scheduler` holds: one scheduler per journal.
SCHEDULER_LOCK = Lock("scheduler", "the journal's scheduler")

_COLUMNS = (
    "id, verb, argv, cwd, trigger, next_run, state, failures, reason, created, last_run, "
    "last_outcome, last_job"
)


@dataclass(frozen=True)
class Schedule:
    id: str
    verb: str
    argv: list[str]  # the verb's arguments, without --at, --every and --cron
    cwd: str
    trigger: Trigger
    next_run: float | None
    state: str  # active, paused, cancelled, done
    failures: int  # failed runs in a row
    reason: str | None  # why it was paused
    created: float
    last_run: float | None = None
    last_outcome: str | None = None
    last_job: str | None = None

    @property
    def command(self) -> str:
        return "p2v " + shlex.join([self.verb, *self.argv])

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "trigger": self.trigger.to_json(),
                "describe": self.trigger.describe()}  # fmt: skip


@dataclass(frozen=True)
class Policy:
    """How `p2v scheduler` treats runs that fail or come late."""

    grace: float = 300.0  # a run this late (the scheduler was down) still runs
    retries: int = 3  # failed runs in a row tried again before the schedule is paused
    retry_delay: float = 10.0  # before the first try again; doubled for each next one
    run_timeout: float = 86400.0  # a run still going after this long is stopped


def settle(
    schedule: Schedule, ok: bool, error: str | None, following: float | None, now: float,
    policy: Policy,
) -> Schedule:  # fmt: skip
    """The schedule after a run: on to the `following` run when it went well; tried
    again after a delay doubled each time when it failed, until `policy.retries` are
    spent, then paused saying why."""
    if ok:
        state = "active" if following is not None else "done"
        return dataclasses.replace(
            schedule, next_run=following, state=state, failures=0, reason=None
        )
    failures = schedule.failures + 1
    if failures > policy.retries:
        reason = f"paused after {failures} failed runs in a row; the last: {error}"
        return dataclasses.replace(
            schedule, next_run=following, state="paused", failures=failures, reason=reason
        )
    retry = now + policy.retry_delay * 2 ** (failures - 1)
    return dataclasses.replace(schedule, next_run=retry, failures=failures)


def too_late(due: float, now: float, policy: Policy) -> bool:
    """Whether a run due at `due` is missed, rather than made late, at `now`."""
    return now - due > policy.grace


def changed(schedule: Schedule, action: str, now: float) -> Schedule:
    """The schedule after `p2v schedule pause|resume|cancel`, or a clear InputError."""
    if schedule.state in ("cancelled", "done"):
        raise InputError(f"schedule {schedule.id} is {schedule.state}: nothing to {action}")
    if action == "cancel":
        return dataclasses.replace(schedule, state="cancelled", next_run=None)
    if action == "pause":
        if schedule.state == "paused":
            raise InputError(f"schedule {schedule.id} is paused already")
        return dataclasses.replace(schedule, state="paused", reason="paused by hand")
    assert action == "resume"
    if schedule.state != "paused":
        raise InputError(f"schedule {schedule.id} is {schedule.state}, not paused")
    next_run = schedule.next_run
    if next_run is None or next_run < now:  # its run is past: the next one, or a one-off now
        next_run = schedule.trigger.next_run(now) or now
    return dataclasses.replace(schedule, state="active", next_run=next_run, failures=0,
                               reason=None)  # fmt: skip


# -- in the journal -------------------------------------------------------------


def add(
    journal: Journal, verb: str, argv: list[str], cwd: str, trigger: Trigger, now: float
) -> Schedule:
    schedule = Schedule(
        id=f"sched-{secrets.token_hex(4)}", verb=verb, argv=argv, cwd=cwd, trigger=trigger,
        next_run=trigger.next_run(now), state="active", failures=0, reason=None, created=now,
    )  # fmt: skip
    journal.db.execute(
        "INSERT INTO schedules (id, verb, argv, cwd, trigger, next_run, state, failures, "
        "created) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
        (schedule.id, verb, json.dumps(argv), cwd, json.dumps(trigger.to_json()),
         schedule.next_run, schedule.state, now),
    )  # fmt: skip
    return schedule


def get(journal: Journal, schedule_id: str) -> Schedule:
    row = journal.db.execute(
        f"SELECT {_COLUMNS} FROM schedules WHERE id = ?", (schedule_id,)
    ).fetchone()
    if row is None:
        raise InputError(f"no schedule {schedule_id!r} in the journal {journal.path}")
    return _schedule(row)


def every(journal: Journal) -> list[Schedule]:
    rows = journal.db.execute(f"SELECT {_COLUMNS} FROM schedules ORDER BY created").fetchall()
    return [_schedule(row) for row in rows]


def change(journal: Journal, schedule_id: str, action: str, now: float) -> Schedule:
    """Pause, resume or cancel a schedule."""
    with schema.transaction(journal.db):  # not between a run's reading and writing it
        schedule = changed(get(journal, schedule_id), action, now)
        _write(journal, schedule)
    return schedule


def started(journal: Journal, schedule: Schedule, run_job: str, now: float,
            following: float | None) -> None:  # fmt: skip
    """A run began: its schedule goes on to the `following` run meanwhile."""
    journal.db.execute(
        "UPDATE schedules SET last_run = ?, last_job = ?, next_run = ? WHERE id = ?",
        (now, run_job, following, schedule.id),
    )


def ended(journal: Journal, settled: Schedule, run_job: str, outcome: str) -> None:
    """A run ended, or was missed; `settled`: the schedule as its outcome leaves it. A
    schedule paused or cancelled meanwhile stays so."""
    journal.db.execute(
        "UPDATE schedules SET failures = ?, last_job = ?, last_outcome = ?, "
        "next_run = CASE WHEN state = 'active' THEN ? ELSE next_run END, "
        "reason = CASE WHEN state = 'active' THEN ? ELSE reason END, "
        "state = CASE WHEN state = 'active' THEN ? ELSE state END WHERE id = ?",
        (
            settled.failures,
            run_job,
            outcome,
            settled.next_run,
            settled.reason,
            settled.state,
            settled.id,
        ),  # fmt: skip
    )


def _write(journal: Journal, schedule: Schedule) -> None:
    journal.db.execute(
        "UPDATE schedules SET state = ?, next_run = ?, failures = ?, reason = ? WHERE id = ?",
        (schedule.state, schedule.next_run, schedule.failures, schedule.reason, schedule.id),
    )


def _schedule(row: tuple[Any, ...]) -> Schedule:
    (schedule_id, verb, argv, cwd, trigger, next_run, state, failures, reason, created,
     last_run, last_outcome, last_job) = row  # fmt: skip
    return Schedule(
        id=schedule_id, verb=verb, argv=json.loads(argv), cwd=cwd,
        trigger=Trigger.from_json(json.loads(trigger)), next_run=next_run, state=state,
        failures=failures, reason=reason, created=created, last_run=last_run,
        last_outcome=last_outcome, last_job=last_job,
    )  # fmt: skip


def describe_next(schedule: Schedule) -> str:
    if schedule.next_run is None:
        return "-"
    return format_time(schedule.next_run)
