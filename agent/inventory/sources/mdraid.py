"""md-raid arrays: assembled ones from /proc/mdstat, the rest from member superblocks.

The agent never assembles an array: assembling can update superblocks, which is a
write. Members are found with `mdadm --examine --export`, which only reads.
"""

from __future__ import annotations

import re

from agent.inventory.model import RaidArray
from agent.inventory.probe import Probe

_ARRAY = re.compile(r"^(md\S*)\s*:\s*(active|inactive)\s+(?:\(\S+\)\s+)?(raid\d+|linear)?\s*(.*)$")


def parse_mdstat(text: str) -> list[RaidArray]:
    arrays = []
    for line in text.splitlines():
        match = _ARRAY.match(line.strip())
        if not match:
            continue
        name, state, level, rest = match.groups()
        members = [re.sub(r"\[\d+\].*$", "", m) for m in rest.split()]
        arrays.append(
            RaidArray(
                name=name,
                level=level or "unknown",
                uuid=None,
                members=members,
                active=state == "active",
            )
        )
    return arrays


def parse_examine_export(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


def group_members(examined: dict[str, dict[str, str]]) -> list[RaidArray]:
    """Arrays known from their members' superblocks: {device name: mdadm values}."""
    arrays: dict[str, RaidArray] = {}
    for device, values in sorted(examined.items()):
        uuid = values.get("MD_UUID")
        if not uuid:
            continue
        array = arrays.setdefault(
            uuid,
            RaidArray(
                name=values.get("MD_NAME", uuid).split(":")[-1],
                level=values.get("MD_LEVEL", "unknown"),
                uuid=uuid,
                members=[],
                active=False,
            ),
        )
        array.members.append(device)
    return list(arrays.values())


def read_raid_arrays(probe: Probe, member_candidates: list[str]) -> list[RaidArray]:
    """`member_candidates`: kernel names whose blkid type is linux_raid_member."""
    mdstat = probe.read("/proc/mdstat")
    active = parse_mdstat(mdstat) if mdstat else []
    examined = {}
    for name in member_candidates:
        out = probe.run(["mdadm", "--examine", "--export", f"/dev/{name}"], "md-raid arrays")
        if out:
            examined[name] = parse_examine_export(out)
    found = group_members(examined)
    running = {m for array in active for m in array.members}
    return active + [a for a in found if not running.intersection(a.members)]
