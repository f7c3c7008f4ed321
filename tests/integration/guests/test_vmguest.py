"""The test guest under plain QEMU (TCG): it boots from its disk alone, counts on its
console and on TCP, dirties memory as its workload says and appends records to its
disk; a restart counts from 1 again while its records carry on."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import guests
from tests.conftest import free_port
from tests.fixtures.vmguest import Settings, boot, console, records

pytestmark = pytest.mark.slow

OBSERVE_S = 3.0
# Of the 30 ticks due in OBSERVE_S: fewer means the counter starves, not a slow host.
MIN_TICKS = 10
SLIRP = Settings(ip="10.0.2.15/24", gw="10.0.2.2")  # QEMU user networking's guest side


@pytest.mark.timeout(300)
# Each workload runs on a test host too (tests/e2e/test_migrate.py); here, without
# libvirt, the busiest one, which most tests the counter's pace.
@pytest.mark.parametrize("workload", ["hot"])
def test_counts_streams_and_records(
    workload: str,
    vmguest_image: Path,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    port = free_port()
    settings = Settings(workload, SLIRP.ip, SLIRP.gw)
    with boot.booted(vmguest_image, settings, tmp_path, port=port) as guest:
        record_property("ready_seconds", round(guest.ready_seconds, 1))
        assert guest.ready["workload"] == workload
        assert guest.ready["ip"] == SLIRP.ip
        assert guest.ready["first_record"] == "1"
        before = guest.wait_for_counter(1, timeout=10)
        # Two clients at once; the second is read after the first, from its socket buffer.
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as first,
            socket.create_connection(("127.0.0.1", port), timeout=10) as second,
        ):
            streamed = guests.read_counters(first, OBSERVE_S)
            streamed_too = guests.read_counters(second, 1.0)
        shown = console.counters(guest.console_text())
    assert shown[0] == 1
    assert console.gaps(shown) == []
    assert shown[-1] - before >= MIN_TICKS, f"{workload}: the counter starved"
    for stream in (streamed, streamed_too):
        assert len(stream) >= MIN_TICKS
        assert console.gaps(stream) == []
        assert set(stream) <= set(shown)  # the same n on TCP as on the console
    written = records.check(records.read_from_image(guest.overlay))
    assert written.problems == ()
    assert written.first == 1
    assert written.count >= 3  # a record a second for more than OBSERVE_S


@pytest.mark.timeout(300)
def test_restart_counts_from_one_and_carries_on_the_records(
    vmguest_image: Path, tmp_path: Path
) -> None:
    with boot.booted(vmguest_image, Settings(), tmp_path) as guest:
        guest.wait_for_counter(25, timeout=30)
    # Killed like a pulled plug; the same disk boots again.
    kept = records.check(records.read_from_image(guest.overlay))
    assert kept.problems == ()
    assert kept.count >= 2
    with boot.booted(vmguest_image, Settings(), tmp_path) as again:
        assert again.ready["first_record"] == str(kept.last + 1)
        again.wait_for_counter(5, timeout=30)
        assert console.counters(again.console_text())[0] == 1
        time.sleep(1.5)  # at least one record of this boot on the disk
    written = records.check(records.read_from_image(again.overlay))
    assert written.problems == ()
    assert written.last > kept.last
