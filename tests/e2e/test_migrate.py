"""`p2v migrate` between two test hosts, with the test guest: live with each workload
(the counter carries on without a lost update, the TCP stream stays open, the disk's
records are all there after the storage copy), a guest too busy for pre-copy finished
by the policy, a migration cancelled and one whose destination dies (the guest keeps
running on the source), a cold migration stopped when its source changes, then
killed and resumed (digests equal, made durable, the source released before the guest
starts there and its disk deleted last), a scheduled one, and the refusals that change
nothing. Guests boot under TCG, so one guest serves several moves: the warm one is
cancelled, loses its destination, then moves; the idle one moves cold, then live on
a schedule.
"""

from __future__ import annotations

import json
import os
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
from tests import guests, hosts
from tests.conftest import require_root
from tests.fixtures.vmguest import records
from tests.integration.transfer.disks import p2v

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# One address per guest: a new guest on an address another had keeps, for a while, this
# machine's ARP entry of the old MAC.
IP = {"p2vt-cold": "10.253.0.210", "p2vt-live-warm": "10.253.0.211",
      "p2vt-live-hot": "10.253.0.212", "p2vt-uefi": "10.253.0.216",
      "p2vt-keep": "10.253.0.217"}  # fmt: skip
# MiB/s over one second, as QEMU samples it before the move (a page written twice in
# the period counts once): warm (100 MiB/s over 64 MiB) shows at most its buffer, hot
# (as fast as it can over 192 MiB) more than warm's buffer could.
DIRTY_MIB_PER_S = {"idle": range(0, 16), "warm": range(32, 96), "hot": range(96, 1 << 20)}
AFTER = 10  # counter values (1 s) that must arrive once the guest runs on the destination


@pytest.fixture(scope="module")
def pair(vmguest_image: Path) -> Iterator[tuple[hosts.TestHost, hosts.TestHost]]:
    require_root("test hosts are namespaces")
    with hosts.running(["p2vt-mig-a", "p2vt-mig-b"]) as [a, b]:
        yield a, b


def uris(pair: tuple[hosts.TestHost, hosts.TestHost]) -> list[str]:
    return [pair[0].uri, pair[1].uri]


@pytest.fixture
def guest(pair: tuple[hosts.TestHost, hosts.TestHost]) -> Iterator[Callable[..., str]]:
    """Start a test guest on the first host; every one started is removed again."""
    started: list[str] = []

    def start(name: str, workload: str = "idle", boot: bool = True, uefi: bool = False) -> str:
        started.append(name)
        if not boot:
            settings = guests.settings_for(workload, IP.get(name), None)
            guests.start(pair[0].uri, name, settings, boot=False, uefi=uefi)
            return name
        # Through the command line a person would use (`python -m tests.guests`).
        made = guests_cli("start", "--host", pair[0].uri, "--name", name, "--workload", workload,
                          "--ip", IP[name], *(["--uefi"] if uefi else []))  # fmt: skip
        assert made.stdout.strip() == name
        return name

    yield start
    for name in started:
        if (where := guests.where(uris(pair), name)) is not None:
            guests_cli("stop", "--host", where, "--name", name)
        guests.stop_anywhere(uris(pair), name)  # a volume left on the other host


def guests_cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "tests.guests", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def migrate(*args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], Any]:
    """`p2v migrate ... --json`: the process and its final record (None if none)."""
    done = p2v("migrate", *args, "--json", check=False, timeout=timeout)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    final = [line for line in lines if line["event"] == "done"]
    return done, final[0] if final else None


def running_on(uri: str, name: str) -> bool:
    with virt.connection(uri) as conn:
        domain = virt.lookup(conn, name)
        return domain is not None and virt.state(domain) == "running"


def check_kept_counting(watch: guests.CounterWatch, before: int) -> None:
    """The guest counted on, on its new host, with nothing lost and the stream open."""
    assert watch.wait_for_more(AFTER, 30), f"the TCP stream stopped: {watch.values[-5:]}"
    assert not watch.closed
    assert watch.lost == [], f"lost or repeated updates: {watch.lost}"
    assert watch.values[-1] > before


