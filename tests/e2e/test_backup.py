"""`p2v backup` on a test host, with the test guest writing its records: a full backup
(killed while it reads, then resumed) and two incremental ones, the second while the
VM is shut off (started paused for it: the dirty bitmaps outlived the VM's stop);
each increment about the size of what changed; every point restored with its digest
checked (the last also against the disk itself); `backup verify` catching one byte
flipped in a stored backup. One boot of the guest serves it all (TCG); the export is
read over TCP with TLS, both sides certified. Retention, in a backup job and by hand,
drops the oldest: what built on it becomes a full of its own and the remaining points
restore byte for byte as before; a restore drill boots the newest point, which also
comes back as a VM defined on the host (that restore killed while it copies, then
resumed)."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2v.host import virt
from p2v.host.virt import backups, storage
from tests import guests, hosts
from tests.conftest import require_root
from tests.fixtures.vmguest import records
from tests.integration.transfer.disks import p2v

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NAME, IP = "p2vt-bak", "10.253.0.214"
CLUSTER = 64 << 10


@pytest.fixture(scope="module")
def host(vmguest_image: Path) -> Iterator[hosts.TestHost]:
    require_root("test hosts are namespaces")
    with hosts.running(["p2vt-bak-a"]) as [a]:
        yield a


def _backup(host: hosts.TestHost, directory: Path, *extra: str) -> dict[str, Any]:
    done = p2v("backup", NAME, "--to", str(directory), "-c", host.uri, "--tls-certs",
               str(host.client_certs), "--json", *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _killed_then_resumed(host: hosts.TestHost, directory: Path) -> dict[str, Any]:
    """A backup killed (-9) while it reads, then resumed: libvirt's job went on
    serving the export meanwhile, so the resume reads on from it."""
    done = _kill_then_resume("backup", "copy vda", NAME, "--to", str(directory), "-c",
                             host.uri, "--tls-certs", str(host.client_certs))  # fmt: skip
    assert "begin ..." not in done.stderr, "the export was read on, not begun again"
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _restore_killed_then_resumed(*argv: str) -> dict[str, Any]:
    """`p2v restore` killed (-9) while it copies, then resumed: its result."""
    done = _kill_then_resume("restore", "restore vda", *argv)
    assert "check ..." not in done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _kill_then_resume(verb: str, step: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`p2v VERB ARGV` at 2 MB/s, killed (-9) 2 s into its step `step`, then
    `p2v VERB --resume JOB`: what the resume printed."""
    proc = subprocess.Popen([sys.executable, "-m", "p2v.cli", verb, "--bwlimit", "2M", *argv],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    job = ""
    for line in proc.stderr:
        job = job or (line.split()[2] if line.startswith("p2v: job ") else "")
        if line.startswith(f"p2v: {step}"):
            break
    else:
        raise AssertionError(f"{verb} ended before its step {step}: {proc.wait()}")
    time.sleep(2)
    proc.kill()
    proc.wait()
    assert "interrupted" in p2v("show", job).stdout
    return p2v(verb, "--resume", job, "--bwlimit", "1G", "--json")


def _records_for(host: hosts.TestHost, seconds: float) -> None:
    """Let the guest write records (ten a second) for `seconds` more."""
    first = guests.counter(host.uri, NAME)
    while guests.counter(host.uri, NAME) < first + 10 * seconds:
        time.sleep(0.5)


def _changed(one: Path, other: Path) -> int:
    """Bytes in 64 KiB clusters that differ between two raw disks of one size."""
    changed = 0
    with one.open("rb") as a, other.open("rb") as b:
        while chunk := a.read(CLUSTER):
            changed += CLUSTER if chunk != b.read(CLUSTER) else 0
    return changed


def test_full_and_incremental_backups_restore_every_point_and_verify_finds_a_flipped_byte(
    host: hosts.TestHost, tmp_path: Path
) -> None:
    started = subprocess.run(
        [sys.executable, "-m", "tests.guests", "start", "--host", host.uri, "--name", NAME,
         "--ip", IP, "--agent"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    with virt.connection(host.uri) as conn:
        uuid = virt.find(conn, NAME).UUIDString()
    directory = tmp_path / "backups"
    try:
        full = _killed_then_resumed(host, directory)
        assert full["kind"] == "full" and full["why_full"] is None
        assert full["folder"].startswith("0001-"), "resumed, not taken again"
        assert full["consistency"] == "frozen", full  # through the guest's qemu-ga
        _records_for(host, 5)
        one = _backup(host, directory)
        assert one["kind"] == "incremental", one
        _records_for(host, 3)  # written before the stop: the bitmap must keep them
        with virt.connection(host.uri) as conn:
            virt.destroy(virt.find(conn, NAME))
        # Shut off: the disk as the next backup must hold it, read by the host's libvirt.
        off_digest = _disk_digest(host, tmp_path / "off.qcow2")
        two = _backup(host, directory)
        assert two["kind"] == "incremental", two
        # Started paused for it, its agent is not running: crash-consistent, and why.
        assert two["consistency"] == "crash-consistent" and "no guest agent" in two["unfrozen"]
        with virt.connection(host.uri) as conn:
            assert virt.state(virt.find(conn, NAME)) == "shut off"  # stopped again after

        chain = json.loads(p2v("backup", "list", str(directory), "--json").stdout)
        assert [b["kind"] for b in chain] == ["full", "incremental", "incremental"]
        assert [b["parent"] for b in chain] == [None, chain[0]["backup"], chain[1]["backup"]]
        restored = []
        for n, backup in enumerate(chain, 1):
            path = tmp_path / f"point{n}.raw"
            p2v("restore", str(directory), "--at", str(n), "--to", str(path))
            # Crash-consistent: a record being written at that instant may be cut short.
            text = records.read_from_image(path).rstrip("\0")
            found = records.check(text[: text.rfind("\n") + 1])
            assert not found.problems and found.count > 0, found.problems[:3]
            restored.append((path, found.last, backup["disks"]["vda"]))
            # Frozen, the guest's ext4 had flushed its journal; killed, it had not.
            assert records.needs_recovery(path) == (backup["consistency"] != "frozen"), n
        assert restored[0][1] < restored[1][1] < restored[2][1]
        assert restored[2][2]["digest"] == off_digest

        # Retention in the job: the full dropped, merged into the first increment (now
        # a full of its own), its checkpoint gone from the VM, the others kept.
        three = _backup(host, directory, "--keep-last", "3")
        assert three["dropped"] == [chain[0]["backup"]]
        with virt.connection(host.uri) as conn:
            kept = {c.name for c in backups.checkpoints(virt.find(conn, NAME))}
        assert kept == {b["checkpoint"] for b in chain[1:]} | {three["checkpoint"]}
    finally:
        guests.stop_anywhere([host.uri], NAME)

    # An increment reads and stores about what changed (64 KiB clusters compared).
    for (before, _, _), (after, _, disk) in zip(restored, restored[1:], strict=False):
        changed = _changed(before, after)
        print(f"changed {changed}, read {disk['read']}, stored {disk['stored']}")
        assert changed <= disk["read"] <= 1.2 * changed + (1 << 20)
        assert disk["stored"] <= 1.2 * changed + (1 << 20)

    assert p2v("backup", "verify", str(directory)).returncode == 0
    # And by hand: one more dropped, the chain still restores as before.
    p2v("backup", "prune", str(directory), "--keep-last", "2")
    pruned = json.loads(p2v("backup", "list", str(directory), "--json").stdout)
    assert [(b["backup"], b["kind"], b["parent"]) for b in pruned] == [
        (chain[2]["backup"], "full", None), (three["folder"], "incremental", chain[2]["backup"])
    ]  # fmt: skip
    assert not (directory / chain[0]["backup"]).exists()
    drawn = p2v("backup", "list", str(directory), "--graph").stdout.splitlines()
    assert drawn[0].startswith(f"{chain[2]['backup']}  full ") and len(drawn) == 2
    assert drawn[1].startswith(f"└─ {three['folder']}  incremental ") and "newest" in drawn[1]
    again = tmp_path / "again.raw"
    p2v("restore", str(directory), "--at", chain[2]["backup"], "--to", str(again))
    assert filecmp.cmp(again, restored[2][0], shallow=False), "a point reads otherwise once pruned"

    # The restore drill: the newest point booted headless here, and up.
    drilled = p2v("restore", str(directory), "--check", "--json", timeout=700)
    assert json.loads(drilled.stdout)["booted"], drilled.stderr
    assert "P2V-GUEST-READY" in json.loads(drilled.stdout)["line"]

    # Back as a VM on the host (the original is gone): its UUID, a qcow2 volume with
    # the point's digest; the restore killed while it copies, then resumed.
    back = _restore_killed_then_resumed("--define", f"{NAME}-back", "-c", host.uri, str(directory))
    try:
        assert back["uuid"] == uuid
        with virt.connection(host.uri) as conn:
            vol = storage.volume_at(conn, f"{hosts.POOL_DIR}/{NAME}-back-vda.qcow2")
            assert storage.format_of(vol) == "qcow2"
            storage.download_file(conn, vol, str(tmp_path / "back.qcow2"))
        digest = json.loads(p2v("checksum", str(tmp_path / "back.qcow2"), "--json").stdout)
        assert digest["digest"] == pruned[-1]["disks"]["vda"]["digest"]
    finally:
        with virt.connection(host.uri) as conn:
            if (domain := virt.lookup(conn, f"{NAME}-back")) is not None:
                virt.undefine(domain)
            if vol := storage.volume_at(conn, f"{hosts.POOL_DIR}/{NAME}-back-vda.qcow2"):
                storage.delete_volume(vol)

    _flip_a_data_byte(directory / chain[2]["backup"] / "vda.qcow2")
    verified = p2v("backup", "verify", str(directory), check=False)
    assert verified.returncode == 11, verified.stderr
    assert f"{chain[2]['backup']}/vda: digest" in verified.stderr
    redone = p2v("restore", str(directory), "--at", "3", "--to", str(tmp_path / "bad.raw"),
                 check=False)  # fmt: skip
    assert redone.returncode == 11 and "not blockhash" in redone.stderr
    assert not (tmp_path / "bad.raw").exists(), "a restore found wrong is not left"


def _disk_digest(host: hosts.TestHost, copy: Path) -> str:
    with virt.connection(host.uri) as conn:
        pool = virt.pool(conn, hosts.POOL)
        storage.refresh(pool)
        storage.download_file(conn, virt.volume(pool, guests.volume_name(NAME)), str(copy))
    return str(json.loads(p2v("checksum", str(copy), "--json").stdout)["digest"])


def _flip_a_data_byte(image: Path) -> None:
    command = ["qemu-img", "map", "--output=json", str(image)]
    mapped = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    data = [m for m in json.loads(mapped) if m.get("data") and "offset" in m]
    where = data[len(data) // 2]["offset"] + 100
    with image.open("r+b") as f:
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 0xFF]))
