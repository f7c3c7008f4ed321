"""A domain's snapshots through libvirt: external ones (an overlay per disk, the
memory in a file), made live, reverted and deleted by libvirt itself (libvirt 9.9
reverts and deletes external snapshots, merging their layers). libvirt 11.2 and 11.3
cannot revert internal snapshots, and they need every disk and the UEFI variables in
qcow2: so external only.

How long the guest was paused is measured here, from libvirt's lifecycle events
(SUSPENDED, then RESUMED), which libvirt does not report for a snapshot itself.
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from p2v.errors import ComponentError
from p2v.host.virt.connection import failing_as, libvirt_module

RESUME_WAIT_S = 5.0  # for the RESUMED event, which may come after the call returns


def external_supported(conn: Any) -> bool:
    """Whether the host reverts and deletes external snapshots (libvirt 9.9 and later
    say so in their capabilities)."""
    with failing_as(", reading the host's capabilities"):
        caps = ET.fromstring(conn.getCapabilities())
    return caps.find("guest/features/externalSnapshot") is not None


def lookup(domain: Any, name: str) -> Any:
    """The domain's snapshot `name`, or None."""
    libvirt = libvirt_module()
    try:
        return domain.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise ComponentError(f"libvirt: {error.get_error_message()}") from error
    return None


@dataclass
class Made:
    snapshot: Any
    paused_s: float | None  # how long the guest's CPUs stood still; None: it never ran
    took_s: float


def create(domain: Any, xml: str, *, live: bool, disk_only: bool) -> Made:
    """Take the snapshot `xml` describes. `live`: the guest runs while its memory is
    written and pauses only for the last of it and the switch to the overlays."""
    libvirt = libvirt_module()
    flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_LIVE if live else 0) | (
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY if disk_only else 0
    )
    watch = _Pauses(domain)
    began = time.monotonic()
    try:
        with failing_as(f", snapshotting {domain.name()}"):
            snapshot = domain.snapshotCreateXML(xml, flags)
        took = time.monotonic() - began
        return Made(snapshot, watch.paused(), took)
    finally:
        watch.close()


class _Pauses:
    """The guest's pauses, from libvirt's lifecycle events (delivered by the event loop
    the connection module runs), timed on arrival."""

    def __init__(self, domain: Any) -> None:
        libvirt = libvirt_module()
        self.conn = domain.connect()
        self.events: list[tuple[int, float]] = []  # (event, monotonic time of arrival)
        self.changed = threading.Condition()
        self.suspended, self.resumed = (
            libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
            libvirt.VIR_DOMAIN_EVENT_RESUMED,
        )
        self.callback = self.conn.domainEventRegisterAny(
            domain, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._event, None
        )

    def _event(self, _conn: Any, _dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        with self.changed:
            self.events.append((event, time.monotonic()))
            self.changed.notify_all()

    def paused(self) -> float | None:
        """Seconds from the first SUSPENDED to the RESUMED after it."""
        with self.changed:
            self.changed.wait_for(self._ended, RESUME_WAIT_S)
            stops = [t for e, t in self.events if e == self.suspended]
            if not stops:
                return None
            goes = [t for e, t in self.events if e == self.resumed and t >= stops[0]]
            return round(goes[0] - stops[0], 3) if goes else None

    def _ended(self) -> bool:
        kinds = [e for e, _ in self.events]
        return self.suspended not in kinds or self.resumed in kinds[kinds.index(self.suspended) :]

    def close(self) -> None:
        libvirt = libvirt_module()
        with contextlib.suppress(libvirt.libvirtError):  # the connection went away
            self.conn.domainEventDeregisterAny(self.callback)


@dataclass
class SnapshotInfo:
    name: str
    parent: str | None
    current: bool
    created: float
    state: str  # the domain's state when it was taken: running, shutoff, disk-snapshot
    memory_file: str | None
    disks: dict[str, str] = field(default_factory=dict)  # target -> overlay it started
    description: str = ""


def listed(domain: Any) -> list[SnapshotInfo]:
    """The domain's snapshots, parents before their children."""
    libvirt = libvirt_module()
    with failing_as(f", listing {domain.name()}'s snapshots"):
        found = domain.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
        return [_info(snapshot) for snapshot in found]


def _info(snapshot: Any) -> SnapshotInfo:
    root = ET.fromstring(snapshot.getXMLDesc(0))
    memory = root.find("memory")
    disks = {}
    for disk in root.findall("disks/disk"):
        source = disk.find("source")
        if disk.get("snapshot") == "external" and source is not None:
            disks[disk.get("name", "")] = source.get("file", "")
    return SnapshotInfo(
        name=root.findtext("name", ""),
        parent=root.findtext("parent/name"),
        current=bool(snapshot.isCurrent(0)),
        created=float(root.findtext("creationTime", "0")),
        state=root.findtext("state", ""),
        memory_file=memory.get("file") if memory is not None else None,
        disks=disks,
        description=root.findtext("description", ""),
    )


def revert(snapshot: Any, running: bool = False) -> None:
    """Bring the domain back to `snapshot` (libvirt restarts its QEMU from the saved
    memory). `running`: a disk-only snapshot comes back running, not shut off."""
    libvirt = libvirt_module()
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING if running else 0
    with failing_as(f", reverting to the snapshot {snapshot.getName()}"):
        snapshot.getDomain().revertToSnapshot(snapshot, flags)


def delete(snapshot: Any) -> None:
    """Delete `snapshot`; libvirt merges its overlays into their neighbours, so every
    other snapshot stays revertible."""
    with failing_as(f", deleting the snapshot {snapshot.getName()}"):
        snapshot.delete(0)


def definitions(domain: Any) -> list[tuple[str, str, bool]]:
    """Each snapshot's full definition (secrets included: the journal never holds it),
    parents first: (name, XML, whether it is the current one). What another host is
    given to redefine them."""
    libvirt = libvirt_module()
    with failing_as(f", reading {domain.name()}'s snapshots"):
        found = domain.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
        secure = libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE
        return [(s.getName(), s.getXMLDesc(secure), bool(s.isCurrent(0))) for s in found]


def redefine(domain: Any, xml: str, current: bool) -> None:
    """Record a snapshot whose files are in place already (moved from another host),
    as `virsh snapshot-create --redefine` does; an existing one of its name is updated."""
    libvirt = libvirt_module()
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
    if current:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    with failing_as(f", redefining a snapshot of {domain.name()}"):
        domain.snapshotCreateXML(xml, flags)
