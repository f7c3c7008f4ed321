"""The test guest on a test host, through `python -m tests.guests`: started, it counts
on its console (read through libvirt) and on TCP from this machine, dirties memory as
its workload says, and leaves gap-free records on its volume; `stop` leaves neither
domain nor volume. The idle workload here; warm and hot are started, watched and
measured the same way by the migration tests (tests/e2e/test_migrate.py), which
would fail on a guest that did not count, stream, dirty or record as it should."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2v.host import virt
from p2v.host.virt import dirtyrate
from tests import guests, hosts
from tests.conftest import require_root
from tests.fixtures.vmguest import PORT, WORKLOADS, console, records

pytestmark = pytest.mark.slow

OBSERVE_S = 3.0
MIN_TICKS = 10  # of the 30 due in OBSERVE_S: fewer means the counter starves
# MB/s over one second. QEMU counts a page once per period however often it is
# written: warm (100 MiB/s over 64 MiB) shows at most its buffer, hot (as fast as it
# can over 192 MiB) more than warm's buffer could.
DIRTY_MB_PER_S = {"idle": range(0, 16), "warm": range(32, 96), "hot": range(96, 1 << 20)}


@pytest.fixture(scope="module")
def host(vmguest_image: Path) -> Iterator[hosts.TestHost]:
    require_root("test hosts are namespaces")
    with hosts.running(["p2vt-guests"]) as [made]:
        yield made


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.guests", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def console_counter(host: hosts.TestHost, name: str) -> int:
    done = cli("counter", "--host", host.uri, "--name", name, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("workload", ["idle"])
def test_guest_counts_streams_dirties_and_records(
    host: hosts.TestHost, workload: str, record_property: Callable[[str, object], None]
) -> None:
    name = f"p2vt-{workload}"
    ip = str(hosts.SUBNET[200 + WORKLOADS.index(workload)])
    began = time.monotonic()
    started = cli("start", "--host", host.uri, "--name", name, "--workload", workload, "--ip", ip)
    record_property("start_seconds", round(time.monotonic() - began, 1))
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == name
    try:
        before = console_counter(host, name)
        with socket.create_connection((ip, PORT), timeout=10) as client:
            streamed = guests.read_counters(client, OBSERVE_S)
        after = console_counter(host, name)
        assert after - before >= MIN_TICKS, f"{workload}: the counter starved"
        assert len(streamed) >= MIN_TICKS
        assert console.gaps(streamed) == []
        assert before <= streamed[0] and streamed[-1] <= after  # one counter, two outlets
        with virt.connection(host.uri) as conn:
            domain = virt.find(conn, name)
            rate = dirtyrate.dirty_rate(domain, seconds=1)
            virt.destroy(domain)
        record_property("dirty_mb_per_s", rate)
        assert rate in DIRTY_MB_PER_S[workload], f"{workload} dirtied {rate} MB/s"
        written = records.check(guests.disk_records(host.uri, name))
        assert written.problems == ()
        assert written.count >= OBSERVE_S
    finally:
        stopped = cli("stop", "--host", host.uri, "--name", name, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    with virt.connection(host.uri) as conn:
        assert virt.lookup(conn, name) is None
        assert virt.volume(virt.pool(conn, guests.POOL), guests.volume_name(name)) is None


def test_mistakes_are_one_line_and_change_nothing(host: hosts.TestHost) -> None:
    missing = cli("counter", "--host", host.uri, "--name", "p2vt-nobody", timeout=60)
    assert missing.returncode == 2
    assert "no virtual machine named 'p2vt-nobody'" in missing.stderr
    gone = cli("stop", "--host", host.uri, "--name", "p2vt-nobody", timeout=60)
    assert gone.returncode == 2 and "no test guest 'p2vt-nobody'" in gone.stderr
    bad_ip = cli("start", "--host", host.uri, "--name", "p2vt-bad", "--ip", "10.253.0.300")
    assert bad_ip.returncode == 2 and "--ip 10.253.0.300" in bad_ip.stderr
    with virt.connection(host.uri) as conn:
        assert virt.lookup(conn, "p2vt-bad") is None
