"""Clone benchmark: personalized linked clones of one golden image made with
`virt-clone` + `virt-sysprep` (one libguestfs appliance per clone, as its users make
them) and with `p2v clone`, in one run.

    .venv/bin/python -m bench.clone [--runs 2] [--peer-count 10] [--counts 100,1000]
                                    [--offline-counts 100]

The golden is the bios-ext4 test server converted (`p2v convert --disk`, cached as a
test fixture, with an installed machine's identity) and sealed (`p2v golden seal`).
Everything runs on this machine's libvirt (qemu:///session), disks in a directory
pool of their own. A peer clone is `qemu-img create -b GOLDEN`,
then `virt-sysprep -a CLONE --hostname NAME` (its default operations: machine-id, SSH
host keys, ..., in an appliance of its own), then `virt-clone --original TEMPLATE
--preserve-data --file CLONE` (new UUID and MAC, defined). A p2v clone is made by
`p2v clone GOLDEN --count N`: one job; the base put into the pool once (not timed:
it is there before the first run, as it is for every bulk clone but the first on a
host), an overlay and a domain per clone; its identity is applied at its first boot
from its SMBIOS strings, with no appliance. `p2v clone --personalize offline` is the
like-for-like rival of the peer: the identity written into each overlay before it is
defined, as virt-sysprep does, but up to 255 clones in one appliance. The peer is
run twice a round (as a tool of its own) as a control of the machine's noise; the
tools take turns in a shuffled order. Prints wall and CPU seconds per clone (medians
with their range) and the ratios. Targets: 1,000 linked clones with first-boot
identity created and defined in under 60 s; 100 personalized offline in under 2
minutes; per clone over 10x faster than the per-clone peer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import output
from p2v import accel, appliance
from p2v.clone.domain import Shape, clone_xml
from p2v.clone.plan import Identity
from p2v.host import virt
from p2v.host.virt import storage
from tests.fixtures import converted

URI = "qemu:///session"
POOL = "p2vb-clones"
TEMPLATE = "p2vb-template"
PEERS = ("virt-clone + virt-sysprep", "virt-clone + virt-sysprep again")
OURS = ("p2v clone", "p2v clone offline")


@dataclass
class Run:
    tool: str
    count: int
    wall: float
    cpu: float  # seconds of CPU of the tool's processes and their children

    @property
    def per_clone(self) -> float:
        return self.wall / self.count


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.clone", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=2, help="rounds at --peer-count (default 2)")
    parser.add_argument("--peer-count", type=int, default=10, help="clones per peer run")
    parser.add_argument("--counts", default="100,1000",
                        help="p2v alone afterwards, once each (default 100,1000)")  # fmt: skip
    parser.add_argument("--offline-counts", default="100",
                        help="then p2v personalizing offline, once each (default 100)")  # fmt: skip
    args = parser.parse_args()
    for program in ("virt-clone", "virt-sysprep"):
        if shutil.which(program) is None:
            print(f"{program} is missing: `make setup` installs it", file=sys.stderr)
            return 2
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="p2v-bench-clone-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o711)
        env = {**os.environ, "P2V_HOME": str(work / "home")}
        golden = _golden(work, env)
        pool_dir = work / "pool"
        pool_dir.mkdir()
        with virt.connection(URI) as conn:
            virt.ensure_dir_pool(conn, POOL, str(pool_dir))
            _template(conn, golden)
        try:
            _p2v(golden, 1, "warmup", env)  # the base goes into the pool once
            _clear("warmup")
            for run in range(args.runs):
                order = [*OURS, *PEERS]
                random.shuffle(order)
                for tool in order:
                    prefix = f"r{run}{'p' if tool in OURS else 'v'}{order.index(tool)}"
                    if tool in OURS:
                        made = _p2v(golden, args.peer_count, prefix, env, tool == OURS[1])
                    else:
                        made = _peer(golden, args.peer_count, prefix, pool_dir, env)
                    made.tool = tool
                    print(_line(made), flush=True)
                    runs.append(made)
                    _clear(prefix)
            for count in (int(c) for c in args.counts.split(",") if c):
                made = _p2v(golden, count, f"n{count}", env)
                print(_line(made), flush=True)
                runs.append(made)
                _clear(f"n{count}")
            for count in (int(c) for c in args.offline_counts.split(",") if c):
                made = _p2v(golden, count, f"o{count}", env, offline=True)
                print(_line(made), flush=True)
                runs.append(made)
                _clear(f"o{count}")
        finally:
            with virt.connection(URI) as conn:
                if (template := virt.lookup(conn, TEMPLATE)) is not None:
                    virt.undefine(template)
                pool = virt.pool(conn, POOL)
                for vol in pool.listAllVolumes(0):
                    storage.delete_volume(vol)
                pool.destroy()
                pool.undefine()
    _report(runs, args.peer_count)
    return 0


def _golden(work: Path, env: dict[str, str]) -> dict[str, object]:
    disk = work / "server.qcow2"  # converted, with an installed machine's identity (cached)
    shutil.copyfile(converted.build("bios-ext4")[0], disk)
    sealed = output(sys.executable, "-m", "p2v.cli", "golden", "seal", str(disk), "--to",
                    str(work / "web.qcow2"), "--json", env=env)  # fmt: skip
    return dict(json.loads(sealed))


def _template(conn: object, golden: dict[str, object]) -> None:
    """The domain virt-clone clones: the golden's shape, on the golden's disk."""
    identity = Identity(TEMPLATE, URI, "6f1c1b36-3f0e-4c57-9a35-6a0d4bd1c001",
                        ["52:54:00:fe:00:01"])  # fmt: skip
    shape = Shape(str(golden["firmware"]), 512, 1, "user",
                  accel.detect().libvirt_domain_type, identity=False)  # fmt: skip
    virt.define(conn, clone_xml(identity, str(golden["path"]), int(str(golden["size"])), shape))


def _p2v(
    golden: dict[str, object], count: int, prefix: str, env: dict[str, str],
    offline: bool = False,
) -> Run:  # fmt: skip
    return _timed(OURS[offline], count, [
        sys.executable, "-m", "p2v.cli", "clone", str(golden["name"]), "--name",
        f"{prefix}-{{n}}", "--count", str(count), "-c", URI, "--pool", POOL, "--network",
        "user", "--memory", "512", "--personalize", "offline" if offline else "first-boot",
    ], env)  # fmt: skip


def _peer(
    golden: dict[str, object], count: int, prefix: str, pool_dir: Path, env: dict[str, str]
) -> Run:
    def one(n: int) -> list[list[str]]:
        name, disk = f"{prefix}-{n}", str(pool_dir / f"{prefix}-{n}.qcow2")
        return [
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(golden["path"]),
             disk],
            ["virt-sysprep", "-a", disk, "--hostname", name, "--quiet"],
            ["virt-clone", "--connect", URI, "--original", TEMPLATE, "--name", name,
             "--file", disk, "--preserve-data", "--quiet"],
        ]  # fmt: skip

    return _timed("peer", count, [c for n in range(1, count + 1) for c in one(n)],
                  appliance.tool_environment(env), many=True)  # fmt: skip


def _timed(tool: str, count: int, argv: list, env: dict[str, str], many: bool = False) -> Run:
    commands = argv if many else [argv]
    cpu_before = _children_cpu()
    start = time.monotonic()
    for command in commands:
        output(*command, env=env, timeout=7200)  # a thousand clones in one command
    wall = time.monotonic() - start
    return Run(tool, count, wall, _children_cpu() - cpu_before)


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _clear(prefix: str) -> None:
    with virt.connection(URI) as conn:
        for domain in conn.listAllDomains(0):
            if domain.name().startswith(f"{prefix}-"):
                virt.undefine(domain)
        pool = virt.pool(conn, POOL)
        storage.refresh(pool)
        for vol in pool.listAllVolumes(0):
            if vol.name().startswith(f"{prefix}-"):
                storage.delete_volume(vol)


def _line(run: Run) -> str:
    return (f"{run.tool:<32} {run.count:>5} clones  wall {run.wall:8.1f} s  "
            f"{run.per_clone:7.3f} s/clone  CPU {run.cpu / run.count:7.3f} s/clone")  # fmt: skip


def _stat(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def _report(runs: list[Run], peer_count: int) -> None:
    print(f"\nat {peer_count} clones, per clone (median, range):")
    medians = {}
    for tool in (*OURS, *PEERS):
        mine = [r for r in runs if r.tool == tool and r.count == peer_count]
        if mine:
            medians[tool] = statistics.median(r.per_clone for r in mine)
            cpu = [r.cpu / r.count for r in mine]
            print(f"  {tool:<32} wall {_stat([r.per_clone for r in mine])} s   "
                  f"CPU {_stat(cpu)} s")  # fmt: skip
    if len(medians) == 4:
        for tool in OURS:
            print(f"peer / {tool} wall per clone: {medians[PEERS[0]] / medians[tool]:.1f}x")
        print(f"peer again / peer: {medians[PEERS[1]] / medians[PEERS[0]]:.2f}")
    for run in runs:
        if run.count != peer_count:
            print(f"{run.tool} x{run.count}: {run.wall:.1f} s, "
                  f"{run.per_clone * 1000:.0f} ms a clone")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
