"""`p2v-agent inventory` on real devices made by the test reports them exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.inventory.model import Inventory
from tests.integration.agent.servers import MiB, Server


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120
    )


def inventory_of(server: Server) -> Inventory:
    args = [a for name in server.names() for a in ("--disk", name)]
    done = agent("inventory", "--json", *args)
    assert done.returncode == 0, done.stderr
    return Inventory.from_json(done.stdout)


def test_partitions_and_filesystems(server: Server) -> None:
    inv = inventory_of(server)
    mbr = inv.disk(Path(server.mbr).name)
    assert mbr is not None
    assert (mbr.size_bytes, mbr.partition_table, mbr.logical_sector) == (512 * MiB, "msdos", 512)
    assert [(p.number, p.kind, p.start_bytes, p.size_bytes) for p in mbr.partitions] == [
        (1, "primary", 1 * MiB, 200 * MiB),
        (2, "extended", 201 * MiB, 311 * MiB),
        (5, "logical", 202 * MiB, 64 * MiB),
    ]
    boot, _, swap = mbr.partitions
    assert "boot" in boot.flags and boot.type_id == "0x83"
    assert boot.filesystem is not None
    assert (boot.filesystem.type, boot.filesystem.uuid, boot.filesystem.label) == (
        "ext4",
        server.uuids["boot"],
        "boot",
    )
    fs = boot.filesystem
    assert fs.size_bytes == 200 * MiB and fs.used_bytes and fs.free_bytes
    assert fs.used_bytes + fs.free_bytes == fs.size_bytes and fs.used_bytes < 20 * MiB
    assert swap.filesystem and (swap.filesystem.type, swap.filesystem.uuid) == (
        "swap",
        server.uuids["swap"],
    )
    assert not mbr.live_medium

    gpt = inv.disk(Path(server.gpt).name)
    assert gpt is not None and gpt.partition_table == "gpt"
    data, pv = gpt.partitions
    assert (data.gpt_name, data.start_bytes, data.size_bytes) == ("data", 1 * MiB, 128 * MiB)
    assert data.type_id == "0fc63daf-8483-4772-8e79-3d69d8477de4"
    assert data.filesystem and data.filesystem.uuid == server.uuids["data"]
    assert "lvm" in pv.flags and pv.filesystem is None


def test_lvm_volume_group(server: Server) -> None:
    inv = inventory_of(server)
    (vg,) = [g for g in inv.volume_groups if g.name == server.vg]
    assert vg.physical_volumes == [f"{server.gpt}p2"] and vg.extent_bytes == 4 * MiB
    assert vg.size_bytes == 380 * MiB and vg.free_bytes == 240 * MiB
    root, spare = vg.logical_volumes
    assert (root.name, root.size_bytes, spare.name, spare.size_bytes) == (
        "root",
        100 * MiB,
        "spare",
        40 * MiB,
    )
    assert root.filesystem and (root.filesystem.type, root.filesystem.uuid) == (
        "ext4",
        server.uuids["lvroot"],
    )
    assert root.filesystem.label == "lvroot" and spare.filesystem is None


def test_live_medium_is_flagged_and_never_served(server: Server) -> None:
    inv = inventory_of(server)
    live = inv.disk(Path(server.live).name)
    assert live is not None and live.live_medium
    assert live.filesystem and live.filesystem.type == "iso9660"
    done = agent("serve", "--listen", "127.0.0.1:18499", "--disk", Path(server.live).name)
    assert done.returncode == 2 and "live medium" in done.stderr


def test_text_report(server: Server) -> None:
    done = agent("inventory", "--disk", Path(server.gpt).name)
    assert done.returncode == 0, done.stderr
    assert f"lvm       {server.vg}" in done.stdout and "label=lvroot" in done.stdout


def test_inventory_json_is_the_record(server: Server) -> None:
    done = agent("inventory", "--json", "--disk", Path(server.mbr).name)
    data = json.loads(done.stdout)
    assert data["schema_version"] == 1 and data["disks"][0]["name"] == Path(server.mbr).name
