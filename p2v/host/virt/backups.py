"""A domain's backups through libvirt's backup API, pull mode: `backupBegin` makes a
checkpoint (a persistent dirty bitmap in each qcow2 disk) and has QEMU export every
disk over NBD as it was at that instant, while the guest runs on; the reader takes
what it needs, then the job is ended. An incremental backup names the checkpoint it
goes on from, and the export then offers `qemu:dirty-bitmap:backup-TARGET`: the
blocks written since.

The guest's filesystems are frozen through its guest agent for the instant the
backup begins (libvirt's python binding has no QUIESCE flag for backupBegin yet), so
that the point in time is consistent; without an agent it is crash-consistent.
"""

from __future__ import annotations

import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from p2v.errors import ComponentError
from p2v.host.virt.connection import failing_as, libvirt_module

PREFIX = "p2v-"  # our checkpoints' names start so; others' are left alone
END_WAIT_S = 30.0  # for libvirt to tear a backup job down after it is ended


@dataclass(frozen=True)
class Export:
    """Where the backup's NBD server listens: a unix socket on the domain's host,
    or TCP with TLS (the host's qemu.conf names the certificates)."""

    socket: str | None = None
    address: str | None = None
    port: int | None = None

    def server_xml(self) -> ET.Element:
        if self.socket:
            return ET.Element("server", transport="unix", socket=self.socket)
        return ET.Element(
            "server", transport="tcp", name=str(self.address), port=str(self.port), tls="yes"
        )


def qemu_owner(conn: Any) -> tuple[int, int] | None:
    """The user and group the host's QEMU runs as (its DAC base label), or None when
    the host does not say: who must be able to make the export's socket."""
    with failing_as(", reading the host's capabilities"):
        caps = ET.fromstring(conn.getCapabilities())
    for model in caps.findall("host/secmodel"):
        if model.findtext("model") != "dac":
            continue
        for label in model.findall("baselabel"):
            user, _, group = (label.text or "").partition(":")
            if user.lstrip("+").isdigit() and group.lstrip("+").isdigit():
                return int(user.lstrip("+")), int(group.lstrip("+"))
    return None


def bitmap_of(target: str) -> str:
    """The name of the dirty bitmap an incremental backup's export offers for a disk."""
    return f"backup-{target}"


def backup_xml(export: Export, targets: list[str], since: str | None) -> str:
    """Pull mode over `export` for the disks `targets`, incremental from checkpoint
    `since` when given. Each disk's scratch file (where QEMU keeps what the guest
    overwrites before it is read) is libvirt's choice: beside the disk, named after
    it and the checkpoint, deleted when the job ends."""
    root = ET.Element("domainbackup", mode="pull")
    if since:
        ET.SubElement(root, "incremental").text = since
    root.append(export.server_xml())
    listed = ET.SubElement(root, "disks")
    for target in targets:
        ET.SubElement(listed, "disk", name=target, backup="yes", type="file")
    return ET.tostring(root, encoding="unicode")


def checkpoint_xml(name: str, targets: list[str], description: str = "") -> str:
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    listed = ET.SubElement(root, "disks")
    for target in targets:
        ET.SubElement(listed, "disk", name=target, checkpoint="bitmap")
    return ET.tostring(root, encoding="unicode")


AGENT_TIMEOUT = 30  # seconds for the guest agent to freeze its filesystems


@dataclass(frozen=True)
class Begun:
    frozen: bool  # the guest's filesystems were frozen for the instant it began
    why_not_frozen: str | None


def begin(domain: Any, backup: str, checkpoint: str | None, quiesce: bool = True) -> Begun:
    """Begin the backup `backup` with its checkpoint (None: none, a one-off read); the
    guest frozen meanwhile when its agent answers."""
    libvirt = libvirt_module()
    frozen, why = False, None
    if quiesce:
        # libvirt waits for an agent's answer without end unless told otherwise (for
        # the running domain only: its definition keeps no such setting).
        with contextlib.suppress(libvirt.libvirtError):
            domain.agentSetResponseTimeout(AGENT_TIMEOUT, 0)
        try:
            domain.fsFreeze(None, 0)
            frozen = True
        except libvirt.libvirtError as error:
            why = error.get_error_message()
            if error.get_error_code() == libvirt.VIR_ERR_AGENT_UNRESPONSIVE:
                # It may have frozen some filesystems before it stopped answering.
                with contextlib.suppress(libvirt.libvirtError):
                    domain.fsThaw(None, 0)
    try:
        with failing_as(", beginning the backup"):
            domain.backupBegin(backup, checkpoint, 0)
    finally:
        if frozen:
            with failing_as(", thawing the guest's filesystems"):
                domain.fsThaw(None, 0)
    return Begun(frozen, why)


