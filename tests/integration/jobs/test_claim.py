"""Processes that take a job over at the same moment: one gets it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from p2v.jobs.journal import Journal

# Each contender waits for the same instant, claims the job, and stays alive a while
# when it got it, as a resumed job's process does.
CONTENDER = """
import sys, time
from pathlib import Path
from p2v.errors import BusyError
from p2v.jobs.journal import Journal

path, job, at = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
journal = Journal(path)
time.sleep(max(0.0, at - time.time()))
try:
    journal.claim(job, "copy")
except BusyError as e:
    print("busy", e, flush=True)
else:
    print("won", flush=True)
    time.sleep(3)
"""


def test_of_processes_that_claim_a_job_at_once_exactly_one_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    job = journal.create("copy", {})
    journal.fail(job.id, "interrupted")
    at = time.time() + 1.5  # after every contender has started and opened the journal
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(path), job.id, str(at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    said = [c.communicate(timeout=30)[0].strip() for c in contenders]
    assert all(c.returncode == 0 for c in contenders), said
    (winner,) = [c for c, line in zip(contenders, said, strict=True) if line == "won"]
    refused = [line for line in said if line != "won"]
    assert len(refused) == 3
    for line in refused:
        assert line.startswith(f"busy job {job.id} is still running in process {winner.pid} ")
    claimed = journal.get(job.id)
    assert claimed.owner is not None and claimed.owner.pid == winner.pid
    journal.close()
