"""Conversion benchmark: virt-v2v and `p2v convert` on the same server image, one run.

    .venv/bin/python -m bench.convert

Both convert the `bios-ext4` test server (a 3 GiB SATA-only Debian 12 image) to
local qcow2 files plus libvirt XML: virt-v2v with `-i disk -o local -of qcow2`, p2v
with `--disk ... --output-dir`. Each result is then booted on virtio-blk and
virtio-net under QEMU (not timed), with a MAC of the harness (so p2v's NIC name
pinning, made for the MAC it chose, does not apply there: `net=` shows none).
Prints wall time, peak memory (the process and all its children, the libguestfs
appliance included), output size, whether it booted, and p2v's time as a fraction
of virt-v2v's. Target: under 0.5, both boot.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from bench.transfer import P2V, run_measured
from p2v import accel
from tests.fixtures import boot, builder

MiB = 1 << 20


def main() -> int:
    if shutil.which("virt-v2v") is None:
        print("virt-v2v is not installed (make setup installs it)", file=sys.stderr)
        return 2
    image = builder.build("bios-ext4")
    env = {**os.environ, "LIBGUESTFS_BACKEND": "direct"}
    settings = accel.detect().guestfs_backend_settings
    if settings:
        env["LIBGUESTFS_BACKEND_SETTINGS"] = ":".join(settings)
    rows = []
    with tempfile.TemporaryDirectory(prefix="p2v-bench-convert-", dir="/var/tmp") as tmp:
        v2v_dir, p2v_dir = Path(tmp) / "virt-v2v", Path(tmp) / "p2v"
        v2v_dir.mkdir()
        runs = {
            "virt-v2v": (
                ["virt-v2v", "-q", "-i", "disk", str(image), "-o", "local", "-os",
                 str(v2v_dir), "-of", "qcow2", "-on", "bios-ext4"],
                v2v_dir,
            ),
            "p2v convert": (
                [*P2V, "convert", "--disk", str(image), "--output-dir", str(p2v_dir),
                 "--name", "bios-ext4"],
                p2v_dir,
            ),
        }  # fmt: skip
        for tool, (argv, out) in runs.items():
            print(f"running {tool} ...", file=sys.stderr, flush=True)
            wall, peak, _ = run_measured(argv, env)
            (disk,) = [p for p in out.iterdir() if p.name.startswith("bios-ext4-sd")]
            if disk.suffix != ".qcow2":  # virt-v2v names it without one; the boot reads it
                disk = disk.rename(disk.with_name(disk.name + ".qcow2"))
            result = boot.boot(disk, "bios", "virtio", nic="virtio", timeout=600)
            rows.append((tool, wall, peak, disk.stat().st_blocks * 512, result))
    print(f"{'tool':<12} {'wall s':>8} {'peak MiB':>9} {'output MiB':>11}  boots on virtio")
    for tool, wall, peak, size, result in rows:
        if result.booted:
            line = " ".join(f"{k}={v}" for k, v in result.fields.items())
        elif result.root_not_found:
            cmdline = re.search(r"Command line: .*?(root=\S+)", result.console)
            line = "no: stopped in the initramfs, root not found" + (
                f" (kernel {cmdline[1]})" if cmdline else ""
            )
        else:
            line = f"no: no boot line in {result.seconds:.0f} s"
        print(f"{tool:<12} {wall:8.1f} {peak / MiB:9.0f} {size / MiB:11.0f}  {line}")
    ratio = rows[1][1] / rows[0][1]
    print(f"p2v / virt-v2v wall time: {ratio:.2f} (target < 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
