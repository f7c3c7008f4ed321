"""A virtual machine locked by a job in another process, alive and then killed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from p2v.errors import BusyError
from p2v.jobs.journal import Journal, vm_resource

WEB1 = vm_resource("qemu+tcp://10.0.0.2/system", "web1")

# A conversion in another process that has reached its define step.
HOLDER = f"""
import sys, time
from pathlib import Path
from p2v.jobs.journal import Journal

journal = Journal(Path(sys.argv[1]))
job = journal.create("convert", {{}})
journal.lock({WEB1!r}, job.id)
print(job.id, flush=True)
time.sleep(60)
"""


def test_a_second_job_on_a_locked_machine_is_refused_until_the_first_is_gone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    journal = Journal(path)
    try:
        assert holder.stdout is not None
        first = holder.stdout.readline().strip()
        second = journal.create("migrate", {})
        with pytest.raises(BusyError) as refused:
            journal.lock(WEB1, second.id)
        assert str(refused.value).startswith(
            f"{WEB1} is locked by job {first} (a convert job), still running in process "
            f"{holder.pid} (running since "
        )
        assert journal.locks(first) == [WEB1]
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        journal.lock(WEB1, second.id)  # its holder is gone: free again
        assert journal.locks(second.id) == [WEB1] and journal.locks(first) == []
    finally:
        holder.kill()
        holder.wait(10)
        journal.close()
