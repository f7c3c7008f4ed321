"""`p2v restore DIR --define NAME -c URI`: a point of the chain brought back as a VM on
a libvirt host. Each disk is restored here (its digest checked), then uploaded into a
qcow2 volume of the host's pool through the libvirt connection (so the VM can be
backed up incrementally again), and the backed-up definition is defined under NAME
with its disks on those volumes. It keeps the backed-up VM's UUID where the host has
no domain with it, and its MAC addresses; its UEFI variables start afresh from the
firmware's template (a backup does not hold them yet).

Everything that would be refused is refused before anything is made; a failure
half-way removes the volumes made.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2v.backup.catalog import Catalog
from p2v.backup.chain import point
from p2v.backup.restore import restore
from p2v.errors import InputError
from p2v.host import virt
from p2v.host.virt import storage
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT
from p2v.transfer.progress import Reporter
from p2v.units import format_size

Say = Callable[[str], None]


def define(
    directory: Path,
    at: str | None,
    name: str,
    uri: str,
    pool_name: str,
    say: Say,
    reporter: Reporter | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> dict[str, Any]:
    with Catalog(directory) as catalog:
        backup = point(catalog, at)
    volumes = {d.target: f"{name}-{d.target}.qcow2" for d in backup.disks}
    with virt.connection(uri, connect_timeout) as conn:
        pool = virt.pool(conn, pool_name)
        storage.refresh(pool)
        problems = []
        if virt.lookup(conn, name) is not None:
            problems.append(f"{uri} has a domain named {name} already")
        problems += [f"the pool {pool_name} holds a volume {v} already"
                     for v in volumes.values() if virt.volume(pool, v) is not None]  # fmt: skip
        if problems:
            raise InputError("; ".join(problems))
        with tempfile.TemporaryDirectory(prefix="p2v-restore-") as scratch:
            done = restore(directory, at, scratch, say, reporter, into_directory=True)
            files = {t: d["path"] for t, d in done["disks"].items()}
            needed = sum(os.path.getsize(f) for f in files.values())
            if needed > virt.free_bytes(pool):
                raise InputError(f"the pool {pool_name} on {uri} has "
                                 f"{format_size(virt.free_bytes(pool))} free, the disks need "
                                 f"{format_size(needed)}")  # fmt: skip
            made: list[Any] = []
            try:
                paths = {}
                for disk in backup.disks:
                    vol = virt.create_volume(pool, volumes[disk.target], disk.size, "qcow2")
                    made.append(vol)
                    storage.upload_file(conn, vol, files[disk.target])
                    paths[disk.target] = storage.path(vol)
                    say(f"{disk.target} uploaded to {pool_name}/{volumes[disk.target]} on {uri}")
                keep_uuid = _uuid(backup.domain_xml)
                if keep_uuid and virt.lookup_uuid(conn, keep_uuid) is not None:
                    keep_uuid = None
                domain = virt.define(conn, vm_xml(backup.domain_xml, name, paths, keep_uuid))
            except BaseException:
                for vol in made:
                    storage.delete_volume(vol)
                raise
            uuid = domain.UUIDString()
    say(f"{name} defined on {uri} from {backup.folder()}, with the MAC addresses of "
        f"{backup.vm}: do not start both on one network")  # fmt: skip
    if missing := left_out(backup.domain_xml, volumes):
        say(f"left out of {name}: {', '.join(missing)} (not in the backup: read-only or shared)")
    return {"backup": backup.folder(), "name": name, "uri": uri, "uuid": uuid,
            "volumes": {t: f"{pool_name}/{v}" for t, v in volumes.items()}}  # fmt: skip


def _uuid(xml: str) -> str | None:
    return ET.fromstring(xml).findtext("uuid")


def vm_xml(xml: str, name: str, disks: dict[str, str], uuid: str | None) -> str:
    """The backed-up definition under `name`, its disks on `disks` (target -> path)."""
    root = ET.fromstring(xml)
    for node in root.findall("name"):
        node.text = name
    for node in root.findall("uuid"):
        root.remove(node)
    if uuid:
        root.insert(1, _text("uuid", uuid))
    os_node = root.find("os")
    if os_node is not None:
        for nvram in os_node.findall("nvram"):  # libvirt makes a fresh one
            os_node.remove(nvram)
    devices = root.find("devices")
    assert devices is not None, "a domain has devices"
    put_disks(devices, disks)
    return ET.tostring(root, encoding="unicode")


def put_disks(devices: ET.Element, disks: dict[str, str]) -> None:
    """Each backed-up disk (target -> path) on its restored qcow2; CD-ROMs and floppies
    emptied; disks not in the backup (read-only, shared) left out (`left_out` names
    them)."""
    for disk in devices.findall("disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if dev in disks:
            disk.set("type", "file")
            for tag in ("source", "backingStore", "driver"):
                for node in disk.findall(tag):
                    disk.remove(node)
            disk.insert(0, ET.Element("driver", name="qemu", type="qcow2"))
            disk.insert(1, ET.Element("source", file=disks[dev]))
        elif disk.get("device") in ("cdrom", "floppy"):
            for source in disk.findall("source"):
                disk.remove(source)
        else:
            devices.remove(disk)


def left_out(xml: str, disks: dict[str, str]) -> list[str]:
    """The backed-up VM's disks that a backup does not hold (read-only or shared)."""
    root = ET.fromstring(xml)
    return [t.get("dev", "?") for d in root.findall("devices/disk")
            if d.get("device") not in ("cdrom", "floppy")
            and (t := d.find("target")) is not None and t.get("dev") not in disks]  # fmt: skip


def _text(tag: str, text: str) -> ET.Element:
    node = ET.Element(tag)
    node.text = text
    return node
