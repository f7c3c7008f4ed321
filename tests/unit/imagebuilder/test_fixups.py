"""The pure parts of the guest fix-ups: device names, tables, kernel arguments,
module dependencies. (The fix-ups on a real guest: tests/e2e/test_guest_fixups.py.)"""

from __future__ import annotations

from imagebuilder.fixups.bootloader import rename_kernel_args
from imagebuilder.fixups.devices import appliance_device, rewrite_table
from imagebuilder.fixups.initramfs import module_name, modules_to_add
from imagebuilder.fixups.network import link_file, udev_rule

DISKS = {"sda": "/dev/sda", "nvme0n1": "/dev/sdb", "sdc": "/dev/sdc"}


def test_guest_device_names_map_through_the_disk_order() -> None:
    assert appliance_device("/dev/sda2", DISKS) == "/dev/sda2"
    assert appliance_device("/dev/nvme0n1p3", DISKS) == "/dev/sdb3"
    assert appliance_device("/dev/nvme0n1", DISKS) == "/dev/sdb"
    assert appliance_device("/dev/sdc", DISKS) == "/dev/sdc"
    assert appliance_device("/dev/sdd1", DISKS) is None  # not a disk we convert
    for stable in ("UUID=1234", "/dev/mapper/vg-root", "/dev/disk/by-uuid/x", "tmpfs"):
        assert appliance_device(stable, DISKS) is None
    assert appliance_device("/dev/sda1", {"sda": "/dev/nvme0n1"}) == "/dev/nvme0n1p1"


def test_fstab_rewrite_keeps_everything_else() -> None:
    fstab = (
        "# /dev/sda1 was the installer's root\n"
        "/dev/sda1\t/\text4\terrors=remount-ro\t0\t1\n"
        "/dev/mapper/vg-home /home ext4 defaults 0 2\n"
        "/dev/sda2 none swap sw 0 0\n"
    )
    new, changes = rewrite_table(fstab, 0, {"/dev/sda1": "UUID=r", "/dev/sda2": "UUID=s"})
    assert new == (
        "# /dev/sda1 was the installer's root\n"
        "UUID=r\t/\text4\terrors=remount-ro\t0\t1\n"
        "/dev/mapper/vg-home /home ext4 defaults 0 2\n"
        "UUID=s none swap sw 0 0\n"
    )
    assert changes == ["/dev/sda1 -> UUID=r", "/dev/sda2 -> UUID=s"]
    crypttab = "cryptroot /dev/sda3 none luks\n"
    assert rewrite_table(crypttab, 1, {"/dev/sda3": "UUID=c"})[0] == "cryptroot UUID=c none luks\n"


def test_kernel_arguments_by_uuid() -> None:
    names = {"/dev/sda1": "UUID=r", "/dev/sda2": "UUID=s"}
    line = 'GRUB_CMDLINE_LINUX="root=/dev/sda1 resume=/dev/sda2 rd.lvm.lv=vg/root quiet"'
    new, changes = rename_kernel_args(line, names.get)
    assert new == 'GRUB_CMDLINE_LINUX="root=UUID=r resume=UUID=s rd.lvm.lv=vg/root quiet"'
    assert changes == ["root=/dev/sda1 -> root=UUID=r", "resume=/dev/sda2 -> resume=UUID=s"]
    assert rename_kernel_args("root=/dev/mapper/vg-root", names.get)[0] == (
        "root=/dev/mapper/vg-root"
    )


MODULES_DEP = """\
block/virtio_blk.ko.xz: virtio/virtio.ko.xz virtio/virtio_ring.ko.xz
virtio/virtio_pci.ko.xz: virtio/virtio_pci_modern_dev.ko.xz virtio/virtio.ko.xz
virtio/virtio_pci_modern_dev.ko.xz:
virtio/virtio.ko.xz:
virtio/virtio_ring.ko.xz:
net/virtio_net.ko.xz: net/net_failover.ko.xz virtio/virtio.ko.xz
net/net_failover.ko.xz: core/failover.ko.xz
core/failover.ko.xz:
ata/ahci.ko.xz:
"""


def test_modules_to_add_follow_dependencies_and_skip_builtins() -> None:
    added = modules_to_add(
        MODULES_DEP, "virtio/virtio_pci.ko\n", ("virtio_pci", "virtio_blk",
                                                                "virtio_net", "virtio_scsi"),
    )  # fmt: skip
    assert [module_name(p) for p in added] == [
        "virtio_blk", "virtio_net", "virtio", "virtio_ring", "net_failover", "failover",
    ]  # fmt: skip
    assert module_name("kernel/drivers/hid/hid-generic.ko.zst") == "hid_generic"


def test_nic_pinning_files() -> None:
    assert "MACAddress=52:54:00:12:34:56\n\n[Link]\nName=eno1\n" in link_file(
        "52:54:00:12:34:56", "eno1"
    )
    assert udev_rule("52:54:00:12:34:56", "eno1") == (
        'SUBSYSTEM=="net", ACTION=="add", ATTR{address}=="52:54:00:12:34:56", NAME="eno1"\n'
    )
