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
        g.mount(guest.mountpoints[mountpoint], mountpoint)
    return guest


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
