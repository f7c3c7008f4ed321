"""A snapshot's plan: its name, each disk's overlay, the memory file, its XML; and the
tree `p2v snapshot list --tree` draws."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from p2v.errors import InputError
from p2v.snapshot.listing import Listed, draw
from p2v.snapshot.plan import (
    Overlay,
    Plan,
    checked_name,
    memory_path,
    nvram_copy,
    overlay_path,
)


def test_names_that_would_make_bad_file_names_are_refused() -> None:
    assert checked_name("before-upgrade.2") == "before-upgrade.2"
    for bad in ("", ".hidden", "a/b", "with space", "x" * 65, "-dash"):
        with pytest.raises(InputError, match="use letters, digits"):
            checked_name(bad)


def test_overlays_and_memory_go_beside_the_disks() -> None:
    assert overlay_path("/pool/web1.qcow2", "s1") == "/pool/web1.s1.qcow2"
    assert overlay_path("/pool/web1-vdb", "s1") == "/pool/web1-vdb.s1.qcow2"
    assert overlay_path("/pool/web1.s1.qcow2", "s2") == "/pool/web1.s1.s2.qcow2"
    assert memory_path("/pool", "web1", "s1") == "/pool/web1.s1.mem"
    assert nvram_copy("/nvram/web1_VARS.fd", "s1") == "/nvram/web1_VARS.fd.s1"


def test_the_xml_asks_for_external_overlays_and_memory_in_a_file() -> None:
    plan = Plan("web1", "u", "s1", True, "/pool/web1.s1.mem",
                [Overlay("vda", "/pool/web1.qcow2", "/pool/web1.s1.qcow2")])  # fmt: skip
    root = ET.fromstring(plan.xml("before the upgrade"))
    assert root.findtext("name") == "s1" and root.findtext("description") == "before the upgrade"
    assert root.find("memory").attrib == {"snapshot": "external", "file": "/pool/web1.s1.mem"}
    disk = root.find("disks/disk")
    assert disk.attrib == {"name": "vda", "snapshot": "external"}
    assert disk.find("source").get("file") == "/pool/web1.s1.qcow2"
    assert disk.find("driver").get("type") == "qcow2"
    disk_only = Plan("web1", "u", "s2", True, None, plan.disks)
    assert ET.fromstring(disk_only.xml()).find("memory").get("snapshot") == "no"
    assert Plan.from_json(plan.to_json()) == plan


def listed(name: str, parent: str | None, created: float, current: bool = False) -> Listed:
    return Listed(name, parent, current, created, "running", True, 1 << 20, [])


def test_the_tree_puts_each_snapshot_under_its_parent() -> None:
    lines = draw([
        listed("base", None, 1.0), listed("a", "base", 2.0), listed("a2", "a", 3.0),
        listed("b", "base", 4.0, current=True),
    ])  # fmt: skip
    drawn = ["base", "├─ a", "│  └─ a2", "└─ b"]
    assert [line[: len(start)] for line, start in zip(lines, drawn, strict=True)] == drawn
    assert lines[-1].endswith("(current)") and "memory + disks" in lines[0]


def test_a_rotation_deletes_its_own_oldest_beyond_what_it_keeps() -> None:
    from p2v.snapshot.plan import default_name, rotated

    taken = [(default_name(t, "hourly"), t) for t in (100.0, 4000.0, 8000.0, 12000.0)]
    others = [("before-upgrade", 50.0), ("daily-2025", 60.0), ("hourly-x", 70.0)]
    assert rotated(taken + others, "hourly", 2) == [taken[0][0], taken[1][0]]
    assert rotated(taken + others, "hourly", 9) == []
    assert rotated(others, "hourly", 1) == []
