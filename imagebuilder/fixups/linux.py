"""All Linux fix-ups in order, on a launched libguestfs handle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagebuilder.fixups import FixupReport
from imagebuilder.fixups.bootloader import fix_bootloader
from imagebuilder.fixups.devices import fix_device_names, guest_device_map
from imagebuilder.fixups.initramfs import fix_initramfs
from imagebuilder.fixups.network import pin_nic_names


class GuestError(RuntimeError):
    """The disks hold no guest that can be converted; says why."""


@dataclass(frozen=True)
class GuestOS:
    root: str  # the appliance's device of the root filesystem
    type: str  # "linux", "windows", ...
    distro: str
    version: str
    hostname: str
    mountpoints: dict[str, str]


def inspect_and_mount(g: Any) -> GuestOS:
    """Find the one operating system on the disks and mount its filesystems."""
    roots = g.inspect_os()
    if not roots:
        encrypted = [dev for dev in g.list_devices() + g.list_partitions()
                     if _vfs_type(g, dev) == "crypto_LUKS"]  # fmt: skip
        if encrypted:
            raise GuestError(
                f"no operating system found on the disks, and {', '.join(encrypted)} is "
                "encrypted (LUKS): the root is likely inside, and this version cannot "
                "open encrypted volumes (no key can be given yet)"
            )
        raise GuestError("no operating system found on the disks")
    if len(roots) > 1:
        raise GuestError(f"more than one operating system on the disks: {', '.join(roots)}")
    root = roots[0]
    guest = GuestOS(
        root=root,
        type=g.inspect_get_type(root),
        distro=g.inspect_get_distro(root),
        version=f"{g.inspect_get_major_version(root)}.{g.inspect_get_minor_version(root)}",
        hostname=g.inspect_get_hostname(root),
        mountpoints=g.inspect_get_mountpoints(root),
    )
    for mountpoint in sorted(guest.mountpoints, key=len):  # "/" before "/boot"
        device = guest.mountpoints[mountpoint]
        try:
            g.mount(device, mountpoint)
        except RuntimeError as e:
            # /etc/fstab names devices as the guest's kernel named them; the disks
            # were given (or the live system found them) in another order.
            raise GuestError(
                f"the guest mounts {device} on {mountpoint} (its /etc/fstab), which these "
                f"disks do not have in that order: {str(e).split(': ')[-1]}. Give the disks "
                "in the order the server's own system names them (sda first)"
            ) from None
    return guest


def _vfs_type(g: Any, device: str) -> str:
    try:
        return str(g.vfs_type(device))
    except RuntimeError:
        return ""


def boot_disk_index(g: Any, guest: GuestOS) -> int:
    """Which of the handle's disks the firmware must boot: the one holding the ESP
    (UEFI), else /boot, else / (GRUB is installed on that disk); the first disk when
    they live on LVM or RAID."""
    devices = g.list_devices()
    for mountpoint in ("/boot/efi", "/boot", "/"):
        spec = guest.mountpoints.get(mountpoint)
        if not spec:
            continue
        try:
            disk = g.part_to_dev(spec)
        except RuntimeError:
            continue  # not a partition: a logical volume, an md array
        if disk in devices:
            return int(devices.index(disk))
    return 0


def fix_linux_guest(g: Any, sources: list[str], nics: list[tuple[str, str]]) -> list[FixupReport]:
    """`sources`: the guest's names of its disks (sda, nvme0n1, ...) in the order the
    handle has them; `nics`: (MAC, name the guest used) of NICs that keep their MAC.
    The NIC names are pinned before the initramfs is extended, which carries them."""
    disks = guest_device_map(sources, g.list_devices())
    return [
        pin_nic_names(g, nics),
        fix_device_names(g, disks),
        fix_bootloader(g, disks),
        fix_initramfs(g),
    ]
