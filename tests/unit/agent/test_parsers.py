"""Every parser of the agent on recorded tool output, including odd and missing values."""

from __future__ import annotations

import json

from agent.inventory.sources import cpu, dmi, filesystems, lvm, mdraid, memory, network, pci
from agent.inventory.sources.block import parse_vpd_serial, transport_from_path
from tests.unit.agent.machine import sample, vpd_pg80

GiB, MiB = 1 << 30, 1 << 20


def test_cpuinfo_two_sockets_of_one_core() -> None:
    c = cpu.parse_cpuinfo(sample("cpuinfo-qemu-2sockets"))
    assert (c.sockets, c.cores, c.threads) == (2, 2, 2)
    assert c.vendor == "GenuineIntel" and c.model == "QEMU Virtual CPU version 2.5+"
    assert "sse2" in c.flags and "lahf_lm" in c.flags


def test_cpuinfo_hyperthreads_count_as_threads_not_cores() -> None:
    c = cpu.parse_cpuinfo(sample("cpuinfo-ht-1socket"))
    assert (c.sockets, c.cores, c.threads) == (1, 2, 4)
    assert "vmx" in c.flags


def test_cpuinfo_without_topology_leaves_it_unknown() -> None:
    c = cpu.parse_cpuinfo(sample("cpuinfo-arm-no-topology"))
    assert c.threads == 2 and c.sockets is None and c.cores is None and c.model is None
    assert cpu.parse_cpuinfo("").threads is None


def test_memory_sizes() -> None:
    assert memory.parse_meminfo(sample("meminfo")) == 1481700 * 1024
    assert memory.parse_meminfo("nothing here") is None
    assert memory.parse_dmidecode_memory(sample("dmidecode-t17-qemu")) == 1536 * MiB
    # An empty slot ("No Module Installed") counts for nothing; GB and MB both read.
    assert memory.parse_dmidecode_memory(sample("dmidecode-t17-server")) == 24 * GiB
    assert memory.parse_dmidecode_memory("# dmidecode 3.4\n") is None


def test_dmidecode_system() -> None:
    fields = dmi.parse_dmidecode_system(sample("dmidecode-t1-qemu"))
    assert fields == {
        "vendor": "QEMU",
        "product": "Standard PC (Q35 + ICH9, 2009)",
        "serial": "P2V-TEST-0042",
        "uuid": "6F2C1D3E-8A4B-4C5D-9E6F-0A1B2C3D4E5F",
    }


def test_dmidecode_placeholders_are_unknown_and_board_fields_ignored() -> None:
    fields = dmi.parse_dmidecode_system(sample("dmidecode-t1-whitebox"))
    assert fields["vendor"] is None and fields["product"] is None and fields["serial"] is None
    assert fields["uuid"] == "03000200-0400-0500-0006-000700080009"


def test_vpd_serial_and_transport() -> None:
    assert parse_vpd_serial(vpd_pg80("  WD-WCC4N1234567 ")) == "WD-WCC4N1234567"
    assert parse_vpd_serial(b"\x00\x83\x00\x04abcd") is None  # another VPD page
    assert parse_vpd_serial(b"") is None
    assert (
        transport_from_path("../devices/pci0000:00/0000:00:1f.2/ata3/host2/t/2:0:0:0/block/sdc")
        == "sata"
    )
    assert transport_from_path("../devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1") == "nvme"
    assert transport_from_path("../devices/pci0000:00/0000:00:05.0/virtio2/block/vda") == "virtio"
    assert (
        transport_from_path(
            "../devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdd"
        )
        == "usb"
    )
    assert (
        transport_from_path(
            "../devices/pci0000:00/0000:00:03.0/host0/target0:0:0/0:0:0:0/block/sda"
        )
        == "scsi"
    )
    assert transport_from_path("../devices/virtual/block/loop0") is None


def test_blkid_dumpe2fs_mountinfo() -> None:
    values = filesystems.parse_blkid_export(sample("blkid-ext4"))
    assert values["TYPE"] == "ext4" and values["USAGE"] == "filesystem"
    assert values["PART_ENTRY_TYPE"] == "0fc63daf-8483-4772-8e79-3d69d8477de4"
    assert filesystems.parse_dumpe2fs(sample("dumpe2fs-h")) == (306176 * 1024, 276661 * 1024)
    assert filesystems.parse_dumpe2fs("Block size: 4096\n") is None
    mounts = filesystems.parse_mountinfo(sample("mountinfo"))
    assert mounts["11:0"] == "/run/p2v/medium" and mounts["8:17"] == "/mnt/with space"


def test_lvm_reports() -> None:
    seen = []

    def probe_fs(path: str, offset: int, size: int) -> None:
        seen.append((path, offset, size))

    groups = lvm.build_volume_groups(
        lvm.parse_report(sample("lvm-vgs.json"), "vg"),
        lvm.parse_report(sample("lvm-pvs.json"), "pv"),
        lvm.parse_report(sample("lvm-lvs-segments.json"), "seg"),
        probe_fs,  # type: ignore[arg-type]
    )
    srv, empty = groups
    assert (srv.name, srv.size_bytes, srv.free_bytes, srv.extent_bytes) == (
        "srv-vg",
        754974720,
        440401920,
        4 * MiB,
    )
    assert srv.physical_volumes == ["/dev/sda2"] and empty.physical_volumes == ["/dev/sdb"]
    assert [(lv.name, lv.size_bytes) for lv in srv.logical_volumes] == [
        ("root", 100 * MiB),
        ("home", 200 * MiB),
    ]
    assert empty.logical_volumes == []
    # Only the one-segment linear LV is probed, at pe_start + first extent.
    assert seen == [("/dev/sda2", 1 * MiB, 100 * MiB)]


def test_mdstat_and_examine() -> None:
    arrays = {a.name: a for a in mdraid.parse_mdstat(sample("mdstat"))}
    assert arrays["md0"].level == "raid1" and arrays["md0"].members == ["sdb1", "sda1"]
    assert arrays["md0"].active and not arrays["md127"].active
    assert arrays["md127"].members == ["sdc2"] and arrays["md127"].level == "unknown"
    assert arrays["md1"].members == ["sdd1", "sde1", "sdf1"] and arrays["md1"].level == "raid5"
    values = mdraid.parse_examine_export(sample("mdadm-examine-sdc2"))
    (found,) = mdraid.group_members({"sdc2": values, "sdz": {}})
    assert (found.name, found.level, found.members, found.active) == (
        "data",
        "raid1",
        ["sdc2"],
        False,
    )
    assert found.uuid == "4c0d2f5a:1e2b3c4d:5e6f7a8b:9c0d1e2f"


def test_ip_addresses_skip_host_scope() -> None:
    addresses = network.parse_ip_addresses(sample("ip-addr.json"))
    assert addresses == {"enp0s2": ["10.0.2.15/24", "fe80::5054:ff:fe12:3401/64"]}
    assert network.parse_ip_addresses(json.dumps([])) == {}


def test_lspci_names() -> None:
    names = pci.parse_lspci_vmm(sample("lspci-vmm"))
    assert names["0000:00:1f.2"].startswith("Intel Corporation 82801IR/IO/IH")
    assert names["0000:01:00.0"] == "Red Hat, Inc. QEMU NVM Express Controller"
    assert pci.parse_lspci_vmm("") == {}
