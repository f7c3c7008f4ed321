"""Live migration benchmark: `p2v migrate --live` and plain `virsh migrate --live` on the
same guests between the same two test hosts, in one run.

    .venv/bin/python -m bench.migrate [--runs 5] [--cap 30] [WORKLOAD ...]

The test guest (256 MiB; 384 MiB for hot) runs each workload: idle, warm (100 MiB/s
over 64 MiB) and hot (as fast as it can over 192 MiB). Each round moves it once with
each tool, in a shuffled order, to the other host and back again; virsh is timed
twice (the second as a tool of its own) as a control of the machine's noise. The
hosts share no storage, so both copy the disk (virsh: --copy-storage-all, with
--persistent --undefinesource so that both end alike; nothing else is set). A virsh
run still going after --cap seconds is aborted and counted as not converging.

For each run: wall time; the downtime QEMU measured; the longest wait between two
counter values on a TCP stream from this machine to the guest, opened before and read
through the move (what the guest's clients saw); lost updates (a value skipped or
repeated); whether that stream stayed open; bytes moved; passes over memory. Prints
the median and the range of each, and p2v's median wall time over virsh's.
Targets: every workload under 5 s, a gap under 150 ms, nothing lost, the stream open,
and no worse than virsh where virsh converges.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from p2v.host import virt
from p2v.host.virt import migration, storage
from tests import guests, hosts
from tests.fixtures.vmguest import WORKLOADS

HOSTS = ["p2vb-a", "p2vb-b"]
IP = {"idle": "10.253.0.230", "warm": "10.253.0.231", "hot": "10.253.0.232"}
TOOLS = ("p2v migrate", "virsh", "virsh again")
MiB = 1 << 20


@dataclass
class Run:
    workload: str
    tool: str
    wall: float
    moved: bool
    downtime_ms: int | None = None
    gap_ms: float = 0.0
    lost: int = 0
    stream_open: bool = True
    bytes: int = 0
    passes: int = 0
    note: str = ""


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.migrate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("workloads", nargs="*", type=_workload,
                        metavar="WORKLOAD", help="idle, warm, hot (default: all)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=5, help="runs of each tool (default 5)")
    parser.add_argument("--cap", type=float, default=30.0,
                        help="seconds before a virsh run is aborted (default 30)")  # fmt: skip
    args = parser.parse_args()
    args.workloads = args.workloads or list(WORKLOADS)
    if os.geteuid() != 0:
        print("the test hosts are namespaces: run as root", file=sys.stderr)
        return 2
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="p2v-bench-migrate-") as home, \
            hosts.running(HOSTS) as pair:  # fmt: skip
        env = {**os.environ, "P2V_HOME": home}
        uris = [h.uri for h in pair]
        for workload in args.workloads:
            name = f"p2vb-{workload}"
            settings = guests.settings_for(workload, IP[workload], None)
            guests.start(uris[0], name, settings)
            try:
                for round_ in range(args.runs):
                    order = list(TOOLS)
                    random.shuffle(order)
                    for tool in order:
                        run = _one(tool, workload, name, uris, env, args.cap)
                        runs.append(run)
                        print(f"round {round_ + 1}: {_line(run)}", file=sys.stderr, flush=True)
            finally:
                guests.stop_anywhere(uris, name)
    _report(runs, args.workloads)
    return 0


def _workload(text: str) -> str:
    if text not in WORKLOADS:
        raise argparse.ArgumentTypeError(f"{text!r}: not one of {', '.join(WORKLOADS)}")
    return text


def _one(tool: str, workload: str, name: str, uris: list[str], env: dict[str, str],
         cap: float) -> Run:  # fmt: skip
    """One move of the guest from the host it is on to the other."""
    here = guests.where(uris, name)
    assert here is not None, f"{name} is on neither host"
    there = uris[1 - uris.index(here)]
    _clear(there, name)
    with guests.CounterWatch(IP[workload]) as watch:
        if not watch.wait_for_more(5, 15):
            raise SystemExit(f"{name} does not count on TCP before the move")
        began = time.monotonic()
        moved, note = (_p2v if tool == "p2v migrate" else _virsh)(name, here, there, env, cap)
        wall = time.monotonic() - began
        watch.wait_for_more(10, 15)  # one second of counting after the move
        run = Run(workload, tool, wall, moved, gap_ms=watch.gap_since(began - 0.5) * 1000,
                  lost=len(watch.lost_since(began - 0.5)), stream_open=not watch.closed,
                  note=note)  # fmt: skip
    if moved:
        _completed(run, there, name)
        if run.downtime_ms is None and tool == "p2v migrate":
            run.downtime_ms = _P2V_RECORD.get("downtime_ms")
            run.bytes = _P2V_RECORD.get("bytes") or 0
            run.passes = _P2V_RECORD.get("qemu_passes") or _P2V_RECORD.get("passes") or 0
        _clear(here, name)  # the disk left behind (virsh; p2v deletes it itself)
    return run


# What p2v's own record says of its last run: after post-copy the destination keeps no
# statistics of the incoming migration, the source's job-completed event has them.
_P2V_RECORD: dict[str, Any] = {}


def _p2v(name: str, here: str, there: str, env: dict[str, str], cap: float) -> tuple[bool, str]:
    done = subprocess.run(
        [sys.executable, "-m", "p2v.cli", "migrate", name, "-c", here, "--to", there, "--live",
         "--delete-source", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        return False, done.stderr.strip().splitlines()[-1]
    record = json.loads(done.stdout.splitlines()[-1])
    _P2V_RECORD.clear()
    _P2V_RECORD.update(record)
    steps = [f"{e['what']}@{e['at']}s" for e in record.get("escalations", [])]
    return True, " ".join(steps)


def _virsh(name: str, here: str, there: str, env: dict[str, str], cap: float) -> tuple[bool, str]:
    command = ["virsh", "-c", here, "migrate", "--live", "--copy-storage-all", "--persistent",
               "--undefinesource", name, there]  # fmt: skip
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)  # fmt: skip
    try:
        _, err = running.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        subprocess.run(["virsh", "-c", here, "domjobabort", name], capture_output=True,
                       timeout=60)  # fmt: skip
        running.communicate(timeout=120)
        return False, f"not finished after {cap:g} s (aborted)"
    if running.returncode != 0:
        return False, err.strip().splitlines()[-1] if err.strip() else "failed"
    return True, ""


def _completed(run: Run, uri: str, name: str) -> None:
    """What QEMU measured, from the destination's record of the incoming migration."""
    with virt.connection(uri) as conn:
        domain = virt.find(conn, name)
        stats = migration.stats_from(migration.completed_stats(domain), running=False)
        del domain
    run.downtime_ms, run.bytes, run.passes = stats.downtime_ms, stats.processed, stats.iteration


