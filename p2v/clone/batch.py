"""Many clones' disks in one libguestfs appliance, up to MAX_DISKS in each: the same
root partition of every disk mounted in turn. Clones of one golden are alike, so the
root is the golden's (recorded when it was sealed) instead of each disk inspected,
which is slow; and one appliance for many disks, never one per clone, is what makes
reading or personalizing hundreds of clones quick. An appliance's start grows with
its disks (it probes each), so many disks are shared out over one appliance per
core, started side by side; `visit` must then be safe to call from several threads
(each call on its own handle)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from p2v import appliance

MAX_DISKS = 255  # libguestfs' limit of disks in one appliance (virtio-scsi)
MIN_DISKS = 16  # below twice this, one appliance: another's start would cost more

# What is done with one clone's root, mounted at /: (handle, clone's name) -> its record.
Visit = Callable[[Any, str], dict[str, Any]]


def each_root(
    disks: dict[str, str], root: str | None, visit: Visit, writable: bool = False
) -> dict[str, dict[str, Any]]:
    """Name -> what `visit` made of that clone's disk (a local file), or {"error": why}
    when its root could not be mounted. `root`: the golden's root as its appliance
    named it (/dev/sda1); anything else (an LVM root) has each disk inspected, which
    only works read-only (the clones' volume groups share one name)."""
    names = list(disks)
    cores = os.cpu_count() or 1
    size = batch_size(len(names), cores)
    batches = [{n: disks[n] for n in names[first : first + size]}
               for first in range(0, len(names), size)]  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(min(cores, len(batches))) as pool:
        for found in pool.map(lambda b: _batch(b, root, visit, writable), batches):
            out |= found
    return out


def batch_size(disks: int, cores: int) -> int:
    """Disks per appliance: each core boots one (an appliance's start grows with its
    disks, which it probes one by one), none with fewer than MIN_DISKS (a start costs
    as much as probing that many) or more than MAX_DISKS. Pure."""
    appliances = max(1, min(cores, disks // MIN_DISKS))
    return max(1, min(MAX_DISKS, -(-disks // appliances)))


def _batch(
    disks: dict[str, str], root: str | None, visit: Visit, writable: bool
) -> dict[str, dict[str, Any]]:
    g = appliance.new_handle()
    try:
        for path in disks.values():
            g.add_drive_opts(path, readonly=int(not writable))
        g.launch()
        devices = g.list_devices()
        by_device = dict(zip(devices, disks, strict=True))
        out: dict[str, dict[str, Any]] = {n: {"error": "no operating system found"}
                                          for n in disks}  # fmt: skip
        partition = partition_of(root)
        if partition is not None:
            roots = [f"{device}{partition}" for device in devices]
        else:
            roots = g.inspect_os()
        mount = g.mount if writable else g.mount_ro
        for found in roots:
            name = by_device.get(_disk_of(found, devices))
            if name is None:
                continue
            try:
                mount(found, "/")
            except RuntimeError as error:
                out[name] = {"error": f"cannot mount {found}: {error}"}
                continue
            try:
                out[name] = visit(g, name)
            finally:
                g.umount_all()
        g.shutdown()  # written disks: flushed, and the appliance's exit checked
        return out
    finally:
        g.close()


def partition_of(root: str | None) -> str | None:
    """'1' of /dev/sda1; None for anything else (LVM, md). Pure."""
    match = re.fullmatch(r"/dev/sda(\d+)", root or "")
    return match.group(1) if match else None


def _disk_of(root: str, devices: list[str]) -> str | None:
    """/dev/sdb1 -> /dev/sdb (an LVM root is not resolved: its disk is not known)."""
    for device in sorted(devices, key=len, reverse=True):
        if root.startswith(device):
            return device
    return None
