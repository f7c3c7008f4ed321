"""Schedules on the command line: `p2v copy|convert ... --at/--every/--cron` records
one, `p2v schedule` lists and changes them, `p2v scheduler` runs them."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from p2v.commands.options import count, seconds, without_schedule_options
from p2v.errors import InputError

if TYPE_CHECKING:
    from p2v.jobs.schedules import Schedule

_ACTIONS = ("list", "pause", "resume", "cancel")


def register(verbs: Any) -> None:
    from p2v.jobs.schedules import Policy

    p = verbs.add_parser(
        "schedule",
        help="list, pause, resume or cancel the schedules",
        description="The schedules that `p2v copy` and `p2v convert` recorded when given "
        "--at, --every or --cron: list shows each with its trigger, next run, state, "
        "last outcome and why it was paused; pause and resume stop and restart one; "
        "cancel ends it. A running `p2v scheduler` sees a change within seconds; a run "
        "under way goes on.",
    )
    p.add_argument("action", choices=_ACTIONS, metavar="|".join(_ACTIONS))
    p.add_argument("schedule", nargs="?", metavar="SCHEDULE", help="a schedule id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_schedule)

    default = Policy()
    p = verbs.add_parser(
        "scheduler",
        help="run the schedules when they are due (a service)",
        description="Run each schedule of the journal when it is due, each run a job of "
        "the journal (`p2v history`) whose child is the job the command records. Reads "
        "the schedules again every 2 s. A run missed while no scheduler ran is made at "
        "its start when it is no more than --grace late, else recorded as missed. A run "
        "that fails is tried again after --retry-delay, twice that, ... --retries times, "
        "then its schedule is paused saying why. Stops on SIGTERM or Ctrl-C.",
    )
    p.add_argument(
        "--grace",
        type=seconds,
        default=default.grace,
        metavar="SECONDS",
        help=f"how late a missed run may still be made (default {default.grace:g})",
    )
    p.add_argument(
        "--retries",
        type=_retries,
        default=default.retries,
        metavar="N",
        help=f"failed runs tried again before the schedule is paused (default {default.retries})",
    )
    p.add_argument(
        "--retry-delay",
        type=seconds,
        default=default.retry_delay,
        metavar="SECONDS",
        help=f"before the first try again, doubled for each next one (default "
        f"{default.retry_delay:g})",
    )
    p.add_argument(
        "--run-timeout",
        type=seconds,
        default=default.run_timeout,
        metavar="SECONDS",
        help=f"stop a run still going after this long (default {default.run_timeout:g})",
    )
    p.add_argument(
        "--install",
        action="store_true",
        help="make it a systemd service (p2v-scheduler.service) that starts at boot, "
        "where systemd runs; elsewhere say so and run in the foreground",
    )
    p.set_defaults(func=_cmd_scheduler)


def _retries(text: str) -> int:
    return 0 if text.strip() == "0" else count(text)


def requested(args: argparse.Namespace) -> bool:
    """Whether the verb was asked to be scheduled rather than run."""
    return any(
        getattr(args, name, None) is not None
        for name in ("schedule_at", "schedule_every", "schedule_cron")
    )


def record(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    """Record the verb of `argv` as a schedule, once everything that can be checked
    without running it is right; print its id and next run."""
    from p2v.jobs import schedules, triggers
    from p2v.jobs.journal import Journal

    now = time.time()
    trigger = triggers.make(args.schedule_at, args.schedule_every, args.schedule_cron, now)
    args.schedule_check(args)
    verb_argv = without_schedule_options(argv[argv.index(args.verb) + 1 :])
    if requested(parser.parse_args([args.verb, *verb_argv])):  # what each run parses
        raise InputError("--at, --every and --cron cannot be told apart from the command's own")
    journal = Journal()
    try:
        schedule = schedules.add(journal, args.verb, verb_argv, os.getcwd(), trigger, now)
        scheduler = journal.holder(schedules.SCHEDULER_LOCK.key)
    finally:
        journal.close()
    if getattr(args, "json", False):
        print(json.dumps(schedule.to_json(), indent=2))
    else:
        print(f"schedule {schedule.id}: {schedule.command}, {trigger.describe()}")
        print(f"next run {schedules.describe_next(schedule)}")
    if scheduler is None:
        print(
            "p2v: no scheduler runs on this journal: start `p2v scheduler` "
            "(`p2v scheduler --install` makes it a systemd service)",
            file=sys.stderr,
        )
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from p2v.jobs import schedules
    from p2v.jobs.journal import Journal

    if (args.action == "list") != (args.schedule is None):
        raise InputError(
            "schedule list takes no SCHEDULE" if args.schedule
            else f"schedule {args.action} needs a SCHEDULE (`p2v schedule list`)"
        )  # fmt: skip
    journal = Journal()
    try:
        if args.action == "list":
            shown = schedules.every(journal)
        else:
            shown = [schedules.change(journal, args.schedule, args.action, time.time())]
    finally:
        journal.close()
    if args.json:
        listed = [s.to_json() for s in shown]
        print(json.dumps(listed if args.action == "list" else listed[0], indent=2))
        return 0
    for schedule in shown:
        _print(schedule)
    if not shown:
        print(f"no schedules in {journal.path}")
    return 0


def _print(schedule: Schedule) -> None:
    from p2v.jobs.schedules import describe_next

    print(f"{schedule.id}  {schedule.state:<9}  next run {describe_next(schedule):<19}  "
          f"{schedule.trigger.describe()}")  # fmt: skip
    print(f"    {schedule.command}")
    if schedule.last_outcome:
        print(f"    last: {schedule.last_outcome}")
    if schedule.reason:
        print(f"    reason: {schedule.reason}")


def _cmd_scheduler(args: argparse.Namespace) -> int:
    from p2v.jobs import scheduler
    from p2v.jobs.schedules import Policy

    policy = Policy(args.grace, args.retries, args.retry_delay, args.run_timeout)
    if args.install:
        options = ["--grace", f"{args.grace:g}", "--retries", str(args.retries),
                   "--retry-delay", f"{args.retry_delay:g}",
                   "--run-timeout", f"{args.run_timeout:g}"]  # fmt: skip
        if scheduler.install(options, _say):
            return 0
    scheduler.serve(policy, _say)
    return 0


def _say(message: str) -> None:
    print(f"p2v scheduler: {message}", file=sys.stderr, flush=True)