def moved_live(
    a: hosts.TestHost, b: hosts.TestHost, name: str, workload: str, watch: guests.CounterWatch,
    *extra: str, killed_after: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Move the running guest from a to b, and check what a user cares about: it counted
    on there without a lost update, its TCP stream stayed open, the record says what
    was measured, and the source let it go. `killed_after`: p2v is killed (-9) this
    many seconds into the migration, and one `--resume` finishes it. The record."""
    before = watch.values[-1]
    argv = [name, "-c", a.uri, "--to", b.uri, "--live", "--delete-source", *extra]
    if killed_after is None:
        done, record = migrate(*argv)
        said = done.stderr
    else:
        first = _start_migrate(*argv)
        job = _wait_for_step("migrate")
        time.sleep(killed_after)
        first.send_signal(signal.SIGKILL)
        said = first.communicate(timeout=30)[1]
        assert running_on(a.uri, name), "the migration ended before p2v was killed"
        done, record = migrate("--resume", job)
        assert "started before still runs: following it" in done.stderr
    assert done.returncode == 0, done.stderr
    check_kept_counting(watch, before)
    assert record["outcome"] == "done" and record["mode"] == "live"
    assert record["storage_copied"] == ["vda"]
    assert record["downtime_ms"] is not None and record["bytes"] > 0
    assert record["passes"] >= 1 or record.get("followed")
    assert "the guest dirties" in said  # said what to expect before it started
    assert record["prediction"]["dirty_rate"] >> 20 in DIRTY_MIB_PER_S[workload]
    assert running_on(b.uri, name) and guests.where([a.uri], name) is None
    assert record["source_deleted"] == [f"/var/lib/libvirt/images/{guests.volume_name(name)}"]
    with virt.connection(b.uri) as conn:  # 256 MiB, 15 of them data: zeros stay holes
        storage.refresh_all(conn)
        copied = storage.volume_at(conn, f"/var/lib/libvirt/images/{guests.volume_name(name)}")
        assert storage.allocation(copied) < 64 << 20, "the disk's zeros crossed as data"
    shown = json.loads(p2v("show", _last_job("migrate"), "--json").stdout)
    carried = ["redefine checkpoints"] if record.get("checkpoints") else []
    assert [s["name"] for s in shown["steps"]] == [
        "check", "measure", "migrate", "verify", *carried, "release source"
    ]  # fmt: skip
    assert shown["locks"] == []  # freed when it ended
    return dict(record)


def check_disk_records(uri: str, name: str) -> None:
    """Its disk, copied while it wrote a record every second: every record whole, in
    order, none missing."""
    with virt.connection(uri) as conn:
        virt.destroy(virt.find(conn, name))
    written = records.check(guests.disk_records(uri, name))
    assert written.problems == ()
    assert written.count >= 5


def test_a_guest_too_busy_for_pre_copy_is_finished_by_the_policy(
    pair: tuple[hosts.TestHost, hosts.TestHost], guest: Callable[..., str],
    record_property: Callable[[str, object], None],
) -> None:  # fmt: skip
    a, b = pair
    name = guest("p2vt-live-hot", "hot")
    with guests.CounterWatch(IP[name]) as watch:
        assert watch.wait_for_more(5, 10)
        # Pre-copy alone, its pause held at 50 ms: it never gets there, and --timeout
        # gives up, leaving the guest where it was.
        alone, record = migrate(name, "-c", a.uri, "--to", b.uri, "--live", "--no-escalate",
                                "--max-downtime", "50", "--timeout", "4")  # fmt: skip
        assert alone.returncode == 10, alone.stderr
        assert "not finished within --timeout 4 s" in alone.stderr
        assert f"the guest is running on {a.uri}" in alone.stderr
        before = watch.values[-1]
        assert watch.wait_for_more(5, 10) and running_on(a.uri, name)
        # The same pause limit with escalation allowed: the policy finishes it.
        done, record = migrate(name, "-c", a.uri, "--to", b.uri, "--live", "--delete-source",
                               "--max-downtime", "50")  # fmt: skip
        assert done.returncode == 0, done.stderr
        check_kept_counting(watch, before)
        record_property("longest_gap_s", round(watch.longest_gap, 3))
    assert record["outcome"] == "done"
    assert record["prediction"]["dirty_rate"] >> 20 in DIRTY_MIB_PER_S["hot"]
    kinds = [step["what"] for step in record["escalations"]]
    assert "post-copy" in kinds and record["postcopy"], record["escalations"]
    assert all(step["at"] > 0 for step in record["escalations"])
    assert running_on(b.uri, name)
    history = p2v("history", "--wide").stdout
    assert "post-copy" in history and "not finished within --timeout 4 s" in history


def test_cancelled_or_destination_killed_a_warm_guest_runs_on_at_the_source_then_moves(
    pair: tuple[hosts.TestHost, hosts.TestHost], guest: Callable[..., str], tmp_path: Path
) -> None:
    a, b = pair
    name = guest("p2vt-live-warm", "warm")
    # No post-copy: once it begins the move cannot be cancelled, and at 8 MiB/s against
    # warm's dirty rate the policy may reach it within the seconds this takes.
    slow = [name, "-c", a.uri, "--to", b.uri, "--live", "--bandwidth", "8", "--no-postcopy"]
    with guests.CounterWatch(IP[name]) as watch:
        assert watch.wait_for_more(5, 10)
        # Cancelled from another command while memory is being copied.
        running = _start_migrate(*slow)
        job = _wait_for_step("migrate")
        # The VM is locked meanwhile, by host and domain UUID: another spelling of the
        # same host is refused too, naming the job that holds it.
        again = p2v("migrate", name, "-c", a.uri.replace("/sys", ":16509/sys"), "--to",
                    b.uri, "--live", check=False, timeout=60)  # fmt: skip
        assert again.returncode == 9 and job in again.stderr, again.stderr
        cancelled = p2v("migrate", "--cancel", job, timeout=60)
        assert f"the guest stays on {a.uri}" in cancelled.stdout
        out, err = running.communicate(timeout=120)
        assert running.returncode == 10, err
        assert "was cancelled; the guest is running on " + a.uri in err
        # The destination's QEMU killed mid-copy.
        running = _start_migrate(*slow)
        _wait_for_step("migrate")
        pid = _wait_for(lambda: hosts.qemu_pid(b, name), 30)
        os.kill(pid, signal.SIGKILL)
        out, err = running.communicate(timeout=120)
        assert running.returncode == 10, err
        assert f"the guest is running on {a.uri}" in err
        before = watch.values[-1]
        assert watch.wait_for_more(5, 10) and watch.lost == [] and not watch.closed
        assert watch.values[-1] > before
        assert running_on(a.uri, name) and guests.where([b.uri], name) is None
        with virt.connection(b.uri) as conn:  # the disk libvirt made there for the copy is gone
            assert virt.volume(virt.pool(conn, guests.POOL), guests.volume_name(name)) is None
        outcomes = [job["result"]["outcome"] for job in _jobs("migrate")[:2]]
        assert outcomes == ["failed", "cancelled"]
        # Nothing held it back: the next move goes through, over TLS; p2v is killed in
        # the middle of it, and one `--resume` follows and steers what libvirt goes on
        # with, to the end: the guest counts on, on b alone.
        # Its backup chain goes along: the next backup there is incremental.
        chain = tmp_path / "backups"
        assert _backup(a, name, chain)["kind"] == "full"
        record = moved_live(a, b, name, "warm", watch, "--tls", "--bandwidth", "20",
                            killed_after=2)  # fmt: skip
        assert record["followed"] is True
        assert _backup(b, name, chain)["kind"] == "incremental"
    check_disk_records(b.uri, name)


def test_cold_move_stops_when_the_source_changes_resumes_after_a_kill_then_comes_back_live(
    pair: tuple[hosts.TestHost, hosts.TestHost], guest: Callable[..., str]
) -> None:
    a, b = pair
    name = guest("p2vt-cold", boot=False)
    volume = guests.volume_name(name)
    with virt.connection(a.uri) as conn:
        domains.set_autostart(virt.find(conn, name), True)
    # 3 MiB/s: the copy of its data (about 13 MiB) is still going while the source is
    # written to (its first 4 KiB written again as they are: a stand-in for a guest
    # started meanwhile, which changes the file as the check sees it).
    argv = [name, "-c", a.uri, "--to", b.uri, "--bandwidth", "3", "--delete-source"]
    first = _start_migrate(*argv)
    job = _wait_for_step("copy vda")
    with virt.connection(a.uri) as conn:
        vol = virt.volume(virt.pool(conn, guests.POOL), volume)
        storage.write(conn, vol, 0, storage.read(conn, vol, 0, 4096))
    _, err = first.communicate(timeout=120)
    assert first.returncode == 10, err
    assert "changed on " in err and "since its copy began" in err and "vda (mtime" in err
    assert guests.where([a.uri, b.uri], name) == a.uri  # not defined there, kept here
    # Resumed, it copies again; killed half way, and resumed again, it goes on.
    second = _start_migrate("--resume", job)
    _wait_for(lambda: _step(job, "copy vda") == "running", 60)
    time.sleep(2)
    second.send_signal(signal.SIGKILL)
    second.wait(30)
    assert guests.where([a.uri, b.uri], name) == a.uri
    assert json.loads(p2v("show", job, "--json").stdout)["state"] == "interrupted"
    source = json.loads(p2v("checksum", f"volume:default/{volume}@{a.uri}", "--json").stdout)
    done = p2v("migrate", "--resume", job, "--json", timeout=300)
    record = json.loads(done.stdout.splitlines()[-1])
    assert record["outcome"] == "done" and record["mode"] == "cold"
    [disk] = record["disks"]
    assert disk["verified"] is True and disk["digest"] == source["digest"]
    # Durable on b before the source's disk went: b's copy is the synced clone, read
    # back with the source's digest; no staged copy is left.
    there = json.loads(p2v("checksum", f"volume:default/{volume}@{b.uri}", "--json").stdout)
    assert there["digest"] == source["digest"]
    assert record["source_deleted"] == [f"/var/lib/libvirt/images/{volume}"]
    with virt.connection(b.uri) as conn:
        pool = virt.pool(conn, guests.POOL)
        storage.refresh(pool)
        assert virt.volume(pool, volume + ".p2v-staging") is None
        assert virt.find(conn, name).UUIDString() == record["uuid"]
    assert running_on(b.uri, name)  # it was set to start with its host
    assert (
        int(guests_cli("counter", "--host", b.uri, "--name", name, "--timeout", "60").stdout) >= 0
    )
    assert guests.where([a.uri], name) is None
    steps = {s["name"]: s for s in json.loads(p2v("show", job, "--json").stdout)["steps"]}
    assert steps["durable vda"]["finished"] <= steps["release source"]["started"]
    assert steps["release source"]["finished"] <= steps["delete source"]["started"]
    # The source let it go (its autostart cleared first) before it started there.
    assert steps["release source"]["finished"] <= steps["start"]["started"]
    assert steps["release source"]["detail"]["autostart_cleared"] is True
    # Running there now, it is moved back live by a schedule, at its time.
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3))
    made = p2v("migrate", name, "-c", b.uri, "--to", a.uri, "--live", "--at", at, "--json")
    schedule = json.loads(made.stdout)["id"]
    assert running_on(b.uri, name)  # recorded, not run
    with guests.CounterWatch(IP[name]) as watch:  # the idle workload's live move
        assert watch.wait_for_more(5, 30)
        before = watch.values[-1]
        mine = _run_scheduler_until_done(schedule)
        check_kept_counting(watch, before)
    assert mine["state"] == "done" and mine["last_outcome"].startswith("done"), mine
    assert running_on(a.uri, name) and guests.where([b.uri], name) is None
    migrated = _jobs("migrate")[0]
    assert migrated["state"] == "done" and migrated["parent"]  # the scheduler's run
    assert migrated["created"] >= time.mktime(time.strptime(at, "%Y-%m-%dT%H:%M:%S"))
    result = migrated["result"]
    assert result["mode"] == "live" and result["storage_copied"] == ["vda"]
    assert result["downtime_ms"] is not None
    assert result["prediction"]["dirty_rate"] >> 20 in DIRTY_MIB_PER_S["idle"]
    # There and back again, no flags: the copy of its disk the last move left on b
    # (known to the journal, unchanged since) is replaced; a file nobody left is not.
    with virt.connection(b.uri) as conn:  # its volume, not a domain
        assert virt.volume(virt.pool(conn, guests.POOL), volume) is not None
        assert virt.lookup(conn, name) is None
    with guests.CounterWatch(IP[name]) as watch:
        assert watch.wait_for_more(3, 30)
        before = watch.values[-1]
        done, record = migrate(name, "-c", a.uri, "--to", b.uri, "--live")
        assert done.returncode == 0, done.stderr
        check_kept_counting(watch, before)
    steps = {s["name"]: s for s in json.loads(p2v("show", record["job"], "--json").stdout)["steps"]}
    assert steps["remove old copies"]["detail"]["removed"] == [f"/var/lib/libvirt/images/{volume}"]
    assert running_on(b.uri, name)
    check_disk_records(b.uri, name)


MARKER = r"\EFI\p2v-test\marker.efi"  # a boot entry of the user's own


def test_uefi_guests_move_cold_with_their_variables_and_back_and_a_move_given_up_is_cleaned(
    pair: tuple[hosts.TestHost, hosts.TestHost], guest: Callable[..., str]
) -> None:
    a, b = pair
    # Defined but never started, so without a variable store yet. A move killed in its
    # copy and given up is cleaned up; the next one moves it, with nothing to copy for
    # its variables (b makes them at its first start, as a would have).
    new = guest("p2vt-uefi-new", boot=False, uefi=True)
    first = _start_migrate(new, "-c", a.uri, "--to", b.uri, "--bandwidth", "2")
    job = _wait_for_step("copy vda")
    time.sleep(1)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    cleaned = p2v("migrate", "--cleanup", job)
    assert f"/var/lib/libvirt/images/{guests.volume_name(new)}" in cleaned.stdout
    with virt.connection(b.uri) as conn:
        pool = virt.pool(conn, guests.POOL)
        storage.refresh(pool)
        assert virt.volume(pool, guests.volume_name(new)) is None
    given_up = p2v("migrate", "--resume", job, check=False)
    assert given_up.returncode == 2 and "was cleaned up" in given_up.stderr
    done, record = migrate(new, "-c", a.uri, "--to", b.uri)
    assert done.returncode == 0, done.stderr
    steps = {s["name"]: s for s in json.loads(p2v("show", record["job"], "--json").stdout)["steps"]}
    assert steps["copy nvram"]["detail"]["absent"] is True
    assert guests.where([a.uri, b.uri], new) == b.uri

    # Booted once on a (OVMF wrote its boot entries), shut off, a boot entry of the
    # user's added: after the move b holds the same variables, boots, and keeps it.
    name = guest("p2vt-uefi", uefi=True)
    with virt.connection(a.uri) as conn:
        domain = virt.find(conn, name)
        virt.destroy(domain)
        nvram = domains.nvram(domain)
    assert nvram
    on_a, on_b = a.root / nvram.lstrip("/"), b.root / nvram.lstrip("/")
    subprocess.run(["virt-fw-vars", "--inplace", str(on_a), "--append-boot-filepath", MARKER],
                   check=True, capture_output=True)  # fmt: skip
    done, record = migrate(name, "-c", a.uri, "--to", b.uri)
    assert done.returncode == 0, done.stderr
    assert on_b.read_bytes() == on_a.read_bytes()
    with virt.connection(b.uri) as conn:
        virt.start(virt.find(conn, name))
    counted = guests_cli("counter", "--host", b.uri, "--name", name, "--timeout", "120")
    assert int(counted.stdout) >= 0
    assert "marker.efi" in _boot_entries(on_b)
    with virt.connection(b.uri) as conn:
        virt.destroy(virt.find(conn, name))
    there = json.loads(p2v("checksum", f"volume:default/{guests.volume_name(name)}@{b.uri}",
                           "--json").stdout)  # fmt: skip
    # And back, with no flags: the copies the first move left on a are replaced.
    done, record = migrate(name, "-c", b.uri, "--to", a.uri)
    assert done.returncode == 0, done.stderr
    [disk] = record["disks"]
    assert disk["digest"] == there["digest"] and disk["verified"] is True
    assert on_a.read_bytes() == on_b.read_bytes()
    assert guests.where([a.uri, b.uri], name) == a.uri


def test_a_vm_with_a_snapshot_and_a_backup_chain_moves_cold_and_both_work_there(
    pair: tuple[hosts.TestHost, hosts.TestHost], guest: Callable[..., str], tmp_path: Path
) -> None:
    a, b = pair
    name = guest("p2vt-keep")
    chain = tmp_path / "backups"
    try:
        assert _backup(a, name, chain)["kind"] == "full"
        with guests.CounterWatch(IP[name]) as watch:
            assert watch.wait_for_more(3, 30)
            before = watch.values[-1]
            p2v("snapshot", "create", name, "s1", "-c", a.uri)
            assert watch.wait_for_more(30, 30)  # 3 s on, past the snapshot
            later = watch.values[-1]
        with virt.connection(a.uri) as conn:
            virt.destroy(virt.find(conn, name))
        # Cold: the snapshot's overlay and memory go along, the checkpoint's bitmap in
        # the disk, and both records are made there before a lets the VM go.
        done, record = migrate(name, "-c", a.uri, "--to", b.uri)
        assert done.returncode == 0, done.stderr
        shown = json.loads(p2v("show", record["job"], "--json").stdout)["steps"]
        steps = {s["name"]: s for s in shown}
        assert steps["redefine snapshots"]["detail"]["snapshots"] == ["s1"]
        assert len(steps["redefine checkpoints"]["detail"]["checkpoints"]) == 1
        listed = json.loads(p2v("snapshot", "list", name, "-c", b.uri, "--json").stdout)
        assert [(s["name"], s["current"]) for s in listed] == [("s1", True)]
        # Started there, it is backed up incrementally, on the chain begun on a.
        with virt.connection(b.uri) as conn:
            virt.start(virt.find(conn, name))
        guests_cli("counter", "--host", b.uri, "--name", name, "--timeout", "60")
        assert _backup(b, name, chain)["kind"] == "incremental"
        # Live, its snapshot is refused before anything moves (libvirt cannot).
        refused, _ = migrate(name, "-c", b.uri, "--to", a.uri, "--live")
        assert refused.returncode == 2 and "move it cold, which carries them" in refused.stderr
        # The snapshot reverts there: the counter goes on from its value.
        p2v("snapshot", "revert", name, "s1", "-c", b.uri, "--force")
        with guests.CounterWatch(IP[name]) as watch:
            assert watch.wait_for_more(3, 30)
            assert before <= watch.values[0] < later, (before, watch.values[0], later)
    finally:
        for uri in uris(pair):  # what the snapshot left in the pools
            with virt.connection(uri) as conn:
                pool = virt.pool(conn, guests.POOL)
                storage.refresh(pool)
                for vol in pool.listAllVolumes():
                    if vol.name().startswith(f"{name}.s1"):
                        storage.delete_volume(vol)


def _backup(host: hosts.TestHost, vm: str, directory: Path) -> dict[str, Any]:
    done = p2v("backup", vm, "--to", str(directory), "-c", host.uri, "--tls-certs",
               str(host.client_certs), "--json")  # fmt: skip
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _boot_entries(store: Path) -> str:
    """The boot entries of a UEFI variable store, as virt-fw-vars prints them."""
    shown = subprocess.run(["virt-fw-vars", "-i", str(store), "-p"], capture_output=True,
                           text=True, check=True)  # fmt: skip
    return "\n".join(line for line in shown.stdout.splitlines() if line.startswith("Boot"))


def _run_scheduler_until_done(schedule: str) -> dict[str, Any]:
    """`p2v scheduler` running until the schedule's run has ended; the schedule."""
    scheduler = subprocess.Popen([sys.executable, "-m", "p2v.cli", "scheduler"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def ended() -> dict[str, Any] | None:
        listed = json.loads(p2v("schedule", "list", "--json").stdout)
        [mine] = [s for s in listed if s["id"] == schedule]
        return mine if mine["last_outcome"] else None

    try:
        return dict(_wait_for(ended, 90))
    finally:
        scheduler.send_signal(signal.SIGINT)
        scheduler.wait(30)


def _start_migrate(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "p2v.cli", "migrate", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _jobs(kind: str) -> list[dict[str, Any]]:
    """The journal's jobs of a kind, newest first."""
    return [j for j in json.loads(p2v("history", "--json").stdout) if j["kind"] == kind]


def _last_job(kind: str) -> str:
    return str(_jobs(kind)[0]["id"])


def _step(job: str, name: str) -> str | None:
    """The state of the job's step `name`, if it has one."""
    shown = json.loads(p2v("show", job, "--json").stdout)
    return next((s["state"] for s in shown["steps"] if s["name"] == name), None)


def _wait_for_step(name: str, timeout: float = 60) -> str:
    """The newest migration job, once it is running the step `name`."""

    def reached() -> str | None:
        jobs = _jobs("migrate")
        if not jobs or jobs[0]["state"] != "running":
            return None
        shown = json.loads(p2v("show", jobs[0]["id"], "--json").stdout)
        steps = {s["name"]: s["state"] for s in shown["steps"]}
        return str(jobs[0]["id"]) if steps.get(name) == "running" else None

    return str(_wait_for(reached, timeout))


def _wait_for(probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := probe()) is not None and found is not False:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:g} s: {probe}")


def _bare(
    name: str, uuid: str | None = None, devices: str = "", cpu: str = "", boot: str = ""
) -> str:
    """A domain with no disks: enough to be refused."""
    return (
        f"<domain type='qemu'><name>{name}</name>{f'<uuid>{uuid}</uuid>' if uuid else ''}"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='q35'>hvm</type>{boot}</os>{cpu}"
        f"{'<features><acpi/></features>' if boot else ''}"
        f"<devices>{devices}</devices></domain>"
    )


def test_refusals_say_why_and_change_nothing(
    pair: tuple[hosts.TestHost, hosts.TestHost], guest: Callable[..., str]
) -> None:
    a, b = pair
    name = guest("p2vt-refused", boot=False)
    with virt.connection(a.uri) as conn:
        uuid = virt.find(conn, name).UUIDString()
        virt.define(
            conn,
            _bare(
                "p2vt-cpu",
                cpu="<cpu mode='custom' match='exact'>"
                "<model fallback='forbid'>Skylake-Server</model></cpu>",
            ),
        )
        virt.define(
            conn,
            _bare(
                "p2vt-pci",
                devices="<hostdev mode='subsystem' type='pci' "
                "managed='yes'><source><address domain='0x0000' bus='0x00' "
                "slot='0x1f' function='0x3'/></source></hostdev>",
            ),
        )
        virt.define(conn, _bare("p2vt-nofw", boot=(
            "<loader readonly='yes' type='pflash'>/usr/share/OVMF/P2V_MISSING_CODE.fd</loader>"
            "<nvram>/var/lib/libvirt/qemu/nvram/p2vt-nofw_VARS.fd</nvram>"
        )))  # fmt: skip
    jobs_before = len(_jobs("migrate"))
    small = "/var/lib/libvirt/small"
    subprocess.run(["nsenter", "-t", str(b.pid), "-m", "--", "sh", "-c",
                    f"mkdir -p {small} && mount -t tmpfs -o size=4M p2v-small {small}"],
                   check=True)  # fmt: skip
    try:
        with virt.connection(b.uri) as conn:
            virt.ensure_dir_pool(conn, "small", small)
        refused = {
            "no virtual machine named 'p2vt-nobody'": ["p2vt-nobody", "-c", a.uri, "--to", b.uri],
            "is the source itself": [name, "-c", a.uri, "--to", a.uri],
            "are the same host": [name, "-c", a.uri, "--to", a.uri.replace("/sys", ":16509/sys")],
            "did not answer within 3 s": [name, "-c", a.uri, "--to", "qemu+tcp://10.253.0.99/system",
                                "--connect-timeout", "3"],
            "is shut off: a cold migration moves it": [name, "-c", a.uri, "--to", b.uri, "--live"],
            "too little space in the pool small": [name, "-c", a.uri, "--to", b.uri, "--pool",
                                                   "small"],
            "cannot run p2vt-cpu's CPU": ["p2vt-cpu", "-c", a.uri, "--to", b.uri],
            "holds host devices that cannot move": ["p2vt-pci", "-c", a.uri, "--to", b.uri],
            "has no UEFI firmware /usr/share/OVMF/P2V_MISSING_CODE.fd": ["p2vt-nofw", "-c", a.uri,
                                                                          "--to", b.uri],
        }  # fmt: skip
        with virt.connection(b.uri) as conn:
            virt.define(conn, _bare(name))
        refused[f"has a virtual machine named '{name}'"] = [name, "-c", a.uri, "--to", b.uri]
        for said, args in refused.items():
            done = p2v("migrate", *args, check=False, timeout=120)
            assert done.returncode in (2, 4), (said, done.stderr)
            assert said in done.stderr, (said, done.stderr)
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        with virt.connection(b.uri) as conn:  # a file of its disk's name no move left there
            stranger = virt.create_volume(virt.pool(conn, guests.POOL), guests.volume_name(name),
                                          1 << 20, "raw")  # fmt: skip
        held = p2v("migrate", name, "-c", a.uri, "--to", b.uri, check=False)
        assert held.returncode == 2 and "no earlier move of this VM left it" in held.stderr
        with virt.connection(b.uri) as conn:
            virt.undefine(virt.find(conn, name))
            storage.delete_volume(stranger)
            virt.define(conn, _bare("p2vt-twin", uuid))
        twin = p2v("migrate", name, "-c", a.uri, "--to", b.uri, check=False)
        assert twin.returncode == 2 and f"with {name}'s UUID {uuid}: p2vt-twin" in twin.stderr
        assert len(_jobs("migrate")) == jobs_before  # nothing recorded
        with virt.connection(b.uri) as conn:
            virt.undefine(virt.find(conn, "p2vt-twin"))
            assert {d.name() for d in conn.listAllDomains()} == set()
            assert virt.volume(virt.pool(conn, guests.POOL), guests.volume_name(name)) is None
    finally:
        with virt.connection(a.uri) as conn:
            for bare in ("p2vt-cpu", "p2vt-pci", "p2vt-nofw"):
                if (found := virt.lookup(conn, bare)) is not None:
                    virt.undefine(found)
        with virt.connection(b.uri) as conn:
            for pool in conn.listAllStoragePools():
                if pool.name() == "small":
                    if pool.isActive():
                        pool.destroy()
                    pool.undefine()
        subprocess.run(["nsenter", "-t", str(b.pid), "-m", "--", "umount", small], check=False)


def test_storage_two_hosts_share_is_told_from_storage_they_do_not(
    pair: tuple[hosts.TestHost, hosts.TestHost], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The probe that decides whether a live move copies the disks: a volume made in
    one host's pool shows in the other's only when the directory is one (here a
    directory of this machine both hosts see, as an NFS mount would be)."""
    shared = tmp_path_factory.mktemp("shared-pool", numbered=True)
    a, b = pair
    with virt.connection(a.uri) as one, virt.connection(b.uri) as other:
        pools = [virt.ensure_dir_pool(conn, "p2vt-shared", str(shared)) for conn in (one, other)]
        try:
            assert storage.same_storage(pools[0], pools[1])
            assert storage.same_storage(pools[1], pools[0])
            defaults = [virt.pool(conn, guests.POOL) for conn in (one, other)]
            assert not storage.same_storage(defaults[0], defaults[1])
            assert list(shared.iterdir()) == []  # the probes are gone
        finally:
            for pool in pools:
                pool.destroy()
                pool.undefine()
