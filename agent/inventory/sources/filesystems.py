"""Filesystems: type, UUID and label by low-level probing (blkid -p), and space.

Probing reads superblocks only; nothing is mounted, nothing is replayed. Space comes
from statvfs for a mounted filesystem, from the superblock (dumpe2fs -h) for ext2/3/4
that is not mounted; other filesystems leave it unknown rather than be mounted.
"""

from __future__ import annotations

import os
import re

from agent.inventory.model import Filesystem
from agent.inventory.probe import Probe

EXT = ("ext2", "ext3", "ext4")


def parse_blkid_export(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def parse_dumpe2fs(text: str) -> tuple[int, int] | None:
    """(size, free) in bytes from `dumpe2fs -h`."""
    fields = dict(re.findall(r"^([A-Za-z ]+):\s+(\d+)\s*$", text, re.MULTILINE))
    try:
        block = int(fields["Block size"])
        return int(fields["Block count"]) * block, int(fields["Free blocks"]) * block
    except KeyError:
        return None


def parse_mountinfo(text: str) -> dict[str, str]:
    """major:minor -> mount point, first mount of each device."""
    mounts: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4:
            mounts.setdefault(fields[2], fields[4].replace("\\040", " "))
    return mounts


class FilesystemProbe:
    """Probes block devices (or ranges of them) for filesystems, once per run."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        text = probe.read("/proc/self/mountinfo")
        self.mounts = parse_mountinfo(text) if text else {}

    def probe_device(
        self, path: str, offset: int = 0, size: int | None = None
    ) -> tuple[Filesystem | None, dict[str, str]]:
        """The filesystem on `path` (at `offset`, for an LV seen through its PV) and
        every blkid value, including the partition entry's type."""
        argv = ["blkid", "-p", "-o", "export"]
        if offset or size:
            argv += ["-O", str(offset), "-S", str(size)]
        # blkid exits 2 when it finds nothing: a blank device, not an unknown one.
        out = self.probe.run([*argv, path], f"filesystem on {path}", ok=(0, 2))
        values = parse_blkid_export(out) if out else {}
        if values.get("USAGE") not in ("filesystem", "other") or "TYPE" not in values:
            return None, values
        fs = Filesystem(type=values["TYPE"], uuid=values.get("UUID"), label=values.get("LABEL"))
        if not offset:
            fs.mountpoint = self._mountpoint(path)
        self._space(fs, path, offset)
        return fs, values

    def _mountpoint(self, path: str) -> str | None:
        try:
            rdev = os.stat(path).st_rdev
        except OSError:
            return None
        return self.mounts.get(f"{os.major(rdev)}:{os.minor(rdev)}")

    def _space(self, fs: Filesystem, path: str, offset: int) -> None:
        if fs.mountpoint:
            st = os.statvfs(fs.mountpoint)
            fs.size_bytes = st.f_blocks * st.f_frsize
            fs.free_bytes = st.f_bfree * st.f_frsize
        elif fs.type in EXT:
            where = f"{path}?offset={offset}" if offset else path
            out = self.probe.run(["dumpe2fs", "-h", where], f"space used on {path}")
            space = parse_dumpe2fs(out) if out else None
            if space:
                fs.size_bytes, fs.free_bytes = space
        if fs.size_bytes is not None and fs.free_bytes is not None:
            fs.used_bytes = fs.size_bytes - fs.free_bytes
