"""Inventory -> HardwareProfile -> domain XML: the VM matches the machine, and libvirt's
own schema accepts the XML."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.inventory.model import Cpu, Disk, Inventory, Machine, Memory, Nic
from imagebuilder.domain import Placement, domain_xml
from imagebuilder.profile import (
    HardwareProfile,
    Overrides,
    ProfileError,
    profile_from_inventory,
)
from tests.conftest import require_programs

GiB = 1 << 30


def server(**machine: object) -> Inventory:
    return Inventory(
        machine=Machine(firmware="uefi", secure_boot=True, **machine),  # type: ignore[arg-type]
        cpu=Cpu(sockets=2, cores=16, threads=32),
        memory=Memory(installed_bytes=64 * GiB, usable_bytes=63 * GiB),
        disks=[
            Disk("sda", "/dev/sda", 480 * GiB),
            Disk("sdb", "/dev/sdb", 8 * GiB, live_medium=True),
            Disk("sr0", "/dev/sr0", 0),
            Disk("nvme0n1", "/dev/nvme0n1", 1024 * GiB),
        ],
        nics=[Nic("eno1", "3C:FD:FE:00:00:01"), Nic("eno2", "3c:fd:fe:00:00:02")],
    )


def test_profile_matches_the_server() -> None:
    profile = profile_from_inventory(server(), name="web01")
    assert (profile.sockets, profile.cores, profile.threads, profile.vcpus) == (2, 8, 2, 32)
    assert profile.memory_mib == 64 * 1024
    assert (profile.firmware, profile.secure_boot, profile.machine) == ("uefi", True, "q35")
    # Same disks, same order; not the agent's medium, not an empty drive.
    assert [(d.source, d.target) for d in profile.disks] == [("sda", "vda"), ("nvme0n1", "vdb")]
    assert [d.boot for d in profile.disks] == [True, False]
    assert [(n.mac, n.source_name, n.model) for n in profile.nics] == [
        ("3c:fd:fe:00:00:01", "eno1", "virtio"),
        ("3c:fd:fe:00:00:02", "eno2", "virtio"),
    ]
    assert HardwareProfile.from_json(profile.to_json()) == profile


def test_overrides_and_their_errors() -> None:
    inv = server()
    profile = profile_from_inventory(
        inv, name="x", disks=["nvme0n1"],
        overrides=Overrides(name="web01-vm", vcpus=4, memory_mib=8192, cpu_model="Skylake-Server"),
    )  # fmt: skip
    assert (profile.name, profile.vcpus, profile.sockets, profile.memory_mib) == (
        "web01-vm", 4, 1, 8192,
    )  # fmt: skip
    assert [d.source for d in profile.disks] == ["nvme0n1"]
    with pytest.raises(ProfileError, match="sdz: the inventory has no such disk"):
        profile_from_inventory(inv, name="x", disks=["sdz"])
    with pytest.raises(ProfileError, match="do not split over 2 sockets"):
        profile_from_inventory(inv, name="x", overrides=Overrides(vcpus=3, sockets=2))
    with pytest.raises(ProfileError, match="at least 512 MiB"):
        profile_from_inventory(inv, name="x", overrides=Overrides(memory_mib=100))


def test_unknowns_get_safe_values() -> None:
    bare = Inventory(disks=[Disk("sda", "/dev/sda", 10 * GiB)])
    profile = profile_from_inventory(bare, name="x")
    assert (profile.firmware, profile.vcpus, profile.memory_mib) == ("bios", 1, 2048)
    odd = Inventory(cpu=Cpu(sockets=2, cores=3, threads=6), disks=bare.disks)
    assert profile_from_inventory(odd, name="x").vcpus == 6  # flattened, count kept


def test_many_disks_are_named_as_the_kernel_names_them() -> None:
    disks = [Disk(f"d{i}", f"/dev/d{i}", GiB) for i in range(28)]
    profile = profile_from_inventory(Inventory(disks=disks), name="x")
    assert [d.target for d in profile.disks][-3:] == ["vdz", "vdaa", "vdab"]


@pytest.mark.parametrize("domain_type", ["kvm", "qemu"])
def test_domain_xml_passes_libvirts_schema(tmp_path: Path, domain_type: str) -> None:
    require_programs("virt-xml-validate")
    profile = profile_from_inventory(server(), name="web01")
    for disk in profile.disks:
        disk.file = str(tmp_path / f"web01-{disk.target}.qcow2")
    placement = Placement(domain_type, "bridge:br0", str(tmp_path / "console.log"))
    xml = domain_xml(profile, placement)
    path = tmp_path / "web01.xml"
    path.write_text(xml)
    done = subprocess.run(["virt-xml-validate", path, "domain"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + xml

    root = ET.fromstring(xml)
    assert root.get("type") == domain_type
    assert root.findtext("vcpu") == "32"
    topology = root.find("cpu/topology")
    assert topology is not None
    assert (topology.get("sockets"), topology.get("cores"), topology.get("threads")) == (
        "2", "8", "2",
    )  # fmt: skip
    assert root.find("os").get("firmware") == "efi"  # type: ignore[union-attr]
    assert [d.get("dev") for d in root.findall("devices/disk/target")] == ["vda", "vdb"]
    assert {d.get("bus") for d in root.findall("devices/disk/target")} == {"virtio"}
    assert [m.get("address") for m in root.findall("devices/interface/mac")] == [
        "3c:fd:fe:00:00:01", "3c:fd:fe:00:00:02",
    ]  # fmt: skip
    assert {m.get("type") for m in root.findall("devices/interface/model")} == {"virtio"}
    assert root.find("devices/serial/log").get("file") == placement.console_log  # type: ignore[union-attr]
    channel = root.find("devices/channel/target")
    assert channel is not None and channel.get("name") == "org.qemu.guest_agent.0"
    assert root.find("devices/rng") is not None


def test_a_bad_network_is_refused() -> None:
    profile = profile_from_inventory(server(), name="web01")
    with pytest.raises(ValueError, match="use user, network:NAME or bridge:NAME"):
        domain_xml(profile, Placement(network="bridge"))
