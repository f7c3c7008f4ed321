"""What a conversion will do, decided from the inventory and the inspected guest
before any byte is copied. Pure: the facts come in, the plan goes out."""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.inventory.model import Inventory
from imagebuilder.fixups.linux import GuestOS
from imagebuilder.profile import HardwareProfile, Overrides, VirtualNic, profile_from_inventory
from p2v.convert.disks import SourceDisk
from p2v.errors import PlanError
from p2v.units import format_size

SPACE_MARGIN = 1.1  # the copy needs the data, plus metadata and what trimming misses


def random_mac() -> str:
    """A MAC in QEMU's range, as libvirt makes them."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


@dataclass
class Plan:
    guest: dict[str, str]
    profile: HardwareProfile
    disks: list[SourceDisk]
    nics: list[tuple[str, str]]  # (MAC, the name the guest's configuration uses)
    used_bytes: int
    # The new domain's UUID, chosen here so that the job can lock the domain before
    # it exists; "" in plans recorded before it was (their domain gets libvirt's).
    uuid: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "guest": self.guest,
            "profile": dataclasses.asdict(self.profile),
            "disks": [d.to_json() for d in self.disks],
            "nics": [list(n) for n in self.nics],
            "used_bytes": self.used_bytes,
            "uuid": self.uuid,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            guest=data["guest"],
            profile=HardwareProfile.from_json(json.dumps(data["profile"])),
            disks=[SourceDisk.from_json(d) for d in data["disks"]],
            nics=[(mac, name) for mac, name in data["nics"]],
            used_bytes=data["used_bytes"],
            uuid=data.get("uuid", ""),
        )

    def describe(self) -> str:
        p, g = self.profile, self.guest
        lines = [
            f"guest     {g['distro']} {g['version']} ({g['type']}), hostname {g['hostname']}, "
            f"root {g['root']}",
            f"vm        {p.name}: {p.vcpus} vCPUs ({p.sockets} sockets x {p.cores} cores x "
            f"{p.threads} threads), {p.memory_mib} MiB, {p.firmware}"
            + (" with Secure Boot" if p.secure_boot else "")
            + f", {p.machine}",
        ]
        for disk, vdisk in zip(self.disks, p.disks, strict=True):
            boot = ", boot" if vdisk.boot else ""
            lines.append(
                f"disk      {disk.origin} ({format_size(disk.size)}) -> {vdisk.target} virtio{boot}"
            )
        lines.append(f"data      {format_size(self.used_bytes)} used in the guest's filesystems")
        for mac, name in self.nics:
            lines.append(f"nic       {name} -> virtio-net {mac}")
        return "\n".join(lines)


def make_plan(
    inventory: Inventory,
    disks: list[SourceDisk],
    guest: GuestOS,
    *,
    name: str,
    overrides: Overrides,
    configured_nics: list[str],
    used_bytes: int,
    boot_disk: int = 0,
    new_mac: Callable[[], str] = random_mac,
) -> Plan:
    if guest.type != "linux":
        raise PlanError(
            f"the disks hold {guest.type} ({guest.distro}); this version converts Linux guests"
        )
    firmware = inventory.machine.firmware or (
        "uefi" if "/boot/efi" in guest.mountpoints else "bios"
    )
    machine = dataclasses.replace(inventory.machine, firmware=firmware)
    inventory = dataclasses.replace(inventory, machine=machine)
    profile = profile_from_inventory(
        inventory, name=name, disks=[d.name for d in disks], overrides=overrides
    )
    for index, vdisk in enumerate(profile.disks):
        vdisk.boot = index == boot_disk
    if inventory.nics:
        nics = [(nic.mac.lower(), nic.name) for nic in inventory.nics if nic.mac]
    else:
        # From disks alone the old MACs are unknown: new ones, each pinned to a name the
        # guest's network configuration uses, so that configuration still applies.
        nics = [(new_mac(), nic_name) for nic_name in configured_nics] or [(new_mac(), "")]
        profile.nics = [VirtualNic(mac, name or None) for mac, name in nics]
    guest_facts = {
        "type": guest.type,
        "distro": guest.distro,
        "version": guest.version,
        "hostname": guest.hostname,
        "root": guest.root,
    }
    return Plan(guest_facts, profile, disks, nics, used_bytes, str(uuid.uuid4()))


def guest_name(hostname: str) -> str:
    """A domain name from the guest's hostname (its first label), when none is given."""
    label = re.sub(r"[^A-Za-z0-9_.-]", "-", hostname.split(".")[0]).strip("-.")
    return label if label and label not in ("localhost", "unknown") else "p2v-guest"


def check_space(target: Path | str, free: int, used: int) -> None:
    """Refuse a target that cannot hold the guest's data."""
    if free < used * SPACE_MARGIN:
        raise PlanError(
            f"{target} has {format_size(free)} free; the guest holds {format_size(used)} "
            "of data: make room or choose another --output-dir, --storage or --pool"
        )
