"""`p2v snapshot` on a test host, with the test guest: snapshots taken while it counts
(the pause recorded, and seen by a TCP client of its counter), refusals that change
nothing, the tree, a revert that brings the counter back to the snapshot's value and
the disk to that instant's records, a delete that merges a snapshot away while the
other stays revertible, the UEFI variables of each snapshot back with it, nothing left
once all are deleted, and a scheduled rotation keeping exactly N. One boot of the
guest's UEFI form serves it all (TCG)."""

from __future__ import annotations

import json
import posixpath
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2v.host import virt
from p2v.host.virt import domains, storage
from p2v.host.virt.domainxml import DomainXml
from tests import guests, hosts
from tests.conftest import require_root
from tests.fixtures.vmguest import records
from tests.integration.transfer.disks import p2v

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAME, IP = "p2vt-snap", "10.253.0.213"
PER_S = 10  # counter values a second


@pytest.fixture(scope="module")
def host(vmguest_image: Path) -> Iterator[hosts.TestHost]:
    require_root("test hosts are namespaces")
    with hosts.running(["p2vt-snap-a"]) as [a]:
        yield a


@pytest.fixture
def guest(host: hosts.TestHost) -> Iterator[Callable[..., None]]:
    """Start a test guest (`uefi`: booted by OVMF); each is removed again, with what a
    failed run left of its snapshots in the pool."""
    started = []

    def start(name: str, ip: str, *options: str) -> None:
        started.append(name)
        made = subprocess.run(
            [sys.executable, "-m", "tests.guests", "start", "--host", host.uri, "--name", name,
             "--ip", ip, *options], capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr

    yield start
    for name in started:
        guests.stop_anywhere([host.uri], name)
        with virt.connection(host.uri) as conn:
            pool = virt.pool(conn, guests.POOL)
            storage.refresh(pool)
            for vol in pool.listAllVolumes():
                if vol.name().startswith(f"{name}."):
                    storage.delete_volume(vol)


def snapshot(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`p2v snapshot ARGS`."""
    return p2v("snapshot", *args, check=check, timeout=300)


def taken(
    host: hosts.TestHost, watch: guests.CounterWatch, name: str, vm: str = NAME
) -> tuple[int, dict[str, Any]]:
    """Take snapshot `name` while `watch` reads the counter: the counter's value at the
    snapshot (the last one before the longest silence, when the guest stood still),
    and the job's record."""
    began = time.monotonic()
    record = json.loads(snapshot("create", vm, name, "-c", host.uri, "--json").stdout)
    assert watch.wait_for_more(5, 30)
    during = [(at, v) for at, v in watch.seen if at >= began]
    gaps = [(b[0] - a[0], a[1]) for a, b in zip(during, during[1:], strict=False)]
    longest, value = max(gaps)
    # What the job measured is what the guest's client saw, give or take its sampling.
    assert record["paused_ms"] is not None and record["paused_ms"] < longest * 1000 + 500
    return value, record


def first_value(ip: str) -> int:
    """The counter's value as a new client sees it now."""
    with guests.CounterWatch(ip) as watch:
        assert watch.wait_for_more(3, 30), "the guest does not count"
        return watch.values[0]


def last_record(uri: str, vm: str = NAME) -> int:
    """The last record on the guest's disk, once it is stopped (all of them checked)."""
    with virt.connection(uri) as conn:
        virt.destroy(virt.find(conn, vm))
    found = records.check(guests.disk_records(uri, vm))
    assert found.problems == (), found.problems
    return found.last


def nvram_bytes(uri: str, vm: str, suffix: str = "") -> bytes:
    """The guest's UEFI variable store (or the file beside it ending in `suffix`), read
    through the host's libvirt."""
    with virt.connection(uri) as conn:
        path = domains.nvram(virt.find(conn, vm))
        assert path, f"{vm} has no UEFI variable store"
        with storage.file_volume(conn, path + suffix) as vol:
            assert vol is not None, f"no {path + suffix} on {uri}"
            return storage.read(conn, vol, 0, storage.length(vol))


def test_snapshots_taken_live_revert_to_their_instant_and_delete_merging(
    host: hosts.TestHost, guest: Callable[..., None]
) -> None:
    """On the UEFI form of the test guest, whose variable store a snapshot keeps too."""
    guest(NAME, IP, "--uefi")
    with guests.CounterWatch(IP) as watch:
        assert watch.wait_for_more(5, 30)
        c1, first = taken(host, watch, "s1")
        assert first["memory"] is True and first["nvram"].endswith("_VARS.fd.s1")
        time.sleep(6)
        c2, _ = taken(host, watch, "s2")
    assert c2 - c1 >= 5 * PER_S
    at_s1_nvram = nvram_bytes(host.uri, NAME, ".s1")
    # Refused, and nothing changed: a name that exists, a revert of a running guest.
    again = snapshot("create", NAME, "s2", "-c", host.uri, check=False)
    assert again.returncode == 2 and f"{NAME} has a snapshot named 's2' already" in again.stderr
    running = snapshot("revert", NAME, "s1", "-c", host.uri, check=False)
    assert running.returncode == 2 and "add --force" in running.stderr
    tree = snapshot("list", NAME, "-c", host.uri, "--tree").stdout.splitlines()
    assert tree[0].startswith("s1  ") and tree[1].startswith("└─ s2  ")
    assert tree[1].endswith("(current)") and "memory + disks" in tree[0]

    # Back to s1 with --force: the guest counts on from s1's value, its disk holds
    # s1's records, its UEFI variables are s1's (changed since, as a firmware update
    # or a new boot entry would).
    change_nvram(host.uri)
    assert nvram_bytes(host.uri, NAME) != at_s1_nvram
    snapshot("revert", NAME, "s1", "-c", host.uri, "--force")
    assert nvram_bytes(host.uri, NAME) == at_s1_nvram
    value = first_value(IP)
    assert c1 <= value < c1 + 8 * PER_S and value < c2, (c1, value, c2)
    at_s1 = last_record(host.uri)

    # s1 cannot go while it is current with a child; once s2 is, it is merged away
    # (live) and s2 stays revertible.
    busy = snapshot("delete", NAME, "s1", "-c", host.uri, check=False)
    assert busy.returncode == 2 and "current snapshot and has children (s2)" in busy.stderr
    snapshot("revert", NAME, "s2", "-c", host.uri)  # shut off: no --force needed
    snapshot("delete", NAME, "s1", "-c", host.uri)
    listed = json.loads(snapshot("list", NAME, "-c", host.uri, "--json").stdout)
    assert [s["name"] for s in listed] == ["s2"] and listed[0]["parent"] is None
    snapshot("revert", NAME, "s2", "-c", host.uri, "--force")
    value = first_value(IP)
    assert c2 <= value < c2 + 8 * PER_S, (c2, value)
    at_s2 = last_record(host.uri)
    # A record a second: what the disk gained between the two snapshots.
    assert abs((at_s2 - at_s1) - (c2 - c1) / PER_S) <= 3, (at_s1, at_s2, c1, c2)

    snapshot("delete", NAME, "s2", "-c", host.uri)
    assert snapshot("list", NAME, "-c", host.uri).stdout.strip() == f"{NAME} has no snapshots"
    with virt.connection(host.uri) as conn:
        domain = virt.find(conn, NAME)
        disk = DomainXml.parse(domain.XMLDesc()).disks[0].source
        assert disk.endswith(f"/{guests.volume_name(NAME)}"), "back on its own volume"
        pool = virt.pool(conn, guests.POOL)
        storage.refresh(pool)
        left = [v.name() for v in pool.listAllVolumes() if v.name().startswith(f"{NAME}.s")]
        assert left == [], f"files of deleted snapshots left: {left}"
        nvram = domains.nvram(domain)
        assert nvram
        with storage.directory_pool(conn, posixpath.dirname(nvram)) as there:
            storage.refresh(there)
            copies = [v.name() for v in there.listAllVolumes() if ".fd." in v.name()]
            assert copies == [], f"UEFI variables of deleted snapshots left: {copies}"
    jobs = [j for j in json.loads(p2v("history", "--json").stdout)
            if j["kind"] == "snapshot" and j["params"]["request"]["vm"] == NAME]  # fmt: skip
    assert [j["state"] for j in jobs] == ["done"] * 7  # the refusals recorded nothing

    # A rotation on a schedule (disks only, the guest is shut off): after three runs,
    # exactly the two newest of its snapshots are there.
    made = snapshot("create", NAME, "rot", "--keep", "2", "--disk-only", "-c", host.uri,
                    "--every", "3s", "--json")  # fmt: skip
    schedule = json.loads(made.stdout)["id"]
    runs = scheduled_runs(schedule, 3)
    assert len(runs) >= 3 and all(run["state"] == "done" for run in runs), runs
    kept = json.loads(snapshot("list", NAME, "-c", host.uri, "--json").stdout)
    made_by = [child for run in runs for child in run["result"]["jobs"]]
    names = [p2v_show(job)["result"]["name"] for job in made_by]
    assert [s["name"] for s in kept] == names[-2:], (kept, names)


def p2v_show(job: str) -> dict[str, Any]:
    return dict(json.loads(p2v("show", job, "--json").stdout))


def scheduled_runs(schedule: str, count: int) -> list[dict[str, Any]]:
    """`p2v scheduler` running until `count` runs of the schedule have ended; then the
    schedule is paused and the run under way, if any, ends on its own. Every run of
    it, oldest first."""
    scheduler = subprocess.Popen([sys.executable, "-m", "p2v.cli", "scheduler"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def runs() -> list[dict[str, Any]]:
        listed = json.loads(p2v("history", "--json", "--limit", "200").stdout)
        return [j for j in listed if j["kind"] == "run" and j["schedule"] == schedule][::-1]

    try:
        deadline = time.monotonic() + 120
        while len([r for r in runs() if r["state"] != "running"]) < count:
            assert time.monotonic() < deadline, f"not {count} runs of {schedule} in 120 s"
            time.sleep(0.5)
        p2v("schedule", "pause", schedule)
        time.sleep(3)  # the scheduler reads the schedules every 2 s
        while any(r["state"] == "running" for r in runs()):
            assert time.monotonic() < deadline, f"a run of {schedule} does not end"
            time.sleep(0.5)
        return runs()
    finally:
        scheduler.send_signal(signal.SIGINT)
        scheduler.wait(30)


def change_nvram(uri: str) -> None:
    """Stop the guest and write over the start of its UEFI variable store."""
    with virt.connection(uri) as conn:
        domain = virt.find(conn, NAME)
        virt.destroy(domain)
        path = domains.nvram(domain)
        assert path
        with storage.file_volume(conn, path) as vol:
            storage.write(conn, vol, 0, bytes(4096))
