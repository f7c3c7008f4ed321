"""How sources read the machine: files under a root, and tools, never failing hard.

A source that cannot read something gets None and the reason goes into `notes`, so
the inventory says what it does not know instead of crashing. Tests point `root`
at a recorded tree and give a `run` that plays back recorded tool output.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TOOL_TIMEOUT = 60  # seconds; a hung tool must not hang the agent

Runner = Callable[[Sequence[str]], str | None]


@dataclass
class Probe:
    root: Path = Path("/")
    notes: list[str] = field(default_factory=list)
    runner: Runner | None = None  # None: run the real tools

    def path(self, where: str | Path) -> Path:
        """A machine path ("/sys/...") under the root; a Path is taken as already there."""
        return where if isinstance(where, Path) else self.root / where.lstrip("/")

    def read(self, where: str | Path) -> str | None:
        """A small text file (sysfs, /proc), stripped; None when absent or unreadable."""
        try:
            return self.path(where).read_text(errors="replace").strip()
        except OSError:
            return None

    def read_bytes(self, where: str | Path) -> bytes | None:
        try:
            return self.path(where).read_bytes()
        except OSError:
            return None

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def run(self, argv: Sequence[str], why: str, ok: tuple[int, ...] = (0,)) -> str | None:
        """A tool's stdout; None (and a note saying what is unknown) when it fails.
        `ok`: exit codes that are answers, not failures."""
        if self.runner is not None:
            out = self.runner(argv)
            if out is None:
                self.note(f"{argv[0]} gave nothing: {why} unknown")
            return out
        try:
            proc = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=TOOL_TIMEOUT,
                env={**os.environ, "LC_ALL": "C", "LVM_SUPPRESS_FD_WARNINGS": "1"},
            )
        except FileNotFoundError:
            self.note(f"{argv[0]} is not installed: {why} unknown")
            return None
        except subprocess.TimeoutExpired:
            self.note(f"{argv[0]} did not answer in {TOOL_TIMEOUT} s: {why} unknown")
            return None
        if proc.returncode not in ok:
            first = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            self.note(f"{argv[0]} failed ({first}): {why} unknown")
            return None
        return proc.stdout


def placeholder(value: str | None) -> str | None:
    """None for the filler strings firmware vendors leave in SMBIOS fields."""
    if value is None:
        return None
    value = value.strip()
    fillers = {
        "",
        "none",
        "not specified",
        "not present",
        "to be filled by o.e.m.",
        "default string",
        "system serial number",
        "system product name",
        "system manufacturer",
        "0",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    }
    return None if value.lower() in fillers else value