def _clear(uri: str, name: str) -> None:
    """No volume of the guest's name where the guest is not defined."""
    with virt.connection(uri) as conn:
        if virt.lookup(conn, name) is not None:
            return
        vol = storage.volume(storage.pool(conn, guests.POOL), guests.volume_name(name))
        if vol is not None:
            storage.delete_volume(vol)


def _line(run: Run) -> str:
    down = "-" if run.downtime_ms is None else f"{run.downtime_ms} ms"
    state = "moved" if run.moved else "NOT moved"
    return (f"{run.workload:<5} {run.tool:<12} {state:<9} {run.wall:6.2f} s  downtime {down:>7}  "
            f"gap {run.gap_ms:6.0f} ms  lost {run.lost}  stream "
            f"{'open' if run.stream_open else 'CLOSED'}  {run.bytes / MiB:6.0f} MiB  "
            f"{run.passes} passes  {run.note}")  # fmt: skip


def _stat(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    return f"{median:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def _report(runs: list[Run], workloads: list[str]) -> None:
    print(f"{'workload':<8} {'tool':<12} {'moved':>5}  {'wall s':<18} {'downtime ms':<16} "
          f"{'gap ms':<16} {'lost':>4} {'open':>5}  {'MiB moved':<14} passes")  # fmt: skip
    medians: dict[tuple[str, str], Any] = {}
    for workload in workloads:
        for tool in TOOLS:
            mine = [r for r in runs if r.workload == workload and r.tool == tool]
            moved = [r for r in mine if r.moved]
            walls = [r.wall for r in moved]
            medians[workload, tool] = statistics.median(walls) if walls else None
            downs = [float(r.downtime_ms) for r in moved if r.downtime_ms is not None]
            opened = sum(r.stream_open for r in mine)
            print(
                f"{workload:<8} {tool:<12} {len(moved):>2}/{len(mine):<2}  "
                f"{_stat(walls, '.2f'):<18} {_stat(downs, '.0f'):<16} "
                f"{_stat([r.gap_ms for r in moved], '.0f'):<16} "
                f"{sum(r.lost for r in mine):>4} {opened:>2}/{len(mine):<2} "
                f"{_stat([r.bytes / MiB for r in moved], '.0f'):<14} "
                f"{_stat([float(r.passes) for r in moved], '.0f')}"
            )
    for workload in workloads:
        ours, theirs = medians[workload, "p2v migrate"], medians[workload, "virsh"]
        again = medians[workload, "virsh again"]
        if ours and theirs:
            control = f"; virsh again / virsh {again / theirs:.2f}" if again else ""
            print(f"{workload}: p2v / virsh median wall time {ours / theirs:.2f}{control}")
        else:
            print(f"{workload}: {'virsh' if ours else 'p2v'} never finished within the cap")


if __name__ == "__main__":
    sys.exit(main())
