"""Device-name fix-ups on a real filesystem, in a real libguestfs appliance: fstab
by UUID, stale LVM device records removed, originals kept."""

from __future__ import annotations

from pathlib import Path

from imagebuilder.fixups.devices import fix_device_names
from p2v import appliance

FSTAB = "/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sda2 none swap sw 0 0\n"
DEVICES = "VERSION=1.1.1\nIDTYPE=sys_wwid IDNAME=naa.5000c500a1b2c3d4 DEVNAME=/dev/sda3 PVID=x\n"


def test_fstab_by_uuid_and_stale_lvm_records_removed(tmp_path: Path) -> None:
    disk = tmp_path / "guest.raw"
    with open(disk, "wb") as f:
        f.truncate(96 << 20)
    g = appliance.new_handle()
    try:
        g.add_drive_opts(str(disk), format="raw")
        g.launch()
        g.part_init("/dev/sda", "mbr")
        g.part_add("/dev/sda", "p", 2048, 131071)
        g.part_add("/dev/sda", "p", 131072, -2048)
        g.mkfs("ext4", "/dev/sda1")
        g.mkswap("/dev/sda2")
        g.mount("/dev/sda1", "/")
        g.mkdir_p("/etc/lvm/devices")
        g.write("/etc/fstab", FSTAB.encode())
        g.write("/etc/lvm/devices/system.devices", DEVICES.encode())

        report = fix_device_names(g, {"sda": "/dev/sda"})

        root, swap = g.vfs_uuid("/dev/sda1"), g.vfs_uuid("/dev/sda2")
        assert g.cat("/etc/fstab") == (
            f"UUID={root} / ext4 errors=remount-ro 0 1\nUUID={swap} none swap sw 0 0\n"
        )
        assert not g.exists("/etc/lvm/devices/system.devices")
        assert g.cat("/etc/lvm/devices/system.devices.p2v-orig") == DEVICES
        assert g.cat("/etc/fstab.p2v-orig") == FSTAB
        assert "/etc/lvm/devices/system.devices: removed (named the old disks)" in report.changes
        g.shutdown()
    finally:
        g.close()
