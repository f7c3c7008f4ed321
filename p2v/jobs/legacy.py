"""Words for jobs recorded before schema 4, which kept no `what` or `outcome`: run
once, by the migration to schema 4, from what those jobs recorded (the params and
result shapes of that time). Jobs recorded since say it themselves, through their
kind (p2v.jobs.runner.Kind); nothing else reads this."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

_RESUMABLE = ("copy", "convert", "migrate")


def describe_jobs(db: sqlite3.Connection) -> None:
    rows = db.execute("SELECT id, kind, state, params, result FROM jobs").fetchall()
    for job_id, kind, state, params, result in rows:
        p, r = json.loads(params), json.loads(result) if result else {}
        db.execute(
            "UPDATE jobs SET what = ?, outcome = ?, resume = ? WHERE id = ?",
            (_what(kind, p, r), _outcome(kind, state, r),
             f"p2v {kind} --resume {job_id}" if kind in _RESUMABLE else None, job_id),
        )  # fmt: skip


def _what(kind: str, p: dict[str, Any], r: dict[str, Any]) -> str:
    if kind == "convert":
        source = p.get("source") or {}
        name = r.get("plan", {}).get("profile", {}).get("name")
        name = name or p.get("options", {}).get("name") or p.get("name") or "?"
        where = (
            f"the agent at {source['agent']}" if "agent" in source
            else ", ".join(source.get("disks") or [str(d.get("name", "?"))
                                                    for d in p.get("disks", [])])
        )  # fmt: skip
        return f"{name} from {where}"
    if kind in ("copy", "migrate"):
        q = p.get("request", {})
        if kind == "copy":
            return f"{q.get('source')} -> {q.get('target')}"
        mode = "live" if p.get("live") else "cold"
        return f"{q.get('vm')}: {q.get('source')} -> {q.get('destination')} ({mode})"
    if kind == "run":
        return f"{p.get('command', '?')} (schedule {p.get('schedule', '?')})"
    return kind


def _outcome(kind: str, state: str, r: dict[str, Any]) -> str | None:
    if kind == "migrate" and r:
        parts = [f"in {r.get('total_s', r.get('elapsed_s'))} s"]
        if r.get("downtime_ms") is not None:
            parts.append(f"downtime {r['downtime_ms']} ms")
        if r.get("bytes"):
            parts.append(f"{r['bytes']} bytes moved")
        return ", ".join(parts)
    if state != "done":
        return None
    if r.get("dry_run"):
        return "planned (dry run)"
    if r.get("defined"):
        return f"defined in {r['defined']}"
    if r.get("xml"):
        return f"written: {r['xml']}"
    return str(r["digest"]) if r.get("digest") else None
