"""`python -m tests.guests` on a test host: its mistakes. The guest it starts is
started, watched (console counter, TCP stream, dirty rate, disk records) and stopped
through it by the migration tests (tests/e2e/test_migrate.py), one guest of each
workload, which fail on a guest that does not count, stream, dirty or record as it
should, or a `stop` that leaves a domain or volume behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2v.host import virt
from tests import hosts
from tests.conftest import require_root

pytestmark = pytest.mark.slow


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
