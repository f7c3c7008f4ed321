"""A virtual machine locked by a job in another process, alive and then killed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from p2v.errors import BusyError
from p2v.jobs.journal import Journal, vm_lock
from tests.conftest import require_root

WEB1_UUID = "5d2a1f6e-1111-4111-8111-000000000001"
WEB1 = vm_lock("8f0c3e4a-0000-4000-8000-00000000000a", WEB1_UUID, "web1 on a")

# A conversion in another process that has reached its define step.
HOLDER = f"""
import sys, time
from pathlib import Path
from p2v.jobs.journal import Journal, Lock

journal = Journal(Path(sys.argv[1]))
job = journal.create("convert", {{}})
journal.lock(Lock({WEB1.key!r}, {WEB1.label!r}), job.id)
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
            f"{WEB1.label} is locked by job {first} (a convert job), still running in process "
            f"{holder.pid} (running since "
        )
        assert journal.locks(first) == [WEB1.label]
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        journal.lock(WEB1, second.id)  # its holder is gone: free again
        assert journal.locks(second.id) == [WEB1.label] and journal.locks(first) == []
    finally:
        holder.kill()
        holder.wait(10)
        journal.close()


def test_one_host_reached_by_two_uris_is_one_lock() -> None:
    """As root, qemu:///session and qemu:///system reach one libvirt: a VM locked
    through one is locked through the other (the key is the host's UUID, not the URI)."""
    require_root("qemu:///session is the system daemon only for root")
    from p2v.host import virt

    keys = []
    for uri in ("qemu:///session", "qemu:///system"):
        with virt.connection(uri) as conn:
            keys.append(vm_lock(virt.identity(conn).uuid, WEB1_UUID, f"web1 on {uri}").key)
    assert keys[0] == keys[1]
