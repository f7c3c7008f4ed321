"""What a process move decides, without doing anything: the refusals made before
anything is frozen, which open files go along, and when the memory passes stop."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from p2v.errors import InputError
from p2v.units import format_size

MiB = 1 << 20
# Room for the images beside the memory they hold: CRIU's own files, page maps.
IMAGE_OVERHEAD = 16 * MiB
# Pre-dump passes: at most this many, and no more once a pass wrote this little
# (its pages are what the final freeze has left to write) or did not halve what the
# pass before it wrote: the program then dirties memory about as fast as a pass takes.
MAX_PASSES = 4
SMALL_PASS_PAGES = 256  # 1 MiB of 4 KiB pages


@dataclass(frozen=True)
class Source:
    """The process tree on the source, as probe.py saw it."""

    pid: int
    pids: list[int]
    tids: list[int]  # every thread of the tree: CRIU gives each its own ID back
    start: int  # the root's start time (clock ticks since boot): PID and this name it
    tasks: list[dict[str, Any]]
    unit: str | None
    rss: int
    binaries: dict[str, dict[str, Any]]  # mapped files: size, sha256
    files: dict[str, dict[str, Any]]  # open regular files: size, sha256
    established: list[str]  # established TCP connections, in words
    listening: list[list[Any]]  # [port, what] of its listening TCP sockets
    problems: list[str]  # what cannot move, in words
    free: int  # bytes free where the images go
    hostname: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Source:
        if "error" in data:
            raise InputError(data["error"])
        return cls(**data)

    def comm(self, pid: int) -> str:
        return next((t["comm"] for t in self.tasks if t["pid"] == pid), "?")


@dataclass(frozen=True)
class Target:
    paths: dict[str, dict[str, Any]]  # of the source's binaries and files: size, sha256
    free: int
    pids: list[int]
    listening: list[int]  # TCP ports something listens on
    hostname: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        return cls(**data)


@dataclass(frozen=True)
class Address:
    """The service address that moves with the program: on which interface of each side."""

    address: str  # ADDRESS/PREFIX
    source_dev: str
    target_dev: str

    def to_json(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class Checks:
    problems: list[str] = field(default_factory=list)

    def refuse(self) -> None:
        if self.problems:
            lines = "\n  ".join(self.problems)
            raise InputError(f"the process cannot be moved:\n  {lines}")


def refusals(
    source: Source, target: Target, keep_tcp: bool, src_name: str, dst_name: str
) -> list[str]:
    """Everything that would make the move fail, each named."""
    problems = list(source.problems)
    if source.established and not keep_tcp:
        problems += [f"{c} is an established TCP connection: --keep-tcp takes it along"
                     for c in source.established]  # fmt: skip
    for path, want in sorted(source.binaries.items()):
        have = target.paths.get(path)
        if have is None:
            problems.append(f"{dst_name} has no {path}, which the program has mapped")
        elif have["sha256"] != want["sha256"]:
            problems.append(f"{dst_name}'s {path} differs from {src_name}'s (sha256)")
    busy = sorted(set(source.tids) & set(target.pids))
    problems += [f"ID {tid} ({source.comm(tid) if tid in source.pids else 'a thread'} of the "
                 f"tree) is in use on {dst_name}: CRIU gives each process and thread its own "
                 "ID back" for tid in busy]  # fmt: skip
    taken = set(target.listening)
    problems += [f"{what} listens on TCP port {port}, which {dst_name} has in use"
                 for port, what in source.listening if port in taken]  # fmt: skip
    need = images_size(source)
    for name, free in ((src_name, source.free), (dst_name, target.free)):
        if free < need:
            problems.append(f"{name} has {format_size(free)} free for the images, "
                            f"{format_size(need)} needed")  # fmt: skip
    return problems


def images_size(source: Source) -> int:
    """Room the images take on each side: the memory and the open files twice (the
    passes and the final images may each hold all of it, and the source packs the
    final ones once more to send them), and CRIU's own files."""
    return 2 * (source.rss + sum(f["size"] for f in source.files.values())) + IMAGE_OVERHEAD


def files_to_move(source: Source, target: Target) -> list[str]:
    """The open files the destination lacks, or has with other contents."""
    return sorted(
        path for path, want in source.files.items()
        if target.paths.get(path, {}).get("sha256") != want["sha256"]
    )  # fmt: skip


def another_pass(pages: list[int]) -> bool:
    """Whether to pre-dump again, given the pages each pass so far wrote."""
    if not pages or len(pages) >= MAX_PASSES:
        return False
    if pages[-1] <= SMALL_PASS_PAGES:
        return False
    return len(pages) < 2 or pages[-1] * 2 <= pages[-2]


def parse_address(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(text)
    except ValueError as error:
        raise InputError(f"--move-address {text}: {error}") from None
