"""Backup benchmark: `p2v backup` and Debian's `virtnbdbackup` (1.9.15) on the same
running guest, in one run.

    .venv/bin/python -m bench.backup [--runs 3]

The test guest runs on this machine's libvirt (qemu:///session) with a second disk
of 4 GiB, 1 GiB of it data. Each tool, in a shuffled order each round, takes a chain
of its own: a full backup, then three times 64 MiB written to the data disk (through
QEMU's block layer, `qemu-io` in the guest's monitor, as the guest's own writes go,
so the dirty bitmaps see them: same offsets and bytes for every tool) and an
incremental backup; then the last point is restored (`p2v restore`, `virtnbdrestore`)
into qcow2 files, and the restored data disks of all tools must be equal. virtnbdbackup
is run twice a round (as a tool of its own) as a control of the machine's noise.
Between chains every checkpoint of the guest is deleted, so each starts alike.

For each backup: wall time, bytes read from the guest (p2v: its record; virtnbdbackup:
the data it wrote, which it stores uncompressed and sparse, as it read it) and bytes
stored; for each chain: the restore time. Prints medians with their range, and p2v's
medians over virtnbdbackup's. Targets: an increment reads and stores within 1.2x of
what changed (64 MiB and what the guest wrote), a full backup within 1.2x of the
peer's time, a restore at least as fast.
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
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from bench import output
from p2v import accel
from p2v.host import virt
from p2v.host.virt import backups
from tests import guests
from tests.fixtures import builder
from tests.fixtures.vmguest import Settings
from tests.guests.domain import GuestSpec

URI = "qemu:///session"
NAME = "p2vb-backup"
TOOLS = ("p2v backup", "virtnbdbackup", "virtnbdbackup again")
MiB, GiB = 1 << 20, 1 << 30
DATA_DISK = 4 * GiB
DATA = 1 * GiB
WRITE = 64 * MiB
INCREMENTS = 3


@dataclass
class Chain:
    tool: str
    walls: list[float] = field(default_factory=list)  # full, then each increment
    read: list[int] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    restore: float = 0.0
    restored_digest: str = ""


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.backup", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="chains of each tool (default 3)")
    args = parser.parse_args()
    if shutil.which("virtnbdbackup") is None:
        print("virtnbdbackup is missing: `make setup` installs it", file=sys.stderr)
        return 2
    chains: list[Chain] = []
    with tempfile.TemporaryDirectory(prefix="p2v-bench-backup-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o711)
        env = {**os.environ, "P2V_HOME": str(work / "home")}
        domain_xml = _guest(work)
        with virt.connection(URI) as conn:
            domain = virt.define(conn, domain_xml)
            try:
                virt.start(domain)
                guests.counter(URI, NAME, timeout=300)  # up and counting
                for n in range(1, INCREMENTS + 1):  # every chain's full then reads alike
                    _write(n)
                for run in range(args.runs):
                    order = list(TOOLS)
                    random.shuffle(order)
                    for tool in order:
                        chain = _chain(tool, domain, work / f"{run}-{tool.replace(' ', '-')}", env)
                        print(_line(chain), flush=True)
                        chains.append(chain)
            finally:
                virt.destroy(domain)
                _clear_checkpoints(domain, metadata_only=True)
                virt.undefine(domain)
    _report(chains)
    return 0


def _guest(work: Path) -> str:
    """The test guest's system disk and a 4 GiB data disk with 1 GiB of data."""
    system, data = work / "system.qcow2", work / "data.qcow2"
    output("qemu-img", "convert", "-O", "qcow2", str(builder.build("vmguest")), str(system))
    output("qemu-img", "create", "-q", "-f", "qcow2", str(data), str(DATA_DISK))
    for n in range(DATA // (256 * MiB)):  # distinct bytes in each quarter
        write = f"write -P {0x40 + n} {n * 256 * MiB} 256M"
        output("qemu-io", "-f", "qcow2", "-c", write, str(data))
    spec = GuestSpec(NAME, Settings("idle", None, None), 256, str(system),
                     accel.detect().libvirt_domain_type)  # fmt: skip
    root = ET.fromstring(spec.to_xml())
    devices = root.find("devices")
    assert devices is not None
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "source", file=str(data))
    ET.SubElement(disk, "target", dev="vdb", bus="virtio")
    ET.SubElement(disk, "alias", name="ua-data")
    return ET.tostring(root, encoding="unicode")


def _write(n: int) -> None:
    """64 MiB of new bytes at the n-th place, through the guest's own block device."""
    offset = DATA // 2 + n * 3 * WRITE  # half in the data, half beyond it, by turns
    # The device's own block backend, as the guest's writes reach the disk.
    device = "/machine/peripheral/ua-data/virtio-backend"
    command = f'qemu-io -d {device} "write -P {0x80 + n} {offset} {WRITE}"'
    said = output("virsh", "-c", URI, "qemu-monitor-command", "--hmp", NAME, command)
    if "error" in said.lower():
        raise SystemExit(f"{command}: {said}")


