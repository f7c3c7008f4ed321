"""Clones on two test hosts from a golden sealed out of the converted bios-ext4 server
(given first the identity an installed machine has, which the seal must take out):
20 linked clones spread over both hosts, each with its own MAC, UUID and hostname,
and 4 more personalized offline; two of them booted (one per host, one after the
other, one of each kind) print their own hostname, which only the first-boot unit or
the offline writing can have given them; `p2v clones check` reads every clone's disk
and finds nothing shared but the machine-id planted by hand in two clones; the
golden's digest is unchanged; a bulk clone killed half-way and resumed ends with
exactly its N clones; a running test guest cloned live boots on the other host
while the source counts on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2v import appliance
from p2v.host import virt
from p2v.host.virt import backups, domains, storage
from p2v.host.virt.console import read_console_until
from p2v.host.virt.domainxml import DomainXml
from tests import guests, hosts
from tests.conftest import require_root
from tests.fixtures import converted as fixtures_converted
from tests.fixtures.vmguest import console
from tests.integration.transfer.disks import p2v

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

BOOT_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[hosts.TestHost, hosts.TestHost]]:
    require_root("test hosts are namespaces")
    with hosts.running(["p2vt-cln-a", "p2vt-cln-b"]) as [a, b]:
        yield a, b


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """bios-ext4 converted (virtio drivers in) and given the identity an installed
    machine has (machine-id, SSH host keys, a random seed, a DHCP lease, a shell
    history, its MAC bound in every network configuration system: cached, see
    tests/fixtures/converted.py), then sealed from a copy."""
    work = tmp_path_factory.mktemp("golden")
    # The session's journal (tests/conftest.py sets it for each test, after this).
    env = {**os.environ, "P2V_HOME": str(tmp_path_factory.getbasetemp() / "p2v-home")}
    require_root("the fixture is built with loop devices")
    converted, plan = fixtures_converted.build("bios-ext4")
    disk = work / "server.qcow2"  # a golden's source is one whole image: a copy
    shutil.copyfile(converted, disk)
    [(mac, nic)] = plan["nics"]
    before = json.loads(p2v("checksum", str(disk), "--json", env=env).stdout)["digest"]
    sealed = json.loads(p2v("golden", "seal", str(disk), "--to", str(work / "web.qcow2"),
                            "--json", timeout=900, env=env).stdout)  # fmt: skip
    return {**sealed, "source": str(disk), "source_digest": before, "server_mac": mac.lower(),
            "nic": nic}  # fmt: skip


def test_a_sealed_golden_is_recorded_read_only_and_its_source_is_untouched(
    golden: dict[str, Any],
) -> None:
    """What the seal recorded; that the golden keeps no identity is read from it in the
    next test (in the appliance that plants a duplicate, not one more)."""
    mac, nic = golden["server_mac"], golden["nic"]
    assert golden["name"] == "web" and golden["version"] == "1"
    assert golden["first_boot"] == "p2v-firstboot" and golden["macs"] == [mac]
    assert golden["nic_names"] == [nic] and golden["root"] == "/dev/sda1"
    source = json.loads(p2v("checksum", golden["source"], "--json").stdout)["digest"]
    assert source == golden["source_digest"], "the source was written"
    assert not stat.S_IMODE(os.stat(golden["path"]).st_mode) & 0o222, "the golden is writable"
    listed = json.loads(p2v("golden", "list", "--json").stdout)
    assert [(r["name"], r["version"], r["digest"]) for r in listed] == [
        ("web", "1", golden["digest"])
    ]
    again = p2v("golden", "seal", golden["source"], "--to", golden["path"], check=False)
    assert again.returncode == 2 and "exists" in again.stderr


def _clone(pair: tuple[hosts.TestHost, hosts.TestHost], *argv: str) -> dict[str, Any]:
    done = p2v("clone", "web", "-c", pair[0].uri, "-c", pair[1].uri, "--memory", "512",
               "--network", "user", "--json", *argv, timeout=900)  # fmt: skip
    return dict(json.loads(done.stdout))


def _domains(pair: tuple[hosts.TestHost, hosts.TestHost], prefix: str) -> list[str]:
    found = []
    for host in pair:
        with virt.connection(host.uri) as conn:
            found += [d.name() for d in conn.listAllDomains(0) if d.name().startswith(prefix)]
    return sorted(found)


def _boots_as_itself(uri: str, name: str) -> str:
    with virt.connection(uri) as conn:
        domain = virt.find(conn, name)
        virt.start(domain)
        try:
            text = read_console_until(conn, domain, lambda t: "P2V-TEST-BOOTED" in t,
                                      BOOT_TIMEOUT)  # fmt: skip
        finally:
            virt.destroy(domain)
    line = next((x for x in text.splitlines() if "P2V-TEST-BOOTED" in x), "")
    assert line, f"{name} did not come up:\n{text[-3000:]}"
    return line


def test_twenty_linked_clones_over_two_hosts_each_with_its_own_identity(
    pair: tuple[hosts.TestHost, hosts.TestHost], golden: dict[str, Any], tmp_path: Path
) -> None:
    before = json.loads(p2v("checksum", golden["path"], "--json").stdout)["digest"]
    made = _clone(pair, "--name", "web-{n}", "--count", "20", "--seed", "1", "--ip-pool",
                  "10.98.0.0/24")  # fmt: skip
    clones = made["clones"]
    assert [c["ip"] for c in clones] == [f"10.98.0.{n}/24" for n in range(2, 22)]
    assert [c["name"] for c in clones] == [f"web-{n}" for n in range(1, 21)]
    assert [c["uri"] for c in clones] == [pair[0].uri, pair[1].uri] * 10
    macs = [m for c in clones for m in c["macs"]]
    assert len(set(macs)) == 20 and golden["server_mac"] not in macs
    assert len({c["uuid"] for c in clones}) == 20
    assert _domains(pair, "web-") == sorted(c["name"] for c in clones)

    # Four more personalized offline: written in one appliance before their upload.
    offline = _clone(pair, "--name", "off-{n}", "--count", "4", "--seed", "2",
                     "--personalize", "offline", "--ip-pool", "10.99.0.0/24")  # fmt: skip
    assert [c["ip"] for c in offline["clones"]] == [f"10.99.0.{n}/24" for n in range(2, 6)]
    written = next(s["detail"] for s in json.loads(p2v("show", offline["job"], "--json").stdout)
                   ["steps"] if s["name"] == "personalize")["machine_ids"]  # fmt: skip
    assert sorted(written) == ["off-1", "off-2", "off-3", "off-4"]

    # One of each boots as itself: the first-boot unit's work from the SMBIOS strings
    # alone, and the offline one's from its disk. Each has its hostname, and the NIC
    # name the golden had, pinned to the clone's own MAC, and its address.
    nic = golden["nic"]
    for clone in (clones[0], offline["clones"][1]):
        line = _boots_as_itself(clone["uri"], clone["name"])
        assert f"host={clone['name']} " in line, line
        assert f"{nic}={clone['macs'][0]}" in line, line
        assert f"net={nic}:{clone['ip']}" in line, line

    # A duplicate planted by hand: web-3 and web-4 given one machine-id (and their
    # hostnames and the first-boot mark, as if they had booted). The check must find
    # it, and nothing else.
    planted = "0123456789abcdef0123456789abcdef"
    _plant_machine_id([(pair[0].uri, "web-3"), (pair[1].uri, "web-4")], planted,
                      golden, tmp_path)  # fmt: skip
    checked = p2v("clones", "check", "web", "--json", check=False)
    assert checked.returncode == 12, checked.stderr
    [group] = json.loads(checked.stdout)
    assert group["clashes"] == [f"machine-id {planted} is shared by web-3, web-4"]
    seen = {s["name"]: s for s in group["clones"]}
    assert seen["web-1"]["machine_id"] and not seen["web-1"]["pending"]
    assert seen["web-1"]["hostname"] == "web-1"
    for name, machine_id in written.items():  # booted (off-2) or not, as written
        assert (seen[name]["machine_id"], seen[name]["hostname"]) == (machine_id, name)
        assert not seen[name]["pending"]
    ids = [seen["web-1"]["machine_id"], *written.values()]
    assert len(set(ids)) == 5 and planted not in ids
    assert all(seen[f"web-{n}"]["pending"] for n in range(5, 21))
    assert len({s["hostname"] for s in group["clones"]}) == 24
    # SSH host keys of the three types: made at the first boot, or written offline.
    keys = [k for n in ("web-1", *written) for k in seen[n]["ssh_keys"]]
    assert len(keys) == 15 and len(set(keys)) == 15, keys

    [listed] = json.loads(p2v("golden", "list", "--json").stdout)
    assert sorted(c["name"] for c in listed["clones"]) == sorted(seen)
    after = json.loads(p2v("checksum", golden["path"], "--json").stdout)["digest"]
    assert after == before == golden["digest"]


def test_a_bulk_clone_killed_half_way_is_resumed_to_exactly_its_clones(
    pair: tuple[hosts.TestHost, hosts.TestHost], golden: dict[str, Any]
) -> None:
    argv = [sys.executable, "-m", "p2v.cli", "clone", "web", "-c", pair[0].uri, "-c",
            pair[1].uri, "--name", "k-{n:02d}", "--count", "30", "--memory", "256"]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    job, steps = "", 0
    for line in proc.stderr:
        job = job or (line.split()[2] if line.startswith("p2v: job ") else "")
        steps += line.startswith("p2v: clone k-")
        if steps == 12:
            break
    else:
        raise AssertionError(f"the clone job ended early: {proc.wait()}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _domains(pair, "k-")
    assert 0 < len(partial) < 30
    done = p2v("clone", "--resume", job, "--json", timeout=900)
    record = json.loads(done.stdout)
    assert len(record["clones"]) == 30
    assert _domains(pair, "k-") == [f"k-{n:02d}" for n in range(1, 31)]
    shown = p2v("show", job).stdout
    assert "clone job, done" in shown and "30 clones defined" in shown


def _keeps_no_identity(g: Any, mac: str, nic: str) -> None:
    """The golden (mounted in `g`): no machine-id, host keys, seed, lease, history or
    MAC binding of the server it was sealed from; its first-boot unit in."""
    assert g.cat("/etc/machine-id").strip() in ("", "uninitialized")
    assert not [k for k in g.ls("/etc/ssh") if k.startswith("ssh_host_")]
    for path in (
        "/var/lib/systemd/random-seed",
        "/var/lib/dhcp/dhclient.leases",
        "/root/.bash_history",
        f"/etc/systemd/network/10-p2v-{nic}.link",
    ):
        assert not g.exists(path), path  # fmt: skip
    for path in [*fixtures_converted.planted(mac, nic), "/etc/network/interfaces"]:
        if g.is_file(path):
            assert mac not in g.cat(path).lower(), f"{path} still names the golden's MAC"
    assert f"iface {nic} inet static\n\taddress" in g.cat("/etc/network/interfaces")
    assert "dhcp4: true" in g.cat("/etc/netplan/50-net.yaml")
    assert g.is_file("/usr/local/sbin/p2v-firstboot")
    assert g.is_symlink("/etc/systemd/system/sysinit.target.wants/p2v-firstboot.service")
    assert "version=1" in g.cat("/etc/p2v-golden")


def _plant_machine_id(
    clones: list[tuple[str, str]], machine_id: str, sealed: dict[str, Any], work: Path
) -> None:
    """By hand, through their hosts' libvirt: the clones' (URI, name) overlays
    downloaded, given the machine-id over the local golden (one appliance), put back
    on their own base, uploaded. The same appliance reads the golden itself, which
    must keep no identity."""
    golden = sealed["path"]
    rebase = ["qemu-img", "rebase", "-u", "-F", "qcow2", "-b"]
    bases = {}
    for uri, name in clones:
        with virt.connection(uri) as conn:
            vol = storage.volume_at(conn, f"{hosts.POOL_DIR}/{name}.qcow2")
            bases[name] = str(storage.backing(vol))
            storage.download_file(conn, vol, str(work / f"{name}.qcow2"))
        subprocess.run([*rebase, golden, str(work / f"{name}.qcow2")], check=True, timeout=60)
    g = appliance.new_handle()
    try:
        for _, name in clones:
            g.add_drive_opts(str(work / f"{name}.qcow2"), format="qcow2")
        g.add_drive_opts(golden, format="qcow2", readonly=1)
        g.launch()
        *devices, golden_device = g.list_devices()
        g.mount_ro(f"{golden_device}1", "/")
        _keeps_no_identity(g, sealed["server_mac"], sealed["nic"])
        g.umount_all()
        for device, (_, name) in zip(devices, clones, strict=True):
            g.mount(f"{device}1", "/")
            g.write("/etc/hostname", f"{name}\n".encode())
            g.write("/etc/machine-id", f"{machine_id}\n".encode())
            g.mkdir_p("/var/lib/p2v")
            g.write("/var/lib/p2v/identity-done", b"")
            g.umount_all()
        g.shutdown()
    finally:
        g.close()
    for uri, name in clones:
        local = str(work / f"{name}.qcow2")
        subprocess.run([*rebase, bases[name], local], check=True, timeout=60)
        with virt.connection(uri) as conn:
            storage.upload_file(conn, storage.volume_at(conn, f"{hosts.POOL_DIR}/{name}.qcow2"),
                                local)  # fmt: skip


LIVE_SOURCE, LIVE_IP = "p2vt-live-src", "10.253.0.218"


def test_a_live_clone_of_a_running_guest_boots_from_its_disk_while_the_source_counts_on(
    pair: tuple[hosts.TestHost, hosts.TestHost],
) -> None:
    """The test guest (its counter served on TCP, a record appended to its disk each
    second, its agent answering) cloned running onto the other host: a client of its
    counter loses nothing and stays connected; a clone booted there starts its own
    counter at 1 and goes on from the records the source's disk held at that
    instant."""
    a, b = pair
    started = subprocess.run(
        [sys.executable, "-m", "tests.guests", "start", "--host", a.uri, "--name",
         LIVE_SOURCE, "--ip", LIVE_IP, "--agent"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        refused = p2v("clone", LIVE_SOURCE, "--name", "live-{n}", "-c", a.uri, check=False)
        assert refused.returncode == 2 and "clone it with --live" in refused.stderr
        with guests.CounterWatch(LIVE_IP) as watch:
            assert watch.wait_for_more(10, 30), "the source's counter does not come"
            before = watch.values[-1]
            done = p2v("clone", LIVE_SOURCE, "--live", "--from", a.uri, "--name", "live-{n}",
                       "--count", "2", "-c", b.uri, "--personalize", "none", "--network",
                       "user", "--tls-certs", str(a.client_certs), "--json",
                       timeout=600)  # fmt: skip
            assert watch.wait_for_more(10, 30), "the source stopped counting"
            assert not watch.closed and watch.lost == [], watch.lost
            assert watch.values[-1] > before
        record = json.loads(done.stdout)
        # Its filesystems frozen through its agent for that instant.
        assert "at one instant (frozen)" in done.stderr, done.stderr
        assert [(c["name"], c["uri"]) for c in record["clones"]] == [
            ("live-1", b.uri), ("live-2", b.uri)]  # fmt: skip
        with virt.connection(a.uri) as conn:
            source = virt.find(conn, LIVE_SOURCE)
            assert virt.state(source) == "running"
            assert not backups.running(source), "the backup job was left"
            [disk] = DomainXml.parse(domains.definition(source)).writable_disks()
            assert storage.backing(storage.volume_at(conn, disk.source)) is None
        with virt.connection(b.uri) as conn:
            clone = virt.find(conn, "live-2")
            virt.start(clone)
            text = read_console_until(conn, clone, lambda t: len(console.counters(t)) >= 3
                                      or console.failure(t) is not None, BOOT_TIMEOUT)  # fmt: skip
            virt.destroy(clone)
        ready = console.ready(text)
        assert ready is not None, text[-2000:]
        assert int(ready["first_record"]) > 1, "the source's records are not on its disk"
        assert console.counters(text)[0] == 1, "the clone did not boot afresh"
    finally:
        subprocess.run([sys.executable, "-m", "tests.guests", "stop", "--host", a.uri,
                        "--name", LIVE_SOURCE], capture_output=True, timeout=120)  # fmt: skip
