"""Who runs a job: a process, known by its host's boot, its pid and its start time.

A pid alone says little. After a reboot (a power cut) the pid a job recorded soon
belongs to another process, and even within one boot pids are reused. The boot id,
a random one the kernel makes at each boot, and the process's start time in clock
ticks after boot (field 22 of /proc/PID/stat) tell the job's own process from any
other that took its pid.

Test hook: P2V_BOOT_ID_FILE names a file to read instead of
/proc/sys/kernel/random/boot_id, so that a test can make the host look rebooted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from p2v.units import format_time

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
BOOT_ID_ENV = "P2V_BOOT_ID_FILE"


@dataclass(frozen=True)
class Owner:
    boot: str | None  # None: recorded by a p2v that knew only the pid
    pid: int
    start: int | None  # clock ticks after boot

    def alive(self) -> bool:
        """Whether the process that took the job still runs."""
        if self.boot is None:
            return _pid_exists(self.pid)
        return self.boot == boot_id() and start_ticks(self.pid) == self.start

    def describe(self) -> str:
        """`process PID` and, when it runs on this boot, since when."""
        if self.boot is not None and self.start is not None and self.boot == boot_id():
            return f"process {self.pid} (running since {format_time(_started(self.start))})"
        return f"process {self.pid}"


def this_process() -> Owner:
    """This process."""
    pid = os.getpid()
    return Owner(boot_id(), pid, start_ticks(pid))


def boot_id() -> str:
    with open(os.environ.get(BOOT_ID_ENV) or BOOT_ID_FILE) as f:
        return f.read().strip()


def start_ticks(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks after boot; None when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_start(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def parse_start(stat: str) -> int:
    """Field 22 of a /proc/PID/stat line. The command name (field 2) is in parentheses
    and may hold spaces and parentheses itself: fields are counted after its last ')'."""
    after_name = stat[stat.rindex(")") + 1 :].split()
    return int(after_name[22 - 3])


def _started(ticks: int) -> float:
    """The wall-clock time of a start time of this boot."""
    with open("/proc/stat") as f:
        boot_time = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return boot_time + ticks / os.sysconf("SC_CLK_TCK")


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
