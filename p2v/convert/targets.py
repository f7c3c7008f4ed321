"""The conversion's target disks: image files of a directory on this host, or volumes
of a storage pool on the destination host (named `volume:POOL/NAME@URI`)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from p2v.convert.plan import check_space
from p2v.destination import Destination
from p2v.errors import InputError
from p2v.host.virt import connection, storage
from p2v.transfer.endpoints.volume import VolumeSpec, is_volume


@contextlib.contextmanager
def _volume(target: str, timeout: float) -> Iterator[Any]:
    """The volume a `volume:` target names (None when there is none), while its host's
    connection is open."""
    spec = VolumeSpec.parse(target)
    with connection(spec.uri, timeout) as conn:
        yield storage.volume(storage.pool(conn, spec.pool), spec.name)


def exists(target: str, timeout: float) -> bool:
    if not is_volume(target):
        return Path(target).exists()
    with _volume(target, timeout) as vol:
        return vol is not None


def location(target: str, timeout: float) -> str:
    """What the domain's XML names the disk by: the path, or the volume's path on its
    own host."""
    if not is_volume(target):
        return target
    with _volume(target, timeout) as vol:
        if vol is None:
            raise InputError(f"{target} has gone")
        return storage.path(vol)


def image_format(target: str) -> str:
    return "raw" if is_volume(target) else "qcow2"


def check_room(pool: Destination | None, local_dir: Path, used: int, timeout: float) -> None:
    """Refuse a destination that cannot hold the guest's `used` bytes: the pool of
    `pool` when the disks go into one, else `local_dir`."""
    if pool is None or pool.pool is None:
        existing = next(p for p in [local_dir, *local_dir.parents] if p.exists())
        check_space(local_dir, shutil.disk_usage(existing).free, used)
        return
    with connection(pool.uri, timeout) as conn:
        free = storage.free_bytes(storage.pool(conn, pool.pool))
    check_space(f"the storage pool {pool.pool} of {pool.uri}", free, used)


def pool_answers(destination: Destination, timeout: float) -> None:
    """The destination's pool exists and is active (InputError naming the pools)."""
    if destination.pool is not None:
        with connection(destination.uri, timeout) as conn:
            storage.pool(conn, destination.pool)
