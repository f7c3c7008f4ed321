"""Conversion benchmark: virt-v2v and `p2v convert` on the same server image, one run.

    .venv/bin/python -m bench.convert [SERVER ...]

Both convert a test server (default `bios-ext4`, a 3 GiB SATA-only Debian 12 image;
`uefi-lvm` is UEFI with root on LVM and a dracut initramfs) to
local qcow2 files plus libvirt XML: virt-v2v with `-i disk -o local -of qcow2`, p2v
with `--disk ... --output-dir`. Each result is then booted on virtio-blk and
virtio-net under QEMU (not timed), with a MAC of the harness (so p2v's NIC name
pinning, made for the MAC it chose, does not apply there: `net=` shows none).
Prints wall time, peak memory (the process and all its children, the libguestfs
appliance included), output size, whether it booted, and p2v's time as a fraction
of virt-v2v's. Target: under 0.5, both boot.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.transfer import P2V, run_measured
from p2v import appliance
from tests.fixtures import boot, builder, recipes

MiB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "servers",
        nargs="*",
        default=["bios-ext4"],
        metavar="SERVER",
        choices=sorted(recipes.RECIPES),
        help="test servers to convert (default: bios-ext4)",
    )
    args = parser.parse_args()
    if shutil.which("virt-v2v") is None:
        print("virt-v2v is not installed (make setup installs it)", file=sys.stderr)
        return 2
    env = appliance.tool_environment()
    rows = [row for name in args.servers for row in _convert_both(name, env)]
    print(
        f"{'server':<10} {'tool':<12} {'wall s':>7} {'peak MiB':>9} {'output MiB':>11}"
        "  boots on virtio"
    )
    for name, tool, wall, peak, size, result in rows:
        print(
            f"{name:<10} {tool:<12} {wall:7.1f} {peak / MiB:9.0f} {size / MiB:11.0f}"
            f"  {_boot_line(result)}"
        )
    for v2v, ours in zip(rows[::2], rows[1::2], strict=True):
        print(f"{v2v[0]}: p2v / virt-v2v wall time: {ours[2] / v2v[2]:.2f} (target < 0.5)")
    return 0


def _convert_both(name: str, env: dict[str, str]) -> list[tuple[str, str, float, int, int, Any]]:
    """virt-v2v then p2v on test server `name`, each result booted on virtio."""
    image = builder.build(name)
    firmware = recipes.RECIPES[name].firmware
    rows = []
    with tempfile.TemporaryDirectory(prefix="p2v-bench-convert-", dir="/var/tmp") as tmp:
        v2v_dir, p2v_dir = Path(tmp) / "virt-v2v", Path(tmp) / "p2v"
        v2v_dir.mkdir()
        runs = {
            "virt-v2v": (
                ["virt-v2v", "-q", "-i", "disk", str(image), "-o", "local", "-os",
                 str(v2v_dir), "-of", "qcow2", "-on", name],
                v2v_dir,
            ),
            "p2v convert": (
                [*P2V, "convert", "--disk", str(image), "--output-dir", str(p2v_dir),
                 "--name", name],
                p2v_dir,
            ),
        }  # fmt: skip
        for tool, (argv, out) in runs.items():
            print(f"{name}: running {tool} ...", file=sys.stderr, flush=True)
            wall, peak, _ = run_measured(argv, env)
            (disk,) = [p for p in out.iterdir() if p.name.startswith(f"{name}-sd")]
            if disk.suffix != ".qcow2":  # virt-v2v names it without one; the boot reads it
                disk = disk.rename(disk.with_name(disk.name + ".qcow2"))
            result = boot.boot(disk, firmware, "virtio", nic="virtio", timeout=600)
            rows.append((name, tool, wall, peak, disk.stat().st_blocks * 512, result))
    return rows


def _boot_line(result: Any) -> str:
    if result.booted:
        return " ".join(f"{k}={v}" for k, v in result.fields.items())
    if result.root_not_found:
        cmdline = re.search(r"Command line: .*?(root=\S+)", result.console)
        return "no: stopped in the initramfs, root not found" + (
            f" (kernel {cmdline[1]})" if cmdline else ""
        )
    return f"no: no boot line in {result.seconds:.0f} s"


if __name__ == "__main__":
    sys.exit(main())
