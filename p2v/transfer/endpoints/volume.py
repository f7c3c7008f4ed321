"""A libvirt storage volume as an endpoint: `volume:POOL/NAME@URI`.

Its bytes move through the libvirt connection (an upload or download stream per
operation, at the operation's offset), so the volume may live on another host: this
host's file system never holds it. Operations complete at once. Each upload has
reached the volume's host when it returns; that host writes it to its disk at its
own pace (libvirt offers no flush of a volume), so a crash of that host itself can
lose what it had not yet written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2v.errors import InputError
from p2v.host.virt import storage
from p2v.host.virt.connection import connect, connection, identity
from p2v.transfer.endpoints.base import Done, Endpoint, run_now

PREFIX = "volume:"
_ZEROS = bytes(4 << 20)


@dataclass(frozen=True)
class VolumeSpec:
    pool: str
    name: str
    uri: str

    @classmethod
    def parse(cls, spec: str) -> VolumeSpec:
        where, _, uri = spec[len(PREFIX) :].partition("@")
        pool, _, name = where.partition("/")
        if not (pool and name and uri) or "/" in name:
            raise InputError(f"{spec}: a volume is named volume:POOL/NAME@URI")
        return cls(pool, name, uri)

    def __str__(self) -> str:
        return f"{PREFIX}{self.pool}/{self.name}@{self.uri}"


def is_volume(spec: str) -> bool:
    return spec.startswith(PREFIX)


def volume_key(spec: str, timeout: float) -> str:
    """The volume `spec` names, by its host's UUID, its pool's UUID and its name."""
    where = VolumeSpec.parse(spec)
    with connection(where.uri, timeout) as conn:
        host = identity(conn).uuid
        return f"volume:{host}/{storage.pool_uuid(storage.pool(conn, where.pool))}/{where.name}"


def volume_identity(spec: str, timeout: float) -> dict[str, Any] | None:
    """What tells whether the volume `spec` changed since (VolumeEndpoint.identity);
    None when there is no such volume."""
    where = VolumeSpec.parse(spec)
    with connection(where.uri, timeout) as conn:
        vol = storage.volume(storage.pool(conn, where.pool), where.name)
        return None if vol is None else _identity(vol)


def _identity(vol: Any) -> dict[str, Any] | None:
    found = storage.identity(vol)
    # Without a file's modification time (a pool of logical volumes, say) the sizes
    # alone would not tell a volume written since from one left alone.
    return found if found.get("mtime") is not None else None


class VolumeEndpoint(Endpoint):
    # libvirt lets one stream at a time use a volume.
    multi_conn = False

    def __init__(self, spec: VolumeSpec, conn: Any, vol: Any, *, writable: bool, fresh: bool):
        self.spec, self.conn, self.vol = spec, conn, vol
        self.name = str(spec)
        self.size = storage.length(vol)  # the volume's bytes as its host keeps them
        self._writable, self._fresh = writable, fresh
        self._owner = True  # the first handle closes the connection; clones share it

    @classmethod
    def open(
        cls,
        spec: str,
        timeout: float,
        *,
        size: int | None = None,
        overwrite: bool = False,
        writable: bool = False,
    ) -> VolumeEndpoint:
        """The volume `spec`. With `size` it is a target: made as a new, empty volume of
        that size (an existing one only with `overwrite`); size None opens an existing
        volume, read-only unless `writable` (a resumed copy updates it in place)."""
        where = VolumeSpec.parse(spec)
        conn = connect(where.uri, timeout)
        try:
            pool = storage.pool(conn, where.pool)
            vol = storage.volume(pool, where.name)
            if size is None:
                if vol is None:
                    raise InputError(f"{where}: no such volume")
                return cls(where, conn, vol, writable=writable, fresh=False)
            if vol is not None:
                if not overwrite:
                    raise InputError(f"target {where} exists; add --overwrite to replace it")
                storage.delete_volume(vol)
            vol = storage.create_volume(pool, where.name, size)
            return cls(where, conn, vol, writable=True, fresh=True)
        except BaseException:
            conn.close()
            raise

    def known_zero(self) -> bool:
        return self._fresh  # a volume just made is sparse: it reads as zeros

    def identity(self) -> dict[str, Any] | None:
        """What tells whether the volume changed since now: its sizes and its file's
        modification time, as its host sees them; None when its pool keeps no file."""
        return _identity(self.vol)

    def clone(self) -> VolumeEndpoint:
        # libvirt connections are thread-safe; each operation has its own stream.
        twin = VolumeEndpoint.__new__(VolumeEndpoint)
        twin.__dict__.update(self.__dict__)
        twin._owner = False
        return twin

    def start_read(self, view: memoryview, offset: int, done: Done) -> None:
        def read() -> None:
            view[:] = storage.read(self.conn, self.vol, offset, len(view))

        run_now(read, done)

    def start_write(self, view: memoryview, offset: int, done: Done) -> None:
        if not self._writable:
            super().start_write(view, offset, done)
        run_now(lambda: storage.write(self.conn, self.vol, offset, view), done)

    def start_zero(self, offset: int, length: int, done: Done) -> None:
        if not self._writable:
            super().start_zero(offset, length, done)

        def zero() -> None:
            # Stream holes only skip ahead and leave what the volume held: zeros are sent.
            end = offset + length
            for at in range(offset, end, len(_ZEROS)):
                storage.write(self.conn, self.vol, at, _ZEROS[: min(len(_ZEROS), end - at)])

        run_now(zero, done)

    def close(self) -> None:
        if self._owner and self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()
