"""A VM's snapshots as people read them: a table, or a tree drawn as `git log --graph`
draws history, each with its time, whether it holds memory, its size and which one
is current."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2v import tree
from p2v.host import virt
from p2v.host.virt import domains, snapshots, storage
from p2v.snapshot.plan import nvram_copy
from p2v.units import format_size, format_time


@dataclass
class Listed:
    name: str
    parent: str | None
    current: bool
    created: float
    state: str  # the VM's state when it was taken
    memory: bool
    size: int  # bytes: its memory image, the overlays it started, its UEFI variables
    files: list[str]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def label(self) -> str:
        held = "memory + disks" if self.memory else "disks"
        current = "  (current)" if self.current else ""
        return (f"{self.name}  {format_time(self.created)}  {held}  "
                f"{format_size(self.size)}{current}")  # fmt: skip


def snapshots_of(uri: str, vm: str, timeout: float) -> list[Listed]:
    """The VM's snapshots, parents first, with the size of the files each one made."""
    with virt.connection(uri, timeout) as conn:
        domain = virt.find(conn, vm)
        found = snapshots.listed(domain)
        nvram = domains.nvram(domain)
        storage.refresh_all(conn)
        listed = []
        for s in found:
            files = [f for f in (s.memory_file, *s.disks.values()) if f]
            if nvram:
                files.append(nvram_copy(nvram, s.name))
            sizes = {f: size for f in files if (size := _allocation(conn, f)) is not None}
            listed.append(Listed(s.name, s.parent, s.current, s.created, s.state,
                                 s.memory_file is not None, sum(sizes.values()),
                                 list(sizes)))  # fmt: skip
        del domain
        return listed


def _allocation(conn: Any, path: str) -> int | None:
    """The bytes the file at `path` takes on its host; None when there is none."""
    vol = storage.volume_at(conn, path)
    if vol is None:
        with storage.file_volume(conn, path) as vol:
            return storage.allocation(vol) if vol is not None else None
    return storage.allocation(vol)


def draw(listed: list[Listed]) -> list[str]:
    """The snapshots as a tree: each under its parent, the newest branch last."""
    return tree.draw(listed, lambda s: s.name, lambda s: s.parent, Listed.label,
                     lambda s: s.created)  # fmt: skip
