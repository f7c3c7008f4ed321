"""LVM volume groups and logical volumes, from LVM's own reports; nothing is activated.

The reports run with --readonly (no locks, no metadata repair). A linear LV is probed
for its filesystem through its physical volume at the LV's offset, so filesystems in
inactive LVs are known without creating device-mapper devices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from agent.inventory.model import Filesystem, LogicalVolume, VolumeGroup
from agent.inventory.probe import Probe

_COMMON = ["--readonly", "--reportformat", "json", "--units", "b", "--nosuffix"]
VG_FIELDS = "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size"
PV_FIELDS = "pv_name,vg_name,pe_start"
LV_FIELDS = "lv_name,vg_name,lv_uuid,lv_size,segtype,seg_pe_ranges"

# Probes a filesystem on a device at an offset: (path, offset, size) -> Filesystem.
FsProbe = Callable[[str, int, int], Filesystem | None]


def parse_report(text: str, kind: str) -> list[dict[str, str]]:
    """The rows of one report (`vg`, `pv` or `seg`) of LVM's JSON output."""
    data: Any = json.loads(text)
    rows: list[dict[str, str]] = []
    for report in data.get("report", []):
        rows += report.get(kind, [])
    return rows


def build_volume_groups(
    vgs: list[dict[str, str]],
    pvs: list[dict[str, str]],
    segments: list[dict[str, str]],
    probe_fs: FsProbe | None = None,
) -> list[VolumeGroup]:
    groups = {}
    for row in vgs:
        groups[row["vg_name"]] = VolumeGroup(
            name=row["vg_name"],
            uuid=row.get("vg_uuid") or None,
            size_bytes=int(row["vg_size"]),
            free_bytes=int(row["vg_free"]),
            extent_bytes=int(row["vg_extent_size"]) if row.get("vg_extent_size") else None,
            physical_volumes=[],
        )
    pe_start = {}
    for row in pvs:
        pe_start[row["pv_name"]] = int(row.get("pe_start") or 0)
        if row.get("vg_name") in groups:
            groups[row["vg_name"]].physical_volumes.append(row["pv_name"])
    # --segments gives one row per segment; an LV with one linear segment has one row.
    by_lv: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in segments:
        by_lv.setdefault((row["vg_name"], row["lv_name"]), []).append(row)
    for (vg_name, _), rows in by_lv.items():
        group = groups.get(vg_name)
        if group is None:
            continue
        first = rows[0]
        lv = LogicalVolume(
            name=first["lv_name"], size_bytes=int(first["lv_size"]), uuid=first.get("lv_uuid")
        )
        place = _linear_place(rows, pe_start, group.extent_bytes)
        if probe_fs and place:
            lv.filesystem = probe_fs(place[0], place[1], lv.size_bytes)
        group.logical_volumes.append(lv)
    return list(groups.values())


def _linear_place(
    rows: list[dict[str, str]], pe_start: dict[str, int], extent: int | None
) -> tuple[str, int] | None:
    """(physical volume, byte offset) of an LV stored in one linear run, else None."""
    if len(rows) != 1 or rows[0].get("segtype") != "linear" or not extent:
        return None
    match = re.fullmatch(r"(.+):(\d+)-(\d+)", rows[0].get("seg_pe_ranges", "").strip())
    if not match or match.group(1) not in pe_start:
        return None
    return match.group(1), pe_start[match.group(1)] + int(match.group(2)) * extent


def read_volume_groups(
    probe: Probe, devices: list[str] | None, probe_fs: FsProbe | None
) -> list[VolumeGroup]:
    scope = ["--devices", ",".join(devices)] if devices else []
    why = "LVM volume groups"
    vgs = probe.run(["vgs", *_COMMON, *scope, "-o", VG_FIELDS], why)
    pvs = probe.run(["pvs", *_COMMON, *scope, "-o", PV_FIELDS], why)
    lvs = probe.run(["lvs", *_COMMON, *scope, "--segments", "-o", LV_FIELDS], why)
    if vgs is None or pvs is None or lvs is None:
        return []
    try:
        return build_volume_groups(
            parse_report(vgs, "vg"), parse_report(pvs, "pv"), parse_report(lvs, "seg"), probe_fs
        )
    except (ValueError, KeyError) as e:
        probe.note(f"LVM report not understood ({e}): volume groups unknown")
        return []
