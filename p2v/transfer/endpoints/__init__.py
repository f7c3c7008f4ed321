"""Open a source or a target from what the user typed.

- a path: a raw file or block device is read and written directly; any other
  image format goes through a private qemu-nbd (a target's format follows its
  file name, `.qcow2` or raw, unless given);
- an NBD URI that libnbd accepts (nbd://, nbds:// with TLS, nbd+unix://, ...);
- `null:` (a target that discards) or `null:SIZE` (a source of zeros);
- `agent://HOST[:PORT]/DISK`, a disk served by `p2v-agent serve` (source only; the
  agent's secret comes from `secret_file`);
- `volume:POOL/NAME@URI`, a storage volume of the libvirt host at URI, read and
  written through the libvirt connection (a target is made as a raw volume).

Sources are always opened read-only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

from p2v.errors import InputError
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT, TARGET_FORMATS
from p2v.transfer.endpoints import file
from p2v.transfer.endpoints.base import Endpoint
from p2v.transfer.endpoints.file import FileEndpoint
from p2v.transfer.endpoints.handshake import connect_within
from p2v.transfer.endpoints.nbd import NbdEndpoint
from p2v.transfer.endpoints.null import NullEndpoint
from p2v.transfer.endpoints.qemunbd import QemuNbdServer, create_image, image_format
from p2v.transfer.endpoints.volume import (
    VolumeEndpoint,
    is_volume,
    volume_identity,
    volume_key,
)
from p2v.units import parse_size

__all__ = ["Endpoint", "open_source", "open_target", "target_format", "target_identity"]

_NBD_SCHEMES = ("nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://", "nbds+vsock://")


def is_nbd_uri(spec: str) -> bool:
    return spec.startswith(_NBD_SCHEMES)


def open_source(
    spec: str,
    *,
    input_format: str | None = None,
    bitmap: str | None = None,
    secret_file: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Endpoint:
    """`connect_timeout`: seconds for each stage of a connection to a server."""
    if spec.startswith("agent://"):
        return _agent_disk(spec, secret_file, connect_timeout)
    if spec.startswith("null:"):
        size = spec[len("null:") :]
        if not size:
            raise InputError("a null: source needs a size, for example null:4G")
        return NullEndpoint(parse_size(size))
    if is_nbd_uri(spec):
        connect = _uri_connector(spec, connect_timeout)
        return NbdEndpoint(spec, connect, writable=False, bitmap=bitmap)
    if is_volume(spec):
        return VolumeEndpoint.open(spec, connect_timeout)
    mode = _stat(spec, "source")
    if stat.S_ISDIR(mode):
        raise InputError(f"source {spec} is a directory, not a disk image or device")
    fmt = "raw" if stat.S_ISBLK(mode) else (input_format or image_format(spec))
    if fmt == "raw" and not bitmap:
        try:
            return FileEndpoint.open_source(spec)
        except PermissionError as e:
            raise InputError(f"source {spec} is not readable: {e.strerror}") from e
    return _served(spec, fmt, read_only=True, bitmap=bitmap)


def target_key(spec: str, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> str | None:
    """What names the target `spec` for a lock, however it is spelt: a file by its
    real path, a volume by its host's UUID, its pool's UUID and its name, an NBD
    export by its URI; None for what nothing else can write (null:)."""
    if spec.startswith("null:"):
        return None
    if is_nbd_uri(spec):
        return f"nbd:{spec}"
    if is_volume(spec):
        return volume_key(spec, connect_timeout)
    return f"file:{os.path.realpath(spec)}"


def target_identity(
    spec: str, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> dict[str, Any] | None:
    """What tells whether the target `spec` changed since now (its size, modification
    time and the like), to compare with what an earlier copy into it recorded; None
    when there is nothing there, or nothing that tells (null:; an NBD export says
    nothing of the disk behind it). Take it after the target is closed: a copy's
    last writes and the flush of an image's metadata change it."""
    if spec.startswith("null:") or is_nbd_uri(spec):
        return None
    if is_volume(spec):
        return volume_identity(spec, connect_timeout)
    return file.identity(spec)