def _chain(tool: str, domain: object, where: Path, env: dict[str, str]) -> Chain:
    _clear_checkpoints(domain)
    chain = Chain(tool)
    where.mkdir(parents=True)
    backup_dir = where / "backup"
    for n in range(INCREMENTS + 1):
        if n:
            _write(n)
        began = time.monotonic()
        if tool == "p2v backup":
            done = output(sys.executable, "-m", "p2v.cli", "backup", NAME, "--to",
                          str(backup_dir), "-c", URI, "--json", env=env)  # fmt: skip
            record = json.loads(done.splitlines()[-1])
            chain.walls.append(time.monotonic() - began)
            chain.read.append(sum(d["read"] for d in record["disks"].values()))
            chain.stored.append(sum(d["stored"] for d in record["disks"].values()))
        else:
            before = _files(backup_dir)
            output("virtnbdbackup", "-U", URI, "-d", NAME, "-l", "full" if n == 0 else "inc",
                   "-o", str(backup_dir), env=env)  # fmt: skip
            chain.walls.append(time.monotonic() - began)
            new = {p: s for p, s in _files(backup_dir).items() if p not in before}
            data = sum(s for p, s in new.items() if p.endswith(".data"))
            chain.read.append(data)  # its sparse stream holds what it read, as read
            chain.stored.append(sum(_allocated(backup_dir / p) for p in new))
    out = where / "restored"
    out.mkdir()
    began = time.monotonic()
    if tool == "p2v backup":
        output(sys.executable, "-m", "p2v.cli", "restore", str(backup_dir), "--to", str(out),
               env=env)  # fmt: skip
        restored = out / "vdb.qcow2"
    else:
        output("virtnbdrestore", "-i", str(backup_dir), "-o", str(out), env=env)
        restored = next(p for p in out.iterdir() if p.name.startswith("vdb") or "data" in p.name)
    chain.restore = time.monotonic() - began
    digest = output(sys.executable, "-m", "p2v.cli", "checksum", str(restored), "--json", env=env)
    chain.restored_digest = json.loads(digest)["digest"]
    shutil.rmtree(where)
    return chain


def _clear_checkpoints(domain: object, metadata_only: bool = False) -> None:
    """Every checkpoint of the guest gone (newest first, so that none merges)."""
    for checkpoint in reversed(backups.checkpoints(domain)):
        output("virsh", "-c", URI, "checkpoint-delete", NAME, checkpoint.name,
               *(["--metadata"] if metadata_only else []))  # fmt: skip


def _files(directory: Path) -> dict[str, int]:
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.stat().st_size
            for p in directory.rglob("*") if p.is_file()}  # fmt: skip


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def _line(chain: Chain) -> str:
    walls = " ".join(f"{w:.1f}" for w in chain.walls)
    read = " ".join(f"{r / MiB:.0f}" for r in chain.read)
    stored = " ".join(f"{s / MiB:.0f}" for s in chain.stored)
    return (f"{chain.tool:<20} wall s [{walls}]  read MiB [{read}]  stored MiB [{stored}]  "
            f"restore {chain.restore:.1f} s")  # fmt: skip


def _stat(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def _report(chains: list[Chain]) -> None:
    digests = {c.restored_digest for c in chains}
    print(f"\nrestored data disks: {'all equal' if len(digests) == 1 else 'DIFFER'} "
          f"across {len(chains)} chains")  # fmt: skip
    print(f"{'tool':<20} {'full s':>16} {'increment s':>16} {'inc read MiB':>16} "
          f"{'inc stored MiB':>16} {'restore s':>16}")  # fmt: skip
    medians: dict[str, dict[str, float]] = {}
    for tool in TOOLS:
        mine = [c for c in chains if c.tool == tool]
        if not mine:
            continue
        full = [c.walls[0] for c in mine]
        inc = [w for c in mine for w in c.walls[1:]]
        read = [r / MiB for c in mine for r in c.read[1:]]
        stored = [s / MiB for c in mine for s in c.stored[1:]]
        restore = [c.restore for c in mine]
        medians[tool] = {"full": statistics.median(full), "inc": statistics.median(inc),
                         "read": statistics.median(read), "stored": statistics.median(stored),
                         "restore": statistics.median(restore)}  # fmt: skip
        cells = [_stat(full, ".1f"), _stat(inc, ".1f"), _stat(read, ".0f"), _stat(stored, ".0f"),
                 _stat(restore, ".1f")]  # fmt: skip
        print(f"{tool:<20} " + " ".join(f"{cell:>16}" for cell in cells))
    ours, peer = medians.get("p2v backup"), medians.get("virtnbdbackup")
    if ours and peer:
        print("\np2v / virtnbdbackup (medians): " + ", ".join(
            f"{k} {ours[k] / peer[k]:.2f}" for k in ("full", "inc", "read", "stored", "restore")
            if peer[k]))  # fmt: skip
        print(f"an increment read {ours['read'] / (WRITE / MiB):.2f}x and stored "
              f"{ours['stored'] / (WRITE / MiB):.2f}x the 64 MiB written")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