def running(domain: Any) -> bool:
    """Whether a backup job of ours (any backup job) runs on the domain."""
    libvirt = libvirt_module()
    try:
        domain.backupGetXMLDesc(0)
    except libvirt.libvirtError as error:
        if error.get_error_code() in (
            libvirt.VIR_ERR_NO_DOMAIN_BACKUP,
            libvirt.VIR_ERR_OPERATION_INVALID,
        ):
            return False
        raise ComponentError(f"libvirt: {error.get_error_message()}") from error
    return True


def end(domain: Any) -> None:
    """End the backup job (the reader is done, or gives up), and wait until libvirt
    has torn it down: a new one cannot begin before."""
    libvirt = libvirt_module()
    if not running(domain):
        return
    try:
        domain.abortJob()
    except libvirt.libvirtError as error:
        if running(domain):
            raise ComponentError(
                f"libvirt, ending the backup: {error.get_error_message()}"
            ) from error
    deadline = time.monotonic() + END_WAIT_S
    while running(domain):
        if time.monotonic() > deadline:
            raise ComponentError(f"libvirt did not end the backup job in {END_WAIT_S:g} s")
        time.sleep(0.1)


@contextlib.contextmanager
def ended_on_error(domain: Any, stop: bool) -> Iterator[None]:
    """On an error, the backup job ended (and the domain stopped when `stop`: it was
    started paused for the backup)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            end(domain)
        if stop:
            with contextlib.suppress(Exception):
                domain.destroy()
        raise


@dataclass(frozen=True)
class Checkpoint:
    name: str
    created: float
    parent: str | None
    disks: tuple[str, ...]  # targets with a bitmap


def checkpoints(domain: Any) -> list[Checkpoint]:
    """The domain's checkpoints, oldest first."""
    with failing_as(", listing checkpoints"):
        found = [_checkpoint(c) for c in domain.listAllCheckpoints(0)]
    return sorted(found, key=lambda c: c.created)


def _checkpoint(checkpoint: Any) -> Checkpoint:
    root = ET.fromstring(
        checkpoint.getXMLDesc(libvirt_module().VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN)
    )
    parent = root.findtext("parent/name")
    disks = tuple(
        d.get("name", "") for d in root.findall("disks/disk") if d.get("checkpoint") == "bitmap"
    )
    return Checkpoint(root.findtext("name") or "", float(root.findtext("creationTime") or 0),
                      parent, disks)  # fmt: skip


def delete_checkpoint(domain: Any, name: str) -> None:
    """Delete a checkpoint (its bitmaps merge into its parent's, so later ones stay
    good); nothing when it is gone already."""
    libvirt = libvirt_module()
    try:
        checkpoint = domain.checkpointLookupByName(name, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT:
            return
        raise ComponentError(f"libvirt: {error.get_error_message()}") from error
    with failing_as(f", deleting checkpoint {name}"):
        checkpoint.delete(0)


def checkpoint_definitions(domain: Any) -> list[str]:
    """Each checkpoint's definition without the domain's (so no secrets: the journal
    may hold them), parents first: what another host is given to redefine them."""
    libvirt = libvirt_module()
    with failing_as(f", reading {domain.name()}'s checkpoints"):
        found = domain.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)
        return [c.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN) for c in found]


def redefine_checkpoint(domain: Any, xml: str) -> None:
    """Record a checkpoint whose bitmaps are in the disks already (moved from another
    host with them), as `virsh checkpoint-create --redefine` does."""
    libvirt = libvirt_module()
    with failing_as(f", redefining a checkpoint of {domain.name()}"):
        domain.checkpointCreateXML(xml, libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE)


def checkpoint_name_of(xml: str) -> str:
    return ET.fromstring(xml).findtext("name") or ""


def broken(domain: Any, name: str) -> str | None:
    """Why checkpoint `name` of the running domain cannot be backed up from (its
    bitmap is missing from the disks' chain: a snapshot was reverted since, a disk was
    replaced), or None when it can. libvirt finds it out when it sizes the bitmaps."""
    libvirt = libvirt_module()
    try:
        checkpoint = domain.checkpointLookupByName(name, 0)
        checkpoint.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_SIZE)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_CHECKPOINT_INCONSISTENT:
            return str(error.get_error_message())
        raise ComponentError(
            f"libvirt, reading checkpoint {name}: {error.get_error_message()}"
        ) from error
    return None
