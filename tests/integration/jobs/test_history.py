"""`p2v history` and `p2v show` on jobs that real copies recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from p2v.convert.pipeline import KIND as CONVERT
from p2v.jobs.journal import Journal
from p2v.jobs.runner import Run
from p2v.transfer.jobs import KIND as COPY
from tests.integration.transfer.disks import MiB, copy_json, digest, make_disk, p2v


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("P2V_HOME", str(tmp_path / "state"))
    return tmp_path


def test_history_lists_jobs_of_every_kind_and_show_tells_one_in_full(home: Path) -> None:
    source = home / "source.raw"
    make_disk(source, 16 * MiB, [(MiB, 3 * MiB)])
    copied = copy_json(str(source), str(home / "target.raw"))
    failed = p2v("copy", str(home / "gone.raw"), str(home / "x.raw"), check=False)
    assert failed.returncode == 2  # refused before it started: not a job
    journal = Journal()
    try:  # a conversion and the copy it is made of, as their kinds record them
        made = Run.start(CONVERT, {"source": {"disks": [str(source)]},
                                   "options": {"name": "web1"}}, journal, print)  # fmt: skip
        conversion = journal.get(made.job_id)
        part = journal.get(Run.start(COPY, {"request": {"source": "a", "target": "b"}},
                                     journal, print, conversion.id).job_id)  # fmt: skip
        journal.fail(part.id, "No space left on device")
        journal.fail(conversion.id, "No space left on device")
    finally:
        journal.close()

    listed = json.loads(p2v("history", "--json").stdout)
    assert [(j["id"], j["kind"], j["state"], j["parent"]) for j in listed] == [
        (part.id, "copy", "failed", conversion.id),
        (conversion.id, "convert", "failed", None),
        (copied["job_id"], "copy", "done", None),
    ]
    short = p2v("history", env={**os.environ, "COLUMNS": "120"}).stdout.splitlines()
    assert short[0].split() == ["JOB", "STATE", "STARTED", "TOOK", "WHAT:", "OUTCOME"]
    assert all(len(line) <= 120 for line in short) and short[3].endswith("…")
    assert short[1].startswith(part.id) and short[1].endswith(
        "a -> b: failed: No space left on device"
    )
    lines = p2v("history", "--wide").stdout.splitlines()
    assert lines[0].split() == ["JOB", "STATE", "STARTED", "TOOK", "PARENT", "WHAT:", "OUTCOME"]
    assert lines[1].startswith(part.id) and f" {conversion.id} " in lines[1]
    assert lines[1].endswith("a -> b: failed: No space left on device")
    assert lines[3].endswith(f"{source} -> {home / 'target.raw'}: {copied['digest']}")

    shown = json.loads(p2v("show", copied["job_id"], "--json").stdout)
    assert shown["result"]["digest"] == copied["digest"] == digest(source)
    assert shown["result"]["copied"] == 3 * MiB
    assert (shown["outcome"], shown["children"]) == (copied["digest"], [])
    assert [(s["name"], s["state"]) for s in shown["steps"]] == [("copy", "done")]
    text = p2v("show", copied["job_id"]).stdout
    assert f"outcome   {copied['digest']}" in text
    assert "bytes     16.0 MiB disk, copied 3.0 MiB, zeros 13.0 MiB, read 3.0 MiB" in text
    assert p2v("history", copied["job_id"]).stdout == text  # the older name of `show`

    parent = json.loads(p2v("show", conversion.id, "--json").stdout)
    assert [(c["id"], c["what"], c["outcome"]) for c in parent["children"]] == [
        (part.id, "a -> b", "failed: No space left on device")
    ]
    assert f"made of\n    {part.id}  failed  a -> b" in p2v("show", conversion.id).stdout
    unknown = p2v("show", "copy-00000000", check=False)
    assert unknown.returncode == 2 and "no job 'copy-00000000'" in unknown.stderr


def test_history_lists_jobs_whose_parameters_it_does_not_know(home: Path) -> None:
    """Jobs recorded by older versions, or with parameters of another shape, are listed
    as well as can be, never a traceback."""
    journal = Journal()
    try:
        for kind, params in [("convert", {}), ("convert", {"disks": [{}]}), ("copy", {}),
                             ("run", {}), ("backup", {"x": 1})]:  # fmt: skip
            journal.fail(journal.create(kind, params).id, "stopped")
    finally:
        journal.close()
    lines = p2v("history").stdout.splitlines()
    assert len(lines) == 6 and all(line.endswith("failed: stopped") for line in lines[1:])
    assert json.loads(p2v("history", "--json").stdout)[0]["kind"] == "backup"
