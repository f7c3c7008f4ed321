"""Memory: installed size from SMBIOS memory devices, usable size from /proc/meminfo."""

from __future__ import annotations

import re

from agent.inventory.model import Memory
from agent.inventory.probe import Probe

_UNITS = {"bytes": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def parse_meminfo(text: str) -> int | None:
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def parse_dmidecode_memory(text: str) -> int | None:
    """Sum of the sizes of SMBIOS type 17 records (`dmidecode -t 17`); None if none."""
    total, found = 0, False
    for record in text.split("\n\n"):
        if "Memory Device" not in record:
            continue
        match = re.search(r"^\s*Size: (\d+) (\w+)", record, re.MULTILINE)
        if match and match.group(2) in _UNITS:
            total += int(match.group(1)) * _UNITS[match.group(2)]
            found = True
    return total if found else None


def read_memory(probe: Probe) -> Memory:
    memory = Memory()
    meminfo = probe.read("/proc/meminfo")
    if meminfo is not None:
        memory.usable_bytes = parse_meminfo(meminfo)
    else:
        probe.note("/proc/meminfo unreadable: usable memory unknown")
    out = probe.run(["dmidecode", "-t", "17"], "installed memory")
    if out is not None:
        memory.installed_bytes = parse_dmidecode_memory(out)
        if memory.installed_bytes is None:
            probe.note("SMBIOS lists no memory devices: installed memory unknown")
    return memory
