"""Process migration: `p2v migrate-process` against the way without it, on the same
service in one run.

Two procnode guests (Debian 12, CRIU 3.17, TCG), one per test host. The counter
service (64 MiB held, rewritten at --dirty MiB/s) moves between them, each tool in
turn, direction alternating, interleaved over --rounds rounds:

  restart         the peer: systemctl stop on the source, the service address moved,
                  systemctl start on the destination. Its clients are cut off and
                  the count starts again from 1.
  p2v cold        CRIU's one dump, no passes (--keep-tcp --move-address)
  p2v live        pre-dump passes while it runs, then the final dump (--live ...)
  restart again   the peer once more: a control for the machine's noise

Printed per tool: the median and range of the whole operation's wall time, of the
time the service was out of reach (restart: stop to a new client's first value;
p2v: its measured freeze, and the longest gap the connected client saw), bytes
moved, and whether the client's connection and count carried on.

    python -m bench.process [--rounds 3] [--dirty 1]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests import guests, hosts
from tests.fixtures import procnode
from tests.fixtures.procnode import build as procnode_build
from tests.guests import CounterWatch, nodes

HOSTS = ["p2vt-cln-a", "p2vt-cln-b"]
NODES = {"p2vt-node-a": "10.253.0.221", "p2vt-node-b": "10.253.0.222"}
SERVICE = "10.253.0.230"
TOOLS = ("restart", "p2v cold", "p2v live", "restart again")


@dataclass
class Run:
    tool: str
    wall_s: float
    out_s: float  # the service out of reach
    client_gap_s: float | None  # the longest wait of the client connected before
    bytes: int
    carried_on: bool  # same connection, no value lost, the count went on


def main() -> int:
    layout = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=layout)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dirty", type=int, default=1, help="MiB/s the service rewrites")
    args = parser.parse_args()
    procnode_build.build()
    with tempfile.TemporaryDirectory(prefix="p2v-bench-process-") as tmp, \
            hosts.running(HOSTS) as pair:  # fmt: skip
        config = nodes.ssh_config(Path(tmp) / "ssh_config")
        uris = [h.uri for h in pair]
        names = list(NODES)
        try:
            for i, (name, ip) in enumerate(NODES.items()):
                settings = procnode.NodeSettings(
                    name, f"{ip}/24", str(hosts.GATEWAY), counter=i == 0,
                    service=f"{SERVICE}/24", memory_mib=64, dirty_mib_s=args.dirty,
                )  # fmt: skip
                nodes.start(uris[i], name, settings)
            # The service's unit, ready to start on the other node too (for the peer).
            _ssh(config, NODES[names[1]], "printf 'MEMORY_MIB=64\\nDIRTY_MIB_S=%s\\n' "
                 f"{args.dirty} >/run/p2v-counter.env")  # fmt: skip
            runs, here = [], 0
            for _ in range(args.rounds):
                for tool in TOOLS:
                    src, dst = NODES[names[here]], NODES[names[1 - here]]
                    runs.append(_restart(config, src, dst, tool) if tool.startswith("restart")
                                else _p2v(config, src, dst, tool))  # fmt: skip
                    print(_line(runs[-1]), flush=True)
                    here = 1 - here
            _report(runs, args)
        finally:
            for uri, name in zip(uris, names, strict=True):
                guests.stop_anywhere([uri], name)
    return 0


def _ssh(config: Path, ip: str, script: str) -> str:
    done = subprocess.run(["ssh", "-F", str(config), ip, script], capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout


def _restart(config: Path, src: str, dst: str, tool: str) -> Run:
    with CounterWatch(SERVICE) as watch:
        watch.wait_for_more(5, 30)
        started = time.monotonic()
        # A service CRIU restored runs outside its unit: pkill stops that one too.
        _ssh(
            config,
            src,
            "systemctl stop p2v-counter; pkill -x p2v-counterd; "
            f"ip addr del {SERVICE}/24 dev enp1s0",
        )
        _ssh(config, dst, f"ip addr add {SERVICE}/24 dev enp1s0; "
             "echo 29999 >/proc/sys/kernel/ns_last_pid; systemctl start p2v-counter; "
             f"setsid arping -U -c 2 -I enp1s0 {SERVICE} </dev/null >/dev/null 2>&1 &")  # fmt: skip
        first = _first_value(started)
        wall = time.monotonic() - started
        carried = not watch.closed and watch.wait_for_more(1, 1)
    print(f"  restart: a new client's first value is {first[1]} (the count started again)")
    return Run(tool, wall, first[0], None, 0, carried)


def _first_value(since: float, timeout: float = 60) -> tuple[float, int]:
    """(seconds from `since`, value): the first value a new client gets."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((SERVICE, procnode.PORT), timeout=1) as sock:
                sock.settimeout(2)
                line = sock.recv(64).decode().split("\n")[0]
                return time.monotonic() - since, int(line.split()[1])
        except (OSError, IndexError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"the service did not come back at {SERVICE} in {timeout:g} s")


def _p2v(config: Path, src: str, dst: str, tool: str) -> Run:
    pid = _ssh(config, src, "pidof p2v-counterd").strip()
    with CounterWatch(SERVICE) as watch:
        watch.wait_for_more(5, 30)
        before = watch.values[-1]
        started = time.monotonic()
        argv = [sys.executable, "-m", "p2v.cli", "migrate-process", pid, "--from",
                f"ssh://{src}", "--to", f"ssh://{dst}", "--keep-tcp", "--move-address",
                SERVICE, "--ssh-config", str(config), "--json"]  # fmt: skip
        if tool == "p2v live":
            argv.append("--live")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed:\n{done.stderr}")
        record = json.loads(done.stdout)
        carried = watch.wait_for_more(10, 20) and not watch.lost and not watch.closed
        carried = carried and watch.values[-1] > before
        return Run(tool, wall, record["freeze_ms"] / 1000, watch.gap_since(started),
                   record["bytes"], carried)  # fmt: skip


def _line(run: Run) -> str:
    gap = f"  client gap {run.client_gap_s:.2f} s" if run.client_gap_s is not None else ""
    return (f"{run.tool:<14} wall {run.wall_s:6.1f} s  out of reach {run.out_s:6.2f} s{gap}  "
            f"{run.bytes / 2**20:6.1f} MiB  carried on: {'yes' if run.carried_on else 'no'}"
            )  # fmt: skip


def _stat(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _report(runs: list[Run], args: argparse.Namespace) -> None:
    print(f"\n64 MiB service, {args.dirty} MiB/s rewritten, TCG guests; median (range) "
          f"of {args.rounds} rounds")  # fmt: skip
    medians = {}
    for tool in TOOLS:
        mine = [r for r in runs if r.tool == tool]
        medians[tool] = statistics.median(r.out_s for r in mine)
        gaps = [r.client_gap_s for r in mine if r.client_gap_s is not None]
        print(f"{tool:<14} wall {_stat([r.wall_s for r in mine])} s  out of reach "
              f"{_stat([r.out_s for r in mine])} s"
              + (f"  client gap {_stat(gaps)} s" if gaps else "")
              + f"  {statistics.median(r.bytes for r in mine) / 2**20:.1f} MiB"
              f"  carried on {sum(r.carried_on for r in mine)}/{len(mine)}")  # fmt: skip
    live, again = medians["p2v live"], medians["restart again"]
    print(f"out of reach, p2v live / restart: {live / medians['restart']:.2f}; "
          f"restart again / restart: {again / medians['restart']:.2f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
