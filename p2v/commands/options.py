"""Options several verbs share, so that they read and behave the same everywhere."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from p2v.errors import InputError
from p2v.transfer import DEFAULT_CHECKPOINT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT
from p2v.units import parse_size


class HelpLayout(argparse.HelpFormatter):
    """Help whose paragraphs are wrapped to the terminal, and whose text laid out by
    hand (with line breaks: the table of exit codes) is kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def rate(text: str) -> int:
    """Bytes per second, as --bwlimit takes them: 50M, 1G, above 0."""
    try:
        value = parse_size(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a rate is above 0 (for example 50M)")
    return value


def port(text: str) -> int:
    """A TCP port: 1 to 65535."""
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1 to 65535)")
    return int(text)


def count(text: str) -> int:
    """A whole number above 0."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def add_checkpoint_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        type=seconds,
        default=DEFAULT_CHECKPOINT,
        metavar="SECONDS",
        help="flush the target and record the finished blocks this often (default "
        f"{DEFAULT_CHECKPOINT:.0f}): after a crash, --resume copies again at most this "
        "much work; each flush holds the copy up while the disk writes out its cache",
    )


def add_connect_timeout_option(p: argparse.ArgumentParser, default: float | None) -> None:
    """`default` None: the option only overrides what a resumed job recorded."""
    p.add_argument(
        "--connect-timeout",
        type=seconds,
        default=default,
        metavar="SECONDS",
        help="time limit of each stage of connecting to a server or agent: the TCP "
        f"connection, the TLS handshake, the NBD negotiation (default "
        f"{DEFAULT_CONNECT_TIMEOUT:g})",
    )


def add_timeout_options(p: argparse.ArgumentParser, resumable: bool = True) -> None:
    """--connect-timeout and --io-timeout. For a verb with --resume the defaults are
    None, so that a resumed job keeps its own unless they are given."""
    add_connect_timeout_option(p, None if resumable else DEFAULT_CONNECT_TIMEOUT)
    p.add_argument(
        "--io-timeout",
        type=seconds,
        default=None if resumable else DEFAULT_IO_TIMEOUT,
        metavar="SECONDS",
        help="fail when a server or agent sends no reply for this long in the middle of "
        f"a copy (default {DEFAULT_IO_TIMEOUT:g}); a copy that fails so can be resumed",
    )


def add_schedule_options(
    p: argparse.ArgumentParser, check: Callable[[argparse.Namespace], None]
) -> None:
    """--at, --every and --cron for a verb that makes a job: with one of them the verb
    is not run but recorded as a schedule, once `check` (the verb's own checks of its
    arguments, made without running it) has passed."""
    _schedule_options(p.add_argument_group("schedule it instead (`p2v scheduler` runs it)"))
    p.set_defaults(schedule_check=check)


def without_schedule_options(argv: list[str]) -> list[str]:
    """A verb's arguments without --at, --every and --cron: what each run is given."""
    parser = argparse.ArgumentParser(add_help=False)
    _schedule_options(parser)
    return parser.parse_known_args(argv)[1]


def _schedule_options(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--at",
        dest="schedule_at",
        metavar="TIME",
        help="run at TIME: HH:MM (the next one, today or tomorrow, local time) or ISO 8601 "
        "(2025-06-01T02:00, local time unless it ends in Z or +HH:MM)",
    )
    group.add_argument(
        "--every",
        dest="schedule_every",
        metavar="INTERVAL",
        help="run every INTERVAL (30s, 10m, 1h, 1d), from --at or from now",
    )
    group.add_argument(
        "--cron",
        dest="schedule_cron",
        metavar="EXPR",
        help="run when the crontab line EXPR says (5 fields, local time: '30 2 * * *')",
    )


def say(message: str) -> None:
    """What a job says as it goes: one line on stderr, stdout kept for the result."""
    print(f"p2v: {message}", file=sys.stderr, flush=True)


def run_or_resume(args: argparse.Namespace, job: Any, request: Any) -> int:
    """A job kind whose module has `run(request, journal, say)`, `resume(job_id,
    journal, say)` and `summary(record)`: the new job `request` (None: `--resume JOB`),
    then how it ended."""
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        if request is None:
            job_id, record = job.resume(args.resume, journal, say)
        else:
            job_id, record = job.run(request, journal, say)
    finally:
        journal.close()
    return print_job(args, job_id, record, job.summary)


def print_job(
    args: argparse.Namespace, job_id: str, record: dict[str, Any], summary: Callable[..., str]
) -> int:
    """How a job that ended is printed: its record as JSON with --json, else `job ID:`
    and its summary in words."""
    if args.json:
        import json

        print(json.dumps({"job": job_id, **record}))
    else:
        print(f"job {job_id}: {summary(record)}")
    return 0


def job_reporter(args: argparse.Namespace) -> Any:
    """A progress bar for a person at a terminal; nothing for --json or a pipe."""
    from p2v.transfer.progress import BarReporter, QuietReporter

    if args.json or not sys.stderr.isatty():
        return QuietReporter()
    return BarReporter()
