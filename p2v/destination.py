"""Where a job puts a guest: the libvirt host, the storage for its disks, the network
its NICs join, and whether what is there may be replaced. One record that every verb
making or moving a guest takes (convert now; migrate, restore and clone later).

Disks go into a storage pool of the host as volumes, filled through the libvirt
connection; or, on this host only, into files of a directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from p2v.errors import InputError
from p2v.host.virt.connection import DEFAULT_URI
from p2v.transfer.endpoints.volume import VolumeSpec

DEFAULT_POOL = "default"


def is_remote(uri: str) -> bool:
    """The URI names another host (qemu+tcp://HOST/system, qemu+ssh://...)."""
    return bool(urlparse(uri).hostname)


def check_choice(uri: str, pool: str | None, storage: Path | None) -> None:
    """Refuse a pool and a directory at once, or a directory of this host for another."""
    if pool is not None and storage is not None:
        raise InputError("--pool and --storage: choose one place for the disks")
    if is_remote(uri) and storage is not None:
        raise InputError(
            f"--storage is a directory of this host; the disks of a guest on {uri} go "
            "into a storage pool there (--pool NAME, default 'default')"
        )


@dataclass(frozen=True)
class Destination:
    uri: str = DEFAULT_URI
    pool: str | None = None  # the disks become volumes of this pool
    storage: Path | None = None  # else files in this directory (this host only)
    network: str = "user"  # user, network:NAME or bridge:NAME
    replace: bool = False  # an existing target (disks, a stopped domain) is replaced

    @classmethod
    def choose(
        cls,
        uri: str,
        pool: str | None,
        storage: Path | None,
        network: str,
        replace: bool,
        default_storage: Callable[[], Path],
    ) -> Destination:
        """From the command line: another host's disks go into its pool `default`
        unless a pool is named; this host's into `storage` or `default_storage()`."""
        check_choice(uri, pool, storage)
        if pool is None and is_remote(uri):
            pool = DEFAULT_POOL
        if pool is not None:
            return cls(uri, pool, None, network, replace)
        return cls(uri, None, (storage or default_storage()).resolve(), network, replace)

    def disk_target(self, guest: str, disk: str) -> str:
        """Where the guest's disk `disk` goes: a volume spec or an image path."""
        if self.pool:
            return str(VolumeSpec(self.pool, f"{guest}-{disk}.img", self.uri))
        assert self.storage is not None
        return str(self.storage / f"{guest}-{disk}.qcow2")

    def describe(self) -> str:
        return f"pool {self.pool} of {self.uri}" if self.pool else f"{self.storage}"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["storage"] = str(self.storage) if self.storage else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Destination:
        fields = dict(data)
        fields["storage"] = Path(fields["storage"]) if fields.get("storage") else None
        return cls(**fields)
