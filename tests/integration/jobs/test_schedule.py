"""Recording schedules from the command line, and `p2v schedule` on them."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import tzlocal

from tests.integration.transfer.disks import p2v


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("P2V_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def iso(seconds_from_now: float) -> str:
    return (datetime.now().astimezone() + timedelta(seconds=seconds_from_now)).isoformat(
        timespec="seconds"
    )


REFUSED = [
    (["copy", "a.raw", "b.raw", "--at", "2020-01-01T00:00"], "--at 2020-01-01T00:00: that time"),
    (["copy", "a.raw", "b.raw", "--at", "soon"], "--at soon: not a time"),
    (["copy", "a.raw", "b.raw", "--cron", "0 0 * *"], "--cron '0 0 * *': 4 fields, not 5"),
    (["copy", "a.raw", "b.raw", "--cron", "0 25 * * *"], "--cron '0 25 * * *': Error validating"),
    (["copy", "a.raw", "b.raw", "--every", "10"], "--every 10: not an interval"),
    (["copy", "a.raw", "b.raw", "--every", "1h", "--cron", "0 * * * *"], "give one of them"),
    (["copy", "a.raw", "--at", "12:00"], "copy needs SRC and DST"),
    (["copy", "--resume", "copy-1", "a.raw", "--every", "1h"], "--resume takes the job's own"),
    (["convert", "--disk", "a.img", "--every", "1d"], "choose one target"),
]


@pytest.mark.parametrize(("argv", "says"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_schedule_that_cannot_be_is_refused_and_nothing_recorded(
    home: Path, argv: list[str], says: str
) -> None:
    done = p2v(*argv, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.splitlines()[0]]
    assert says in done.stderr and "Traceback" not in done.stderr
    assert p2v("schedule", "list").stdout.startswith("no schedules")


def test_a_schedule_is_recorded_with_its_command_and_changed_by_hand(home: Path) -> None:
    at = iso(3600)
    made = p2v("copy", "a.raw", "--at", at, "--every", "1d", "--bwlimit", "8M", "b-{date}.raw",
               "--json")  # fmt: skip
    schedule = json.loads(made.stdout)
    argv = ["a.raw", "--bwlimit", "8M", "b-{date}.raw", "--json"]
    assert (schedule["verb"], schedule["argv"]) == ("copy", argv)
    assert schedule["cwd"] == str(home)  # relative paths are from here
    assert schedule["state"] == "active" and schedule["trigger"]["every"] == 86400
    assert abs(schedule["next_run"] - datetime.fromisoformat(at).timestamp()) < 1
    assert "no scheduler runs on this journal: start `p2v scheduler`" in made.stderr
    text = p2v("copy", "x.raw", "y.raw", "--overwrite", "--cron", "*/5 * * * *").stdout
    assert text.startswith("schedule sched-")
    zone = f" ({tzlocal.get_localzone_name()})"
    assert f": p2v copy x.raw y.raw --overwrite, cron '*/5 * * * *'{zone}\nnext run " in text

    sid = schedule["id"]
    paused = json.loads(p2v("schedule", "pause", sid, "--json").stdout)
    assert (paused["state"], paused["reason"]) == ("paused", "paused by hand")
    again = p2v("schedule", "pause", sid, check=False)
    assert again.returncode == 2 and f"schedule {sid} is paused already" in again.stderr
    assert json.loads(p2v("schedule", "resume", sid, "--json").stdout)["state"] == "active"
    p2v("schedule", "cancel", sid)
    listed = json.loads(p2v("schedule", "list", "--json").stdout)
    assert [(s["id"], s["state"], s["next_run"]) for s in listed][0] == (sid, "cancelled", None)
    lines = p2v("schedule", "list").stdout.splitlines()
    assert lines[0].startswith(f"{sid}  cancelled  next run -")
    assert lines[1] == "    p2v copy a.raw --bwlimit 8M 'b-{date}.raw' --json"
    missing = p2v("schedule", "cancel", check=False)
    assert missing.returncode == 2 and "schedule cancel needs a SCHEDULE" in missing.stderr
    unknown = p2v("schedule", "pause", "sched-00000000", check=False)
    assert unknown.returncode == 2 and "no schedule 'sched-00000000'" in unknown.stderr
    assert time.time() < schedule["next_run"]
