"""Inventory -> the virtual machine that matches it: a HardwareProfile.

Pure planning: no I/O, so every rule is unit-tested. The profile is a record of its
own (versioned JSON) because the journal keeps it and `p2v convert --resume` reads it
back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from agent.inventory.model import Inventory, load_record

PROFILE_VERSION = 1
MiB = 1 << 20
MIN_MEMORY_MIB = 512


class ProfileError(ValueError):
    """The inventory or an override cannot make a virtual machine; says why."""


@dataclass
class VirtualDisk:
    source: str  # the source disk: kernel name (sda) or image path
    target: str  # vda, vdb, ... in the source's order
    size_bytes: int
    boot: bool = False  # holds the boot loader: booted first
    file: str = ""  # the target image, once the pipeline knows it


@dataclass
class VirtualNic:
    mac: str  # kept: the guest's network configuration follows it
    source_name: str | None = None  # the physical NIC it replaces, e.g. eno1
    model: str = "virtio"


@dataclass
class HardwareProfile:
    name: str
    firmware: str  # "bios" or "uefi"
    secure_boot: bool = False
    sockets: int = 1
    cores: int = 1  # per socket
    threads: int = 1  # per core
    memory_mib: int = 1024
    cpu_model: str | None = None  # None: the host's CPU under KVM, QEMU's default under TCG
    machine: str = "q35"
    disks: list[VirtualDisk] = field(default_factory=list)
    nics: list[VirtualNic] = field(default_factory=list)
    profile_version: int = PROFILE_VERSION

    @property
    def vcpus(self) -> int:
        return self.sockets * self.cores * self.threads

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> HardwareProfile:
        data = json.loads(text)
        if data.get("profile_version") != PROFILE_VERSION:
            raise ProfileError(f"profile version {data.get('profile_version')} is not supported")
        return load_record(cls, data)


@dataclass(frozen=True)
class Overrides:
    """What the command line may change."""

    name: str | None = None
    vcpus: int | None = None  # as one socket of N cores
    sockets: int | None = None
    memory_mib: int | None = None
    cpu_model: str | None = None
    secure_boot: bool | None = None  # None: as the server had it

    def check(self) -> None:
        """Refuse values no machine could have, before anything is done with them."""
        if self.vcpus is not None and self.vcpus < 1:
            raise ProfileError("--vcpus must be 1 or more")
        if self.sockets is not None and self.sockets < 1:
            raise ProfileError("--sockets must be 1 or more")
        if self.vcpus is not None and self.sockets and self.vcpus % self.sockets:
            raise ProfileError(f"--vcpus {self.vcpus} do not split over {self.sockets} sockets")
        if self.memory_mib is not None and self.memory_mib < MIN_MEMORY_MIB:
            raise ProfileError(f"--memory must be at least {MIN_MEMORY_MIB} MiB")


def profile_from_inventory(
    inventory: Inventory,
    *,
    name: str,
    disks: list[str] | None = None,
    overrides: Overrides = Overrides(),
) -> HardwareProfile:
    """The matching VM: same CPU topology and memory, same firmware, the same disks in
    the same order (virtio), the same NICs with their MACs (virtio-net)."""
    overrides.check()
    sockets, cores, threads = _topology(inventory, overrides)
    chosen = disks if disks is not None else [
        d.name for d in inventory.disks if not d.live_medium and d.size_bytes > 0
    ]  # fmt: skip
    virtual_disks = []
    for index, source in enumerate(chosen):
        disk = inventory.disk(source)
        if disk is None:
            raise ProfileError(f"{source}: the inventory has no such disk")
        virtual_disks.append(VirtualDisk(source, _disk_target(index), disk.size_bytes))
    if not virtual_disks:
        raise ProfileError("no disk to convert")
    virtual_disks[0].boot = True  # until the plan finds the boot loader elsewhere
    firmware = inventory.machine.firmware or "bios"
    secure_boot = overrides.secure_boot
    if secure_boot is None:
        secure_boot = bool(inventory.machine.secure_boot)
    if secure_boot and firmware != "uefi":
        raise ProfileError("Secure Boot needs UEFI firmware; this guest boots with BIOS")
    return HardwareProfile(
        name=overrides.name or name,
        firmware=firmware,
        secure_boot=secure_boot,
        sockets=sockets,
        cores=cores,
        threads=threads,
        memory_mib=_memory_mib(inventory, overrides),
        cpu_model=overrides.cpu_model,
        disks=virtual_disks,
        nics=[VirtualNic(nic.mac.lower(), nic.name) for nic in inventory.nics if nic.mac],
    )


def _topology(inventory: Inventory, overrides: Overrides) -> tuple[int, int, int]:
    if overrides.vcpus is not None:  # checked: it splits over the sockets
        sockets = overrides.sockets or 1
        return sockets, overrides.vcpus // sockets, 1
    cpu = inventory.cpu
    logical = cpu.threads or 1
    sockets = overrides.sockets or cpu.sockets or 1
    cores_total = cpu.cores or logical
    if logical % cores_total or cores_total % sockets:
        return 1, logical, 1  # an odd topology: keep the count, flatten the rest
    return sockets, cores_total // sockets, logical // cores_total


def _memory_mib(inventory: Inventory, overrides: Overrides) -> int:
    if overrides.memory_mib is not None:  # checked: at least MIN_MEMORY_MIB
        return overrides.memory_mib
    size = inventory.memory.installed_bytes or inventory.memory.usable_bytes
    if not size:
        return 2048  # nothing known: a size most Linux servers boot with
    return max(MIN_MEMORY_MIB, math.ceil(size / MiB))


def _disk_target(index: int) -> str:
    """vda, vdb, ..., vdz, vdaa, ... as the kernel names virtio disks."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("a") + rest) + name
    return f"vd{name}"
