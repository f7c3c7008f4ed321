"""Name filesystems by UUID (or LVM name), not by device name, in /etc/fstab, crypttab
and the resume setting: on virtio the disks are vda, vdb, ... not sda or nvme0n1.

The mapping from a name the guest used to the filesystem it meant goes through the
disk order: the guest's disk N is the appliance's disk N (the pipeline adds them in
the profile's order, which is the source's).
"""

from __future__ import annotations

import re
from typing import Any

from imagebuilder.fixups import FixupReport, keep_original, replace_file

# Device names that follow the hardware: what must go. /dev/mapper, /dev/disk/by-*,
# UUID=, LABEL= stay as they are.
_DISK_NAME = re.compile(
    r"^/dev/(?P<disk>(?:[shv]|xv)d[a-z]+|nvme\d+n\d+|mmcblk\d+)(?:p?(?P<part>\d+))?$"
)


def guest_device_map(sources: list[str], appliance_disks: list[str]) -> dict[str, str]:
    """Guest device names (sda, nvme0n1, ...) of each source disk -> appliance device."""
    return dict(zip(sources, appliance_disks, strict=True))


def appliance_device(spec: str, disks: dict[str, str]) -> str | None:
    """/dev/sda2 (as the guest named it) -> the appliance's device for it, or None when
    the spec is not a hardware device name or names a disk we do not have."""
    match = _DISK_NAME.match(spec)
    if not match or match["disk"] not in disks:
        return None
    disk = disks[match["disk"]]
    if not match["part"]:
        return disk
    separator = "p" if disk[-1].isdigit() else ""
    return f"{disk}{separator}{match['part']}"


def stable_name(g: Any, device: str) -> str | None:
    """UUID=... for a filesystem or swap on `device`, None when it has no UUID."""
    try:
        uuid = g.vfs_uuid(device)
    except RuntimeError:
        return None
    return f"UUID={uuid}" if uuid else None


def rewrite_table(text: str, field: int, rename: dict[str, str]) -> tuple[str, list[str]]:
    """fstab/crypttab text with column `field` renamed; returns it and what changed."""
    lines, changes = [], []
    for line in text.splitlines(keepends=True):
        words = line.split()
        if words and not words[0].startswith("#") and len(words) > field:
            old = words[field]
            if old in rename:
                line = line.replace(old, rename[old], 1)
                changes.append(f"{old} -> {rename[old]}")
        lines.append(line)
    return "".join(lines), changes


def fix_device_names(g: Any, disks: dict[str, str]) -> FixupReport:
    report = FixupReport("device names")
    rename: dict[str, str] = {}

    def stable(spec: str) -> str | None:
        if spec not in rename:
            device = appliance_device(spec, disks)
            name = stable_name(g, device) if device else None
            if name:
                rename[spec] = name
        return rename.get(spec)

    for path, field in (("/etc/fstab", 0), ("/etc/crypttab", 1)):
        if not g.is_file(path):
            continue
        text = g.cat(path)
        for line in text.splitlines():
            words = line.split()
            if words and not words[0].startswith("#") and len(words) > field:
                stable(words[field])
        new, changes = rewrite_table(text, field, rename)
        if changes:
            replace_file(g, path, new.encode(), report)
            report.changes += [f"{path}: {c}" for c in changes]
    _fix_resume(g, stable, report)
    _remove_lvm_device_records(g, report)
    return report


# LVM's records of the disks it saw, by their old identities (WWN, serial number,
# path): virtio disks have other ones, and a devices file that names none of them
# hides every physical volume. Without them LVM scans all disks again.
LVM_DEVICE_RECORDS = ("/etc/lvm/devices/system.devices", "/etc/lvm/cache/.cache")


def _remove_lvm_device_records(g: Any, report: FixupReport) -> None:
    for path in LVM_DEVICE_RECORDS:
        if g.is_file(path):
            keep_original(g, path, report)
            g.rm(path)
            report.changes.append(f"{path}: removed (named the old disks)")


# initramfs-tools' setting of the swap it resumes from (copied into each initramfs).
INITRAMFS_TOOLS_RESUME = "/etc/initramfs-tools/conf.d/resume"


def _fix_resume(g: Any, stable: Any, report: FixupReport) -> None:
    """initramfs-tools' RESUME= (the swap it resumes from) by UUID too."""
    for path in (INITRAMFS_TOOLS_RESUME, "/etc/uswsusp.conf"):
        if not g.is_file(path):
            continue
        text = g.cat(path)
        match = re.search(r"^(RESUME=|resume device\s*=\s*)(\S+)", text, re.MULTILINE)
        if match and (name := stable(match[2])):
            new = text[: match.start(2)] + name + text[match.end(2) :]
            replace_file(g, path, new.encode(), report)
            report.changes.append(f"{path}: {match[2]} -> {name}")
