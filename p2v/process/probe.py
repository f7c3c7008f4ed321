"""Run on the source and the destination of a process move (python3, which CRIU's own
tools need there too), sent over SSH on stdin; prints one JSON object. It imports
nothing of ours: it is a standalone script.

    probe.py source PID|unit:NAME WORKDIR    the process tree and what it holds
    probe.py target WORKDIR PATH...          what the destination has of those paths

Standard library only, and reads /proc and /sys: the checks made before anything is
frozen read what this prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


def digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(root: int) -> list[int]:
    kids, found, todo = children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(kids.get(pid, []))
    return sorted(found)


def unit_of(pid: int) -> str | None:
    """The system service whose main process `pid` is (None: any other process, one
    of a service's others too: stopping the unit would end more than the tree)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            paths = [line.strip().split(":", 2)[-1] for line in f]
    except OSError:
        return None
    for path in paths:
        match = re.fullmatch(r"/system\.slice/([^/]+\.service)", path)
        if match:
            out = subprocess.run(
                ["systemctl", "show", "--property", "MainPID", "--value", match.group(1)],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            return match.group(1) if out.stdout.strip() == str(pid) else None
    return None


def start_time(pid: int) -> int:
    """When the process started (clock ticks since boot): with its PID, names it."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def tcp_states() -> dict[str, tuple[int, str, str]]:
    """socket inode -> (state, local, remote) for TCP over IPv4 and IPv6."""
    states = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    states[fields[9]] = (int(fields[3], 16), fields[1], fields[2])
        except OSError:
            pass
    return states


def unix_peers() -> dict[str, tuple[str, str]]:
    """socket inode -> peer inode of connected UNIX sockets (from ss)."""
    peers: dict[str, tuple[str, str]] = {}
    try:
        out = subprocess.run(["ss", "-xanH"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return peers
    for line in out.splitlines():
        fields = line.split()
        # Netid State Recv-Q Send-Q Local-Address Port Peer-Address Port
        if len(fields) >= 8 and fields[5].isdigit() and fields[7].isdigit() and fields[7] != "0":
            peers[fields[5]] = (fields[7], fields[4])
    return peers


def source(spec: str, workdir: str) -> dict[str, Any]:
    if spec.startswith("unit:"):
        unit = spec[5:]
        out = subprocess.run(
            ["systemctl", "show", "--property", "MainPID", "--value", unit],
            capture_output=True,
            text=True,
            timeout=20,
        )
        pid = int(out.stdout.strip() or 0)
        if out.returncode != 0 or pid == 0:
            return {"error": f"the unit {unit} has no running main process"}
    else:
        pid = int(spec)
    if not os.path.isdir(f"/proc/{pid}"):
        return {"error": f"no process {pid}"}
    pids = tree(pid)
    tcp, unix = tcp_states(), unix_peers()
    inodes, tasks, mapped, files, problems = {}, [], {}, {}, []
    rss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/comm") as f:
                comm = f.read().strip()
            exe = os.readlink(f"/proc/{p}/exe")
            fds = os.listdir(f"/proc/{p}/fd")
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * PAGE
            with open(f"/proc/{p}/maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and parts[5].startswith("/"):
                        mapped[parts[5].strip()] = True
        except OSError as error:
            return {"error": f"cannot read process {p}: {error}"}
        tasks.append({"pid": p, "comm": comm, "exe": exe})
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            what = f"{comm}[{p}] fd {fd}"
            sock = re.fullmatch(r"socket:\[(\d+)\]", target)
            if sock:
                inodes[sock.group(1)] = what
            elif target.startswith(("/dev/pts/", "/dev/tty")) or target == "/dev/console":
                problems.append(f"{what} is the terminal {target}")
            elif target.startswith("/") and not target.startswith(("/dev/", "/proc/", "/sys/")):
                if target.endswith(" (deleted)"):
                    continue  # CRIU carries a deleted file's contents itself
                try:
                    st = os.stat(target)
                except OSError:
                    continue
                if os.path.isfile(target):
                    files[target] = {"size": st.st_size, "sha256": digest(target)}
    established, listening = [], []
    for inode, what in inodes.items():
        if inode in tcp and tcp[inode][0] == 10:
            listening.append([int(tcp[inode][1].split(":")[1], 16), what])
        if inode in tcp and tcp[inode][0] == 1:
            established.append(f"{what} ({_addr(tcp[inode][1])} <-> {_addr(tcp[inode][2])})")
        elif inode in unix and unix[inode][0] not in inodes:
            problems.append(f"{what} is a UNIX socket connected to a process outside the tree")
    for path in list(mapped):
        # Deleted files, shared anonymous memory (/dev/zero, SysV), memfd: CRIU dumps
        # their contents; they are not looked for on the destination.
        if path.endswith(" (deleted)") or not os.path.isfile(path):
            del mapped[path]
    binaries = {path: {"size": os.path.getsize(path), "sha256": digest(path)} for path in mapped}
    os.makedirs(workdir, exist_ok=True)
    return {
        "pid": pid,
        "pids": pids,
        "tasks": tasks,
        "unit": unit_of(pid),
        "start": start_time(pid),
        "tids": sorted(t for p in pids for t in threads(p)),
        "rss": rss,
        "binaries": binaries,
        "listening": listening,
        "files": files,
        "established": established,
        "problems": problems,
        "free": shutil.disk_usage(workdir).free,
        "hostname": os.uname().nodename,
    }


def _addr(hexaddr: str) -> str:
    host, port = hexaddr.split(":")
    if len(host) == 8:
        host = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return f"{host}:{int(port, 16)}"


def target(workdir: str, paths: list[str]) -> dict[str, Any]:
    found = {}
    for path in paths:
        if os.path.isfile(path):
            found[path] = {"size": os.path.getsize(path), "sha256": digest(path)}
    os.makedirs(workdir, exist_ok=True)
    return {
        "paths": found,
        "free": shutil.disk_usage(workdir).free,
        "pids": sorted(t for e in os.listdir("/proc") if e.isdigit() for t in threads(int(e))),
        "listening": sorted(
            {
                int(local.split(":")[1], 16)
                for state, local, _ in tcp_states().values()
                if state == 10
            }
        ),
        "hostname": os.uname().nodename,
    }


def main() -> None:
    role = sys.argv[1]
    if role == "source":
        result = source(sys.argv[2], sys.argv[3])
    else:
        result = target(sys.argv[2], sys.argv[3:])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
