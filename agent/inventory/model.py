"""The inventory record: everything the conversion host needs to build a matching VM.

Plain dataclasses with `to_json`/`from_json`. The schema is versioned: a reader
refuses a record whose major version it does not know, so an old conversion host
never half-understands a newer agent. Unknown values are None; `notes` says which
sources could not be read and why. The schema is documented in docs/inventory.md.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """A record this code cannot read: another schema version, or not an inventory."""


@dataclass
class BootEntry:
    number: int  # the NNNN of BootNNNN
    description: str
    path: str | None  # the file a firmware entry starts, when it names one
    active: bool


@dataclass
class Machine:
    vendor: str | None = None
    product: str | None = None
    serial: str | None = None
    uuid: str | None = None
    firmware: str | None = None  # "uefi" or "bios"
    secure_boot: bool | None = None
    boot_order: list[int] = field(default_factory=list)
    boot_entries: list[BootEntry] = field(default_factory=list)


@dataclass
class Cpu:
    sockets: int | None = None
    cores: int | None = None  # physical cores, all sockets together
    threads: int | None = None  # logical CPUs the kernel sees
    vendor: str | None = None
    model: str | None = None
    flags: list[str] = field(default_factory=list)


@dataclass
class Memory:
    installed_bytes: int | None = None  # sum of the memory devices SMBIOS lists
    usable_bytes: int | None = None  # what the kernel manages (MemTotal)


@dataclass
class Filesystem:
    type: str
    uuid: str | None = None
    label: str | None = None
    size_bytes: int | None = None
    used_bytes: int | None = None  # None when the filesystem cannot tell without mounting
    free_bytes: int | None = None
    mountpoint: str | None = None


@dataclass
class Partition:
    number: int
    name: str  # kernel name, e.g. sda1
    start_bytes: int
    size_bytes: int
    kind: str  # primary, logical, extended (MBR) or gpt
    gpt_name: str | None = None
    type_id: str | None = None  # GPT type GUID or MBR type byte as 0xNN
    flags: list[str] = field(default_factory=list)
    filesystem: Filesystem | None = None


@dataclass
class Disk:
    name: str  # kernel name: sda, nvme0n1, vda
    path: str  # /dev/NAME
    size_bytes: int
    logical_sector: int = 512
    physical_sector: int = 512
    by_id: str | None = None  # /dev/disk/by-id/..., stable across reboots
    model: str | None = None
    serial: str | None = None
    rotational: bool | None = None
    removable: bool | None = None
    transport: str | None = None  # sata, nvme, scsi, virtio, usb, ...
    partition_table: str | None = None  # gpt, msdos or None
    partitions: list[Partition] = field(default_factory=list)
    filesystem: Filesystem | None = None  # a filesystem on the whole disk
    live_medium: bool = False  # holds the running agent: never exported


@dataclass
class LogicalVolume:
    name: str
    size_bytes: int
    uuid: str | None = None
    filesystem: Filesystem | None = None


@dataclass
class VolumeGroup:
    name: str
    uuid: str | None
    size_bytes: int
    free_bytes: int
    extent_bytes: int | None
    physical_volumes: list[str]  # device paths
    logical_volumes: list[LogicalVolume] = field(default_factory=list)


@dataclass
class RaidArray:
    name: str  # md0, or the array's name from its superblock
    level: str  # raid0, raid1, ...
    uuid: str | None
    members: list[str]  # kernel names of member devices
    active: bool  # assembled by the running kernel


@dataclass
class Nic:
    name: str
    mac: str
    driver: str | None = None
    link: str | None = None  # up, down, unknown
    speed_mbps: int | None = None
    addresses: list[str] = field(default_factory=list)  # CIDR


@dataclass
class PciDevice:
    slot: str  # 0000:00:1f.2
    vendor_id: str  # hex, no 0x
    device_id: str
    class_id: str  # six hex digits: class, subclass, programming interface
    driver: str | None = None
    description: str | None = None


@dataclass
class Inventory:
    schema_version: int = SCHEMA_VERSION
    agent_version: str = ""
    hostname: str | None = None
    machine: Machine = field(default_factory=Machine)
    cpu: Cpu = field(default_factory=Cpu)
    memory: Memory = field(default_factory=Memory)
    disks: list[Disk] = field(default_factory=list)
    volume_groups: list[VolumeGroup] = field(default_factory=list)
    raid_arrays: list[RaidArray] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    pci_devices: list[PciDevice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be known, and why

    def disk(self, name: str) -> Disk | None:
        return next((d for d in self.disks if d.name == name), None)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(dataclasses.asdict(self), indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Inventory:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise SchemaError(f"not an inventory (not JSON: {e})") from None
        if not isinstance(data, dict) or "schema_version" not in data:
            raise SchemaError("not an inventory (no schema_version)")
        version = data["schema_version"]
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"inventory schema version {version} is not supported "
                f"(this side reads version {SCHEMA_VERSION}); use an agent and a p2v "
                "of the same release"
            )
        try:
            return load_record(cls, data)
        except (TypeError, KeyError, ValueError) as e:
            raise SchemaError(f"malformed inventory: {e}") from None


T = TypeVar("T")


def load_record(cls: type[T], data: Any) -> T:
    """Build a dataclass from decoded JSON, following its type hints (also used for
    the records built from an inventory)."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: _value(hints[k], v) for k, v in data.items() if k in names}
    return cls(**values)


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(inner[0], value)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_value(item, v) for v in value]
    if dataclasses.is_dataclass(hint):
        return load_record(hint, value)  # type: ignore[arg-type]
    return value
