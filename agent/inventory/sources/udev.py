"""What udev knows about a disk (stable by-id name, serial, bus), through pyudev.

udev's database exists only where udevd runs; without it pyudev still enumerates,
and the /dev/disk/by-id links, when present, are read directly.
"""

from __future__ import annotations

import os
from typing import Any

from agent.inventory.probe import Probe

# Preferred by-id links, most telling first; wwn- and nvme-eui. names say less to people.
_BY_ID_ORDER = ("nvme-", "ata-", "scsi-", "virtio-", "usb-", "mmc-", "wwn-", "nvme-eui.")


def udev_properties(name: str) -> dict[str, str]:
    try:
        import pyudev
    except ImportError:
        return {}
    try:
        device: Any = pyudev.Devices.from_name(pyudev.Context(), "block", name)
    except Exception:  # pyudev raises its own errors for unknown devices
        return {}
    return {k: str(v) for k, v in device.properties.items()}


def by_id_link(probe: Probe, name: str) -> str | None:
    """The most telling /dev/disk/by-id link to /dev/NAME, if any."""
    directory = probe.path("/dev/disk/by-id")
    links = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if os.path.basename(target) == name:
            links.append(entry.name)
    if not links:
        return None

    def rank(link: str) -> tuple[int, str]:
        ranks = [i for i, prefix in enumerate(_BY_ID_ORDER) if link.startswith(prefix)]
        return (min(ranks) if ranks else len(_BY_ID_ORDER), link)

    return f"/dev/disk/by-id/{min(links, key=rank)}"


BUS_NAMES = {"ata": "sata", "nvme": "nvme", "scsi": "scsi", "usb": "usb", "virtio": "virtio"}