def target_format(spec: str, output_format: str | None) -> str:
    if output_format:
        if output_format not in TARGET_FORMATS:
            raise InputError(f"output format must be one of {', '.join(TARGET_FORMATS)}")
        return output_format
    return "qcow2" if spec.endswith(".qcow2") else "raw"


def open_target(
    spec: str,
    size: int,
    *,
    output_format: str | None = None,
    overwrite: bool = False,
    existing: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Endpoint:
    """Open or create a target able to hold `size` bytes.

    `existing` means the target must already be there and is updated in place
    (resume, incremental copy); otherwise an existing target is refused unless
    `overwrite` is given, and a file is then made afresh.
    """
    if spec.startswith("null:"):
        return NullEndpoint(size)
    if spec.startswith("agent://"):
        raise InputError("an agent's disks are read-only: agent:// can only be a source")
    if is_nbd_uri(spec):
        connect = _uri_connector(spec, connect_timeout)
        return _checked(NbdEndpoint(spec, connect, writable=True), size)
    if is_volume(spec):
        if output_format not in (None, "raw"):
            raise InputError("a volume target is raw: its host's pool keeps it as it is")
        if existing:
            return _checked(VolumeEndpoint.open(spec, connect_timeout, writable=True), size)
        return VolumeEndpoint.open(spec, connect_timeout, size=size, overwrite=overwrite)
    fmt = target_format(spec, output_format)
    if existing:
        mode = _stat(spec, "target")
        if fmt == "raw" or stat.S_ISBLK(mode):
            return _checked(FileEndpoint.open_target(spec), size)
        return _checked(_served(spec, fmt, read_only=False), size)
    if os.path.isdir(spec):
        raise InputError(f"target {spec} is a directory, not a disk image or device")
    if os.path.lexists(spec):
        if not overwrite:
            raise InputError(f"target {spec} exists; add --overwrite to replace it")
        if stat.S_ISBLK(os.stat(spec).st_mode):
            return _checked(FileEndpoint.open_target(spec), size)
        os.unlink(spec)
    parent = os.path.dirname(os.path.abspath(spec))
    if not os.path.isdir(parent):
        raise InputError(f"target directory {parent} does not exist")
    if fmt == "raw":
        try:
            return FileEndpoint.create(spec, size)
        except OSError as e:
            raise InputError(f"cannot make the target {spec}: {e.strerror}") from None
    create_image(spec, fmt, size)
    try:
        return _served(spec, fmt, read_only=False)
    except BaseException:
        os.unlink(spec)
        raise


def _checked(target: Endpoint, size: int) -> Endpoint:
    if target.size < size:
        target.close()
        raise InputError(
            f"target {target.name} holds {target.size} bytes, less than the source's {size}"
        )
    return target


def _stat(path: str, role: str) -> int:
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{role} {path}: no such file or block device") from None
    except PermissionError:
        raise InputError(f"{role} {path}: permission denied") from None


def _served(path: str, fmt: str, *, read_only: bool, bitmap: str | None = None) -> Endpoint:
    server = QemuNbdServer(path, fmt, read_only=read_only, bitmap=bitmap)
    try:
        return NbdEndpoint(
            path,
            _unix_connector(server.socket),
            writable=not read_only,
            bitmap=bitmap,
            on_close=server.stop,
        )
    except BaseException:
        server.stop()
        raise


def _agent_disk(url: str, secret_file: str | None, connect_timeout: float) -> Endpoint:
    from p2v.host.agentclient import AgentSession, parse_disk_url

    address, disk = parse_disk_url(url)
    session = AgentSession(address, secret_file, connect_timeout)
    try:
        return session.open_disk(disk, own=True)
    except BaseException:
        session.close()
        raise


def _uri_connector(uri: str, timeout: float) -> Callable[[Any], None]:
    def connect(h: Any) -> None:
        h.set_uri_allow_local_file(True)  # lets ?tls-psk-file= name a key file
        connect_within(h, lambda h: h.aio_connect_uri(uri), timeout)

    return connect


def _unix_connector(path: str) -> Callable[[Any], None]:
    # Our own qemu-nbd on this host: it answers at once or has died.
    return lambda h: connect_within(h, lambda h: h.aio_connect_unix(path), DEFAULT_CONNECT_TIMEOUT)
