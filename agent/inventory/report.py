"""The inventory as a short text report for people (both `p2v-agent inventory` and
`p2v inventory` print it)."""

from __future__ import annotations

from agent.inventory.model import Filesystem, Inventory


def size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def _fs(fs: Filesystem | None) -> str:
    if fs is None:
        return ""
    parts = [fs.type]
    if fs.label:
        parts.append(f"label={fs.label}")
    if fs.uuid:
        parts.append(f"uuid={fs.uuid}")
    if fs.used_bytes is not None:
        parts.append(f"used {size(fs.used_bytes)} of {size(fs.size_bytes)}")
    if fs.mountpoint:
        parts.append(f"mounted on {fs.mountpoint}")
    return " ".join(parts)


def _v(value: object) -> str:
    return "?" if value is None else str(value)


def format_inventory(inv: Inventory) -> str:
    m, c = inv.machine, inv.cpu
    lines = [
        f"host      {_v(inv.hostname)} (agent {inv.agent_version}, schema {inv.schema_version})",
        f"machine   {_v(m.vendor)} {_v(m.product)}  serial {_v(m.serial)}  uuid {_v(m.uuid)}",
        f"firmware  {_v(m.firmware)}"
        + (
            f"  secure boot {'on' if m.secure_boot else 'off'}" if m.secure_boot is not None else ""
        ),
    ]
    for entry in m.boot_entries:
        mark = "*" if entry.active else " "
        lines.append(
            f"  {mark}Boot{entry.number:04X} {entry.description} {entry.path or ''}".rstrip()
        )
    lines += [
        f"cpu       {_v(c.threads)} threads, {_v(c.cores)} cores, {_v(c.sockets)} sockets: "
        f"{_v(c.vendor)} {_v(c.model)}",
        f"memory    {size(inv.memory.installed_bytes)} installed, "
        f"{size(inv.memory.usable_bytes)} usable",
    ]
    for d in inv.disks:
        tags = [t for t in (d.transport, d.model, d.serial and f"serial {d.serial}") if t]
        live = "  LIVE MEDIUM (not exported)" if d.live_medium else ""
        lines.append(
            f"disk      {d.name} {size(d.size_bytes)} {d.partition_table or 'no table'} "
            f"{' '.join(tags)}{live}".rstrip()
        )
        if d.filesystem:
            lines.append(f"            (whole disk) {_fs(d.filesystem)}")
        for p in d.partitions:
            lines.append(
                f"            {p.name:<10} {size(p.size_bytes):>10}  {_fs(p.filesystem)}"
                + (f" [{', '.join(p.flags)}]" if p.flags else "")
            )
    for vg in inv.volume_groups:
        lines.append(
            f"lvm       {vg.name} {size(vg.size_bytes)} ({size(vg.free_bytes)} free) "
            f"on {', '.join(vg.physical_volumes)}"
        )
        for lv in vg.logical_volumes:
            lines.append(
                f"            {lv.name:<10} {size(lv.size_bytes):>10}  {_fs(lv.filesystem)}"
            )
    for md in inv.raid_arrays:
        state = "active" if md.active else "not assembled"
        lines.append(f"raid      {md.name} {md.level} {state} on {', '.join(md.members)}")
    for n in inv.nics:
        speed = f" {n.speed_mbps} Mb/s" if n.speed_mbps else ""
        lines.append(
            f"nic       {n.name} {n.mac} {_v(n.driver)} {_v(n.link)}{speed} {' '.join(n.addresses)}"
        )
    lines.append(f"pci       {len(inv.pci_devices)} devices")
    for note in inv.notes:
        lines.append(f"unknown   {note}")
    return "\n".join(lines)
