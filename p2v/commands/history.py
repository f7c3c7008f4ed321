"""`p2v history`: the journal's jobs, and the steps of one."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from p2v.commands.options import count


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "history",
        help="list the jobs in the journal, or show one with its steps",
        description="Without JOB: the latest jobs (conversions, copies) with their state. "
        "With JOB: its parameters, steps (timing, what each found or did) and result.",
    )
    p.add_argument("job", nargs="?", metavar="JOB", help="a job id, e.g. convert-1a2b3c4d")
    p.add_argument("--limit", type=count, default=30, help="how many jobs to list (default 30)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_history)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _what(job: Any) -> str:
    params = job.params
    if job.kind == "convert":
        from p2v.convert.sources import describe

        if "source" not in params:  # recorded by an earlier version
            return f"{params.get('name')} ({', '.join(d['name'] for d in params['disks'])})"
        name = (job.result or {}).get("plan", {}).get("profile", {}).get("name")
        name = name or params["options"].get("name") or "?"
        return f"{name} from {describe(params['source'])}"
    if job.kind == "copy":
        request = params.get("request", {})
        return f"{request.get('source')} -> {request.get('target')}"
    return ""


def _cmd_history(args: argparse.Namespace) -> int:
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        if args.job:
            job = journal.get(args.job)
            steps = journal.steps(job.id)
            if args.json:
                print(json.dumps({**job.to_json(), "steps": steps}, indent=2))
                return 0
            print(f"{job.id}  {job.kind}  {job.status}  {_when(job.created)}  {_what(job)}")
            for step in steps:
                took = f"{step['finished'] - step['started']:.1f} s" if step["finished"] else ""
                print(f"  {step['name']:<14} {step['state']:<8} {took}")
                for key, value in (step["detail"] or {}).items():
                    if key in ("error", "digest", "copy_job", "xml", "line", "booted", "trimmed"):
                        print(f"      {key}: {value}")
            if job.error:
                print(f"  error: {job.error}")
            return 0
        jobs = journal.jobs(args.limit)
        if args.json:
            print(json.dumps([j.to_json() for j in jobs], indent=2))
            return 0
        for job in jobs:
            print(f"{job.id:<18} {job.status:<11} {_when(job.created)}  {_what(job)}")
        if not jobs:
            print(f"no jobs in {journal.path}")
    finally:
        journal.close()
    return 0
