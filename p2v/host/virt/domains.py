"""Domains: lookup by name or UUID, define-or-replace, lifecycle and its waits, what
a host keeps of them. A domain's job (a migration) is read in `migration`."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from p2v.errors import ComponentError, InputError
from p2v.host.virt.connection import failing_as, libvirt_module


def lookup(conn: Any, name: str) -> Any:
    """The domain called `name`, or None."""
    return _unless_missing(lambda: conn.lookupByName(name), "")


def find(conn: Any, name_or_uuid: str) -> Any:
    """The domain named `name_or_uuid`, or with that UUID; InputError when there is none."""
    domain = lookup(conn, name_or_uuid)
    if domain is None and len(name_or_uuid) == 36:
        domain = lookup_uuid(conn, name_or_uuid)
    if domain is None:
        raise InputError(f"{conn.getURI()}: no virtual machine named {name_or_uuid!r}")
    return domain


def names_and_macs(conn: Any) -> tuple[set[str], set[str]]:
    """The names of the host's domains, defined or running, and the MAC addresses of
    their NICs (lower case)."""
    import xml.etree.ElementTree as ET

    names, macs = set(), set()
    with failing_as(", listing the host's virtual machines"):
        for domain in conn.listAllDomains(0):
            names.add(domain.name())
            root = ET.fromstring(domain.XMLDesc(0))
            macs |= {m.get("address", "").lower() for m in root.findall("devices/interface/mac")}
    return names, macs


def free_memory(conn: Any) -> int:
    """Bytes of memory the host has free for new guests."""
    with failing_as(", reading the host's free memory"):
        return int(conn.getFreeMemory())


def lookup_uuid(conn: Any, uuid: str) -> Any:
    """The domain with this UUID, or None when the host has none; any other trouble
    is an error, never "gone" (code that deletes relies on it)."""
    return _unless_missing(lambda: conn.lookupByUUIDString(uuid), f", looking domain {uuid} up")


def _unless_missing(fetch: Any, what: str) -> Any:
    """What `fetch` gets, None for libvirt's 'no such domain', an error for the rest."""
    libvirt = libvirt_module()
    with failing_as(what):
        try:
            return fetch()
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    return None


def definition(domain: Any) -> str:
    """The domain's persistent XML (what it starts from next time), secrets included:
    what another host must be given to define it."""
    libvirt = libvirt_module()
    with failing_as(f", reading {domain.name()}"):
        return str(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))


def nvram(domain: Any) -> str | None:
    """The path of a UEFI domain's variable store on its host; None for BIOS."""
    from p2v.host.virt.domainxml import DomainXml

    described = DomainXml.parse(definition(domain))
    return described.nvram if described.firmware == "uefi" else None


def live_xml(domain: Any) -> str:
    with failing_as(f", reading {domain.name()}"):
        return str(domain.XMLDesc(0))


def has_saved_memory(domain: Any) -> bool:
    """Whether the host keeps a saved memory image of the domain (virsh managedsave)."""
    with failing_as(f", reading {domain.name()}"):
        return bool(domain.hasManagedSaveImage(0))


def autostart(domain: Any) -> bool:
    with failing_as(f", reading {domain.name()}"):
        return bool(domain.autostart())


def set_autostart(domain: Any, on: bool) -> None:
    with failing_as(f", setting {domain.name()} to start with its host"):
        domain.setAutostart(1 if on else 0)


def define(conn: Any, xml: str, replace: Any = None) -> Any:
    """Define a domain, first undefining `replace` (a stopped domain) with its NVRAM,
    so that the new one starts from fresh firmware variables."""
    libvirt = libvirt_module()
    with failing_as(""):
        if replace is not None:
            replace.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        return conn.defineXML(xml)


def define_or_replace(conn: Any, name: str, xml: str, replace: bool) -> Any:
    """Define `xml` as `name`; an existing domain of that name is replaced (with its
    NVRAM) when `replace`, else refused. A running one is never replaced."""
    old = lookup(conn, name)
    if old is not None:
        if not replace:
            raise InputError(f"{conn.getURI()}: a domain named {name!r} exists")
        if old.isActive():
            raise InputError(f"{conn.getURI()}: the domain {name!r} is running; stop it first")
    return define(conn, xml, replace=old)


def release(domain: Any, keep_nvram: bool = False) -> None:
    """Undefine a stopped domain whose disks, NVRAM and state live on elsewhere now
    (moved to another host): its disks (and its snapshots' files) stay, and its NVRAM
    file too with `keep_nvram`.
    ComponentError when libvirt refuses, so that nothing is believed released that
    is not."""
    libvirt = libvirt_module()
    flag = "VIR_DOMAIN_UNDEFINE_KEEP_NVRAM" if keep_nvram else "VIR_DOMAIN_UNDEFINE_NVRAM"
    # Its snapshots' and checkpoints' records go (their files and bitmaps stay): they
    # were redefined where it went.
    flags = (getattr(libvirt, flag) | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
             | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)  # fmt: skip
    with failing_as(f", undefining {domain.name()}"):
        domain.undefineFlags(flags)


def undefine(domain: Any) -> None:
    """Remove a stopped domain's definition, with its NVRAM, snapshots' metadata and
    checkpoints; one already gone is fine."""
    libvirt = libvirt_module()
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    )
    with contextlib.suppress(libvirt.libvirtError):
        domain.undefineFlags(flags)


def start(domain: Any, paused: bool = False) -> None:
    """Start a defined domain; `paused`: its CPUs wait for `resume` (a console opened
    meanwhile misses nothing)."""
    libvirt = libvirt_module()
    with failing_as(f", starting {domain.name()}"):
        domain.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)


def resume(domain: Any) -> None:
    with failing_as(f", resuming {domain.name()}"):
        domain.resume()


def start_transient(conn: Any, xml: str) -> Any:
    """Start a domain that goes away when it stops or this connection closes."""
    libvirt = libvirt_module()
    with failing_as(", starting a guest"):
        return conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)


def destroy(domain: Any) -> None:
    """Stop a domain at once; one already gone is fine."""
    libvirt = libvirt_module()
    with contextlib.suppress(libvirt.libvirtError):
        domain.destroy()


STATES = {0: "no state", 1: "running", 2: "blocked", 3: "paused", 4: "shutting down",
          5: "shut off", 6: "crashed", 7: "suspended"}  # fmt: skip


def state(domain: Any) -> str:
    """running, paused, shut off, ... (libvirt's virDomainState, by name)."""
    with failing_as(f", reading the state of {domain.name()}"):
        return STATES.get(domain.state()[0], "no state")


def wait_for_state(domain: Any, wanted: str, timeout: float, poll: float = 0.2) -> None:
    """Wait until the domain is in state `wanted`; ComponentError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while (now := state(domain)) != wanted:
        if time.monotonic() > deadline:
            raise ComponentError(f"{domain.name()} is {now}, not {wanted}, after {timeout:g} s")
        time.sleep(poll)
