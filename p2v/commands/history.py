"""`p2v history` and `p2v show`: the journal's jobs, and one job in full."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from typing import TYPE_CHECKING, Any

from p2v.commands.options import count
from p2v.units import format_size, format_time

if TYPE_CHECKING:
    from p2v.jobs.journal import JobRecord, Journal

# What a step's record says that a reader of `p2v show` wants to see.
_STEP_DETAILS = ("error", "digest", "child", "xml", "uri", "line", "booted", "trimmed")


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "history",
        help="list the jobs in the journal",
        description="The latest jobs of every kind (conversions, copies, ...), newest "
        "first: state, when each started and how long it took, what it is and its "
        "outcome, a line each that fits the terminal (--wide: whole, with the job each is "
        "part of). `p2v history JOB` is another name for `p2v show JOB`.",
    )
    p.add_argument("job", nargs="?", metavar="JOB", help="show this job, as `p2v show JOB`")
    p.add_argument("--limit", type=count, default=30, help="how many jobs to list (default 30)")
    p.add_argument("--wide", action="store_true",
                   help="whole lines, with the job each is part of (by default each line "
                   "fits the terminal)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_history)

    p = verbs.add_parser(
        "show",
        help="show one job: its steps, timings, bytes, digests and outcome",
        description="One job of the journal: what it did, its parameters, each step with "
        "its timing and what it found or did, the bytes it moved and their digests, its "
        "outcome, the locks it holds, and the jobs it is made of (a conversion's copies).",
    )
    p.add_argument("job", metavar="JOB", help="a job id, e.g. convert-1a2b3c4d")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_show)


def _cmd_history(args: argparse.Namespace) -> int:
    if args.job:
        return _cmd_show(args)
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        jobs = journal.jobs(args.limit)
    finally:
        journal.close()
    if args.json:
        print(json.dumps([job.to_json() for job in jobs], indent=2))
        return 0
    if not jobs:
        print(f"no jobs in {journal.path}")
        return 0
    if args.wide:
        width = max(len(job.id) for job in jobs)
        print(f"{'JOB':<{width}}  {'STATE':<11}  {'STARTED':<19}  {'TOOK':>8}  "
              f"{'PARENT':<{width}}  WHAT: OUTCOME")  # fmt: skip
        for job in jobs:
            parent = job.parent or "-"
            print(f"{job.id:<{width}}  {job.status:<11}  {format_time(job.created)}  "
                  f"{_took(job):>8}  {parent:<{width}}  {_what(job)}: {outcome(job)}")  # fmt: skip
        return 0
    # Like `virsh list`: a line each that fits the terminal (120 columns when piped).
    columns = max(60, shutil.get_terminal_size((120, 24)).columns)
    width = max(len(job.id) for job in jobs)
    print(f"{'JOB':<{width}}  {'STATE':<11}  {'STARTED':<11}  {'TOOK':>8}  WHAT: OUTCOME")
    for job in jobs:
        started = time.strftime("%m-%d %H:%M", time.localtime(job.created))
        line = (f"{job.id:<{width}}  {job.status:<11}  {started}  {_took(job):>8}  "
                f"{_what(job)}: {outcome(job)}")  # fmt: skip
        print(line if len(line) <= columns else line[: columns - 1] + "…")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        job = journal.get(args.job)
        shown = _shown(journal, job)
    finally:
        journal.close()
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    print(f"{job.id}: {job.kind} job, {job.status}")
    print(f"  what      {_what(job)}")
    if job.parent:
        print(f"  part of   {job.parent}")
    print(f"  started   {format_time(job.created)}, {_took(job)}")
    if job.status == "running" and job.owner:
        print(f"  run by    {job.owner.describe()}")
    if job.settling:
        print(f"  settling  libvirt may still run its step {job.settling!r}")
    if job.status == "running" or (job.interrupted and job.settling):
        for resource in shown["locks"]:
            print(f"  locks     {resource}")
    print(f"  outcome   {outcome(job)}")
    if job.outcome and job.status != "done":
        print(f"  record    {job.outcome}")
    if moved := _bytes(job.result):
        print(f"  bytes     {moved}")
    if shown["steps"]:
        print("  steps")
    for step in shown["steps"]:
        took = f"{step['finished'] - step['started']:.1f} s" if step["finished"] else ""
        print(f"    {step['name']:<14} {step['state']:<8} {took}")
        for key, value in (step["detail"] or {}).items():
            if key in _STEP_DETAILS:
                print(f"        {key}: {value}")
    if shown["children"]:
        print("  made of")
    for child in shown["children"]:
        print(f"    {child['id']}  {child['state']}  {child['what']}: {child['outcome']}")
    return 0


def _shown(journal: Journal, job: JobRecord) -> dict[str, Any]:
    """A job as `p2v show --json` prints it: its record, steps, locks and children."""
    return {
        **job.to_json(),
        "outcome": outcome(job),
        "steps": journal.steps(job.id),
        "locks": journal.locks(job.id),
        "children": [
            {**child.to_json(), "what": _what(child), "outcome": outcome(child)}
            for child in journal.children(job.id)
        ],
    }


def outcome(job: JobRecord) -> str:
    """What came of the job, in a few words."""
    status = job.status
    if status == "running":
        return "running"
    if status == "interrupted":
        if job.parent:
            return f"interrupted, as part of {job.parent}"
        return f"interrupted; go on with `{job.resume}`" if job.resume else "interrupted"
    if status != "done":
        return f"{status}: {job.error}"
    return job.outcome or "done"


def _what(job: JobRecord) -> str:
    return job.what or job.kind


def _bytes(result: dict[str, Any] | None) -> str:
    """A copy's bytes: its size, what it copied, found zero, skipped and read."""
    if not result or "copied" not in result:
        return ""
    parts = [f"{format_size(result['size'])} disk", f"copied {format_size(result['copied'])}"]
    for key, name in (("zeroed", "zeros"), ("skipped", "skipped"), ("read", "read"),
                      ("resumed", "done before")):  # fmt: skip
        if result.get(key):
            parts.append(f"{name} {format_size(result[key])}")
    return ", ".join(parts)


def _took(job: JobRecord) -> str:
    if job.status == "running":
        return f"{_duration(time.time() - job.created)} so far"
    return _duration(job.updated - job.created)


def _duration(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
