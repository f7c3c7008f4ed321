"""The whole inventory of a recorded machine, and what happens when parts are missing."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from agent.inventory.collect import collect, is_live_medium
from agent.inventory.model import Disk, Filesystem, Inventory
from agent.inventory.probe import Probe
from tests.unit.agent.machine import sample, write_machine

GiB = 1 << 30
RECORDED = {
    "dmidecode": "dmidecode-t17-qemu",
    "ip": "ip-addr.json",
    "lspci": "lspci-vmm",
}


def playback(argv: Sequence[str]) -> str | None:
    """Recorded output of the tools the agent runs; None for any other."""
    name = RECORDED.get(argv[0])
    return sample(name) if name else None


def test_recorded_machine(tmp_path: Path) -> None:
    write_machine(tmp_path, uefi=True)
    inv = collect(Probe(root=tmp_path, runner=playback))
    m = inv.machine
    assert (m.vendor, m.serial, m.uuid) == (
        "QEMU",
        "P2V-TEST-0042",
        "6f2c1d3e-8a4b-4c5d-9e6f-0a1b2c3d4e5f",
    )
    assert m.firmware == "uefi" and m.secure_boot is True
    assert (inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads) == (2, 2, 2)
    assert inv.memory.installed_bytes == 1536 << 20
    # Loop devices, the CD-ROM and a hidden NVMe multipath node are not disks of the machine.
    assert [d.name for d in inv.disks] == ["nvme0n1", "sda", "vda"]
    sda, nvme, vda = inv.disk("sda"), inv.disk("nvme0n1"), inv.disk("vda")
    assert sda and nvme and vda
    assert (sda.size_bytes, sda.serial, sda.model, sda.transport) == (
        3 * GiB,
        "SATA-SERIAL-1",
        "QEMU HARDDISK",
        "sata",
    )
    assert sda.by_id == "/dev/disk/by-id/ata-QEMU_HARDDISK_SATA-SERIAL-1"  # not the wwn- link
    assert [(p.number, p.name, p.start_bytes) for p in sda.partitions] == [
        (1, "sda1", 1 << 20),
        (2, "sda2", 5242880 * 512),
    ]
    assert (nvme.serial, nvme.transport, nvme.logical_sector, nvme.rotational) == (
        "NVME-SERIAL-9",
        "nvme",
        4096,
        False,
    )
    assert (vda.serial, vda.transport) == ("VIRTIO-SERIAL-3", "virtio")
    enp0s2, enp0s3 = inv.nics
    assert (enp0s2.mac, enp0s2.driver, enp0s2.link, enp0s2.speed_mbps) == (
        "52:54:00:12:34:01",
        "e1000e",
        "up",
        1000,
    )
    assert enp0s2.addresses == ["10.0.2.15/24", "fe80::5054:ff:fe12:3401/64"]
    assert (enp0s3.link, enp0s3.speed_mbps, enp0s3.addresses) == ("down", None, [])
    sata = next(p for p in inv.pci_devices if p.slot == "0000:00:1f.2")
    assert (sata.vendor_id, sata.device_id, sata.class_id, sata.driver) == (
        "8086",
        "2922",
        "010601",
        "ahci",
    )
    assert sata.description and "AHCI" in sata.description
    assert Inventory.from_json(inv.to_json()) == inv


def test_asked_for_disks_only(tmp_path: Path) -> None:
    write_machine(tmp_path)
    probe = Probe(root=tmp_path, runner=playback)
    inv = collect(probe, disks=["loop0", "sdq"])
    assert [d.name for d in inv.disks] == ["loop0"]
    assert any("sdq" in note for note in inv.notes)


def test_missing_sources_lower_what_is_known(tmp_path: Path) -> None:
    write_machine(tmp_path)
    shutil.rmtree(tmp_path / "sys/class/dmi")
    (tmp_path / "proc/cpuinfo").unlink()
    (tmp_path / "proc/meminfo").unlink()
    (tmp_path / "sys/block/vda/size").unlink()
    (tmp_path / "sys/block/sda/device/vpd_pg80").unlink()
    (tmp_path / "sys/devices/pci0000:00/0000:00:02.0/net/enp0s2/speed").write_text("-1\n")
    inv = collect(Probe(root=tmp_path, runner=lambda argv: None))
    assert inv.machine.serial is None and inv.machine.uuid is None
    assert inv.cpu.threads is None and inv.memory.usable_bytes is None
    assert inv.memory.installed_bytes is None
    assert [d.name for d in inv.disks] == ["nvme0n1", "sda"]  # vda has no size: left out
    assert inv.disk("sda").serial is None  # type: ignore[union-attr]
    assert inv.nics[0].speed_mbps is None
    notes = "\n".join(inv.notes)
    for what in ("cpuinfo", "meminfo", "installed memory", "vda", "serial, uuid"):
        assert what in notes


def test_live_medium_by_label_or_mount() -> None:
    disk = Disk(name="sdb", path="/dev/sdb", size_bytes=1)
    assert not is_live_medium(disk)
    disk.filesystem = Filesystem("iso9660", label="P2V-AGENT 0.1")
    assert is_live_medium(disk)
    disk.filesystem = Filesystem("ext4", mountpoint="/")
    assert is_live_medium(disk)
    disk.filesystem = Filesystem("ext4", mountpoint="/mnt")
    assert not is_live_medium(disk)
