"""A stand-in physical server made of loop devices: partition tables, filesystems
with known UUIDs, an LVM volume group and a live medium, all made by the test.

The host kernel here has no device-mapper, so the LVs are created without
activation (--driverloaded n) and the filesystem inside one is written through a
loop device at the LV's offset on its physical volume.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import attach_loop

MiB = 1 << 20
EXTENT = 4 * MiB
PE_START = 1 * MiB  # LVM's default data offset on a PV
LVM_ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}
NO_BACKUP = ["--config", "backup { backup = 0 archive = 0 }"]


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout.strip()


@contextmanager
def loop(image: Path, *options: str) -> Iterator[str]:
    device = attach_loop(image, *options)
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


@dataclass
class Server:
    mbr: str  # /dev/loopN
    gpt: str
    live: str
    vg: str
    uuids: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [os.path.basename(d) for d in (self.mbr, self.gpt, self.live)]


@contextmanager
def stand_in_server(work: Path) -> Iterator[Server]:
    vg = f"p2vtest{os.getpid()}"
    uuids = {
        "boot": "11111111-2222-4333-8444-555555555555",
        "swap": "66666666-7777-4888-9999-aaaaaaaaaaaa",
        "data": "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff",
        "lvroot": "12345678-9abc-4def-8123-456789abcdef",
    }
    images = {name: work / f"{name}.img" for name in ("mbr", "gpt")}
    for image in images.values():
        with open(image, "wb") as f:
            f.truncate(512 * MiB)
    iso_root = work / "iso"
    iso_root.mkdir()
    (iso_root / "agent.txt").write_text("the agent's medium\n")
    run("xorriso", "-as", "mkisofs", "-quiet", "-V", "P2V-AGENT", "-o", str(work / "live.iso"),
        str(iso_root))  # fmt: skip
    with (
        loop(images["mbr"], "--partscan") as mbr,
        loop(images["gpt"], "--partscan") as gpt,
        loop(work / "live.iso", "--read-only") as live,
    ):
        run("parted", "-s", mbr, "mklabel", "msdos",
            "mkpart", "primary", "ext4", "1MiB", "201MiB", "set", "1", "boot", "on",
            "mkpart", "extended", "201MiB", "100%",
            "mkpart", "logical", "linux-swap", "202MiB", "266MiB")  # fmt: skip
        run("parted", "-s", gpt, "mklabel", "gpt",
            "mkpart", "data", "ext4", "1MiB", "129MiB",
            "mkpart", "pv", "129MiB", "100%", "set", "2", "lvm", "on")  # fmt: skip
        run("partx", "-u", mbr)
        run("partx", "-u", gpt)
        run("mkfs.ext4", "-q", "-F", "-L", "boot", "-U", uuids["boot"], f"{mbr}p1")
        run("mkswap", "-L", "swap", "-U", uuids["swap"], f"{mbr}p5")
        run("mkfs.ext4", "-q", "-F", "-L", "data", "-U", uuids["data"], f"{gpt}p1")
        pv = f"{gpt}p2"
        lvm = ["--devices", pv, *NO_BACKUP]
        run("pvcreate", "-q", *lvm, pv, env=LVM_ENV)
        run("vgcreate", "-q", *lvm, vg, pv, env=LVM_ENV)
        for lv, size in (("root", "100M"), ("spare", "40M")):
            run("lvcreate", "-q", *lvm, "--driverloaded", "n", "-an", "-Zn",
                "-L", size, "-n", lv, vg, env=LVM_ENV)  # fmt: skip
        # root is the first LV: extents from 0, after the PV's metadata area.
        with loop(Path(pv), "--offset", str(PE_START), "--sizelimit", str(100 * MiB)) as lv:
            run("mkfs.ext4", "-q", "-F", "-L", "lvroot", "-U", uuids["lvroot"], lv)
        yield Server(mbr=mbr, gpt=gpt, live=live, vg=vg, uuids=uuids)
