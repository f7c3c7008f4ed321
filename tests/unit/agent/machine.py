"""A recorded machine: the sysfs, /proc and /dev files the agent reads, as found on a
q35 QEMU guest with a SATA disk, an NVMe disk, a virtio disk, a CD-ROM and two NICs.

`write_machine(root)` lays them out under `root`; tests edit or delete files from
there to make odd and missing values.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
EFI = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

SATA = "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"
NVME = "devices/pci0000:00/0000:00:04.0/nvme/nvme0"
VIRTIO = "devices/pci0000:00/0000:00:05.0/virtio2"
CDROM = "devices/pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def _write(root: Path, path: str, content: str | bytes) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content + "\n")


def _link(root: Path, path: str, target: str) -> None:
    link = root / path.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def vpd_pg80(serial: str) -> bytes:
    data = serial.encode()
    return bytes([0, 0x80]) + len(data).to_bytes(2, "big") + data


def _disk(root: Path, device_dir: str, name: str, sectors: int, **files: str | bytes) -> str:
    block = f"/sys/{device_dir}/block/{name}"
    _write(root, f"{block}/size", str(sectors))
    _write(root, f"{block}/ro", "0")
    _write(root, f"{block}/removable", files.pop("removable", "0"))
    _write(root, f"{block}/queue/logical_block_size", files.pop("logical", "512"))
    _write(root, f"{block}/queue/physical_block_size", files.pop("physical", "512"))
    _write(root, f"{block}/queue/rotational", files.pop("rotational", "1"))
    for rel, content in files.items():
        _write(root, f"{block}/{rel}", content)
    _link(root, f"/sys/block/{name}", f"../{device_dir}/block/{name}")
    return block


def _partition(root: Path, block: str, name: str, number: int, start: int, size: int) -> None:
    _write(root, f"{block}/{name}/partition", str(number))
    _write(root, f"{block}/{name}/start", str(start))
    _write(root, f"{block}/{name}/size", str(size))


def write_machine(root: Path, uefi: bool = False) -> None:
    _write(root, "/proc/cpuinfo", sample("cpuinfo-qemu-2sockets"))
    _write(root, "/proc/meminfo", sample("meminfo"))
    _write(root, "/proc/self/mountinfo", sample("mountinfo"))
    dmi = {
        "sys_vendor": "QEMU",
        "product_name": "Standard PC (Q35 + ICH9, 2009)",
        "product_serial": "P2V-TEST-0042",
        "product_uuid": "6F2C1D3E-8A4B-4C5D-9E6F-0A1B2C3D4E5F",
    }
    for name, value in dmi.items():
        _write(root, f"/sys/class/dmi/id/{name}", value)

    sda = _disk(root, SATA, "sda", 6291456)
    _write(root, f"/sys/{SATA}/model", "QEMU HARDDISK   ")
    _write(root, f"/sys/{SATA}/vpd_pg80", vpd_pg80("SATA-SERIAL-1"))
    _partition(root, sda, "sda1", 1, 2048, 5240832)
    _partition(root, sda, "sda2", 2, 5242880, 1046528)
    nvme = _disk(root, NVME, "nvme0n1", 2097152, rotational="0", logical="4096", physical="4096")
    _write(root, f"/sys/{NVME}/model", "QEMU NVMe Ctrl")
    _write(root, f"/sys/{NVME}/serial", "NVME-SERIAL-9")
    _link(root, f"{nvme}/device", "../../../nvme0")
    # The path of a multipath-capable namespace: listed in /sys/block, no /dev node.
    _disk(root, NVME, "nvme0c0n1", 2097152, hidden="1")
    _link(root, f"/sys/{SATA}/block/sda/device", "../../../0:0:0:0")
    _disk(root, VIRTIO, "vda", 1048576, serial="VIRTIO-SERIAL-3")
    _disk(root, CDROM, "sr0", 4096, removable="1")
    _disk(root, "devices/virtual", "loop0", 4096)
    _link(root, "/dev/disk/by-id/ata-QEMU_HARDDISK_SATA-SERIAL-1", "../../sda")
    _link(root, "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", "../../sda")
    _link(root, "/dev/disk/by-id/ata-QEMU_HARDDISK_SATA-SERIAL-1-part1", "../../sda1")
    _link(root, "/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_NVME-SERIAL-9", "../../nvme0n1")

    for nic, mac, slot, operstate, speed in (
        ("enp0s2", "52:54:00:12:34:01", "0000:00:02.0", "up", "1000"),
        ("enp0s3", "52:54:00:12:34:02", "0000:00:03.0", "down", None),
    ):
        net = f"/sys/devices/pci0000:00/{slot}/net/{nic}"
        _write(root, f"{net}/address", mac.upper())
        _write(root, f"{net}/operstate", operstate)
        if speed:
            _write(root, f"{net}/speed", speed)
        _link(root, f"{net}/device", "../../../" + slot)
        _link(root, f"/sys/devices/pci0000:00/{slot}/driver", "../../../bus/pci/drivers/e1000e")
        _link(root, f"/sys/class/net/{nic}", f"../../devices/pci0000:00/{slot}/net/{nic}")
    _write(root, "/sys/devices/virtual/net/lo/address", "00:00:00:00:00:00")
    _link(root, "/sys/class/net/lo", "../../devices/virtual/net/lo")

    for slot, vendor, device, klass, driver in (
        ("0000:00:00.0", "0x8086", "0x29c0", "0x060000", None),
        ("0000:00:1f.2", "0x8086", "0x2922", "0x010601", "ahci"),
        ("0000:01:00.0", "0x1b36", "0x0010", "0x010802", "nvme"),
    ):
        base = f"/sys/devices/pci0000:00/{slot}"
        _write(root, f"{base}/vendor", vendor)
        _write(root, f"{base}/device", device)
        _write(root, f"{base}/class", klass)
        if driver:
            _link(root, f"{base}/driver", f"../../../bus/pci/drivers/{driver}")
        _link(root, f"/sys/bus/pci/devices/{slot}", f"../../../devices/pci0000:00/{slot}")

    if uefi:
        write_efivars(root)


def load_option(attributes: int, description: str, file_path: str | None) -> bytes:
    """An EFI_LOAD_OPTION as firmware stores it: a hard-drive node, then the file."""
    nodes = b""
    # Hard drive media path (type 4, subtype 1): partition 1, GPT signature; 42 bytes.
    nodes += struct.pack("<BBH", 4, 1, 42) + struct.pack("<IQQ", 1, 2048, 1048576)
    nodes += bytes(16) + bytes([2, 2])
    if file_path:
        name = (file_path + "\0").encode("utf-16-le")
        nodes += struct.pack("<BBH", 4, 4, 4 + len(name)) + name
    nodes += struct.pack("<BBH", 0x7F, 0xFF, 4)
    text = (description + "\0").encode("utf-16-le")
    return struct.pack("<IH", attributes, len(nodes)) + text + nodes


def write_efivars(root: Path, secure_boot: bool = True) -> None:
    efivars = "/sys/firmware/efi/efivars"
    attrs = struct.pack("<I", 7)
    _write(root, f"{efivars}/SecureBoot-{EFI}", attrs + bytes([int(secure_boot)]))
    _write(root, f"{efivars}/BootOrder-{EFI}", attrs + struct.pack("<3H", 4, 0, 1))
    _write(
        root,
        f"{efivars}/Boot0004-{EFI}",
        attrs + load_option(1, "debian", "\\EFI\\debian\\shimx64.efi"),
    )
    _write(root, f"{efivars}/Boot0000-{EFI}", attrs + load_option(1, "UiApp", None))
    _write(root, f"{efivars}/Boot0001-{EFI}", attrs + load_option(0, "UEFI PXEv4", None))
    _write(root, f"{efivars}/Boot0002-{EFI}", attrs + b"\x01\x00")  # truncated: malformed
