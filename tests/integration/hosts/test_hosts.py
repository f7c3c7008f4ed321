"""The test hosts themselves: separate libvirt hosts, and nothing left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from p2v import accel
from p2v.host import virt
from tests import hosts
from tests.conftest import require_root

# A guest with no disk: QEMU runs, nothing boots; enough to be listed.
EMPTY_GUEST = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices><serial type='pty'/></devices></domain>"""


def _hosts(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.hosts", *args], capture_output=True, text=True, timeout=120
    )


def _mounted_anywhere(path: Path) -> list[str]:
    """Processes with a mount of something under `path`, in any mount namespace."""
    found = []
    for mountinfo in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            if str(path) in mountinfo.read_text():
                found.append(mountinfo.parent.name)
        except OSError:  # the process ended meanwhile
            continue
    return found


def test_two_hosts_are_two_libvirt_hosts_and_down_leaves_nothing() -> None:
    require_root("test hosts are namespaces")
    names = ["p2vt-one", "p2vt-two"]
    made = _hosts("up", *names)
    assert made.returncode == 0, made.stderr
    lines = [line.split() for line in made.stdout.splitlines()]
    assert [line[0] for line in lines] == names
    try:
        ids = []
        for name, uri, address in lines:
            assert uri == f"qemu+tcp://{address}/system"
            with virt.connection(uri) as conn:
                who = virt.identity(conn)
                assert who.hostname == name
                assert virt.version(conn) >= (11, 0, 0)
                assert virt.pool(conn, "default")
                if accel.detect().accel != "kvm":  # as a host without working KVM
                    assert virt.domain_types(conn) == {"qemu"}
                ids.append(who.uuid)
        assert len(set(ids)) == 2, "each host has a host UUID of its own"
        assert ids[0] != _machine_uuid()

        with virt.connection(lines[0][1]) as one, virt.connection(lines[1][1]) as two:
            guest = virt.start_transient(one, EMPTY_GUEST.format(name="p2vt-seen-once"))
            try:
                assert [d.name() for d in one.listAllDomains()] == ["p2vt-seen-once"]
                assert two.listAllDomains() == []
            finally:
                virt.destroy(guest)
                # Freed now, while its host runs: freed after `up` replaced the host,
                # libvirt would wait on the dead connection for its keepalive (20 s).
                del guest

        # A new `up` of a host that is up replaces it (what a killed run left).
        old = {h.name: h.pid for h in hosts.known() if h.name in names}
        again = _hosts("up", names[0])
        assert again.returncode == 0, again.stderr
        assert not hosts.alive(old[names[0]])
        # Under the address it had, with a new link: the other host reaches it at once.
        [replaced] = [line.split() for line in again.stdout.splitlines()]
        reached = subprocess.run(
            ["ip", "netns", "exec", f"p2vh-{names[1]}", "virsh", "-c", replaced[1], "hostname"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert reached.stdout.strip() == names[0], reached.stderr
    finally:
        gone = _hosts("down", *names)
    assert gone.returncode == 0, gone.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in names if f"p2vh-{n}" in netns]
    assert not [h for h in hosts.known() if h.name in names]
    for name in names:
        assert not (hosts.STATE / name).exists()
        assert not _mounted_anywhere(hosts.STATE / name)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    if not hosts.known():
        assert hosts.BRIDGE not in links
    assert all(not hosts.alive(pid) for pid in old.values())


def _machine_uuid() -> str:
    try:
        return Path("/sys/class/dmi/id/product_uuid").read_text().strip()
    except OSError:
        return ""


@pytest.mark.parametrize("bad", ["no/slash", "x" * 30])
def test_a_bad_host_name_is_refused_and_makes_nothing(bad: str) -> None:
    require_root("test hosts are namespaces")
    done = _hosts("up", bad)
    assert done.returncode == 1 and "name" in done.stderr
    assert not (hosts.STATE / bad).exists()
