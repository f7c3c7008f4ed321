"""Storage pools and volumes, and their contents moved through the libvirt connection
(volume upload and download streams): never through a path of this host's own file
system, so the same calls reach a remote host."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

from p2v.errors import ComponentError, InputError
from p2v.host.virt.connection import failing_as, libvirt_module


def pool(conn: Any, name: str) -> Any:
    """The active storage pool `name`; InputError naming the pools there when absent."""
    libvirt = libvirt_module()
    try:
        found = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise ComponentError(f"libvirt: {error.get_error_message()}") from error
        with failing_as(""):
            names = sorted(p.name() for p in conn.listAllStoragePools())
        raise InputError(
            f"{conn.getURI()}: no storage pool {name!r}; its pools: {', '.join(names) or 'none'}"
        ) from None
    if not found.isActive():
        raise InputError(f"{conn.getURI()}: the storage pool {name!r} is not active")
    return found


def ensure_dir_pool(conn: Any, name: str, path: str) -> Any:
    """The directory pool `name` at `path` on the host, made, started and set to
    autostart when missing."""
    libvirt = libvirt_module()
    with failing_as(f", making the storage pool {name}"):
        try:
            found = conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            found = conn.storagePoolDefineXML(_dir_pool_xml(name, path), 0)
            found.build(0)
            found.setAutostart(True)
        if not found.isActive():
            found.create(0)
        return found


def _dir_pool_xml(name: str, path: str) -> str:
    pool_node = ET.Element("pool", type="dir")
    ET.SubElement(pool_node, "name").text = name
    ET.SubElement(ET.SubElement(pool_node, "target"), "path").text = path
    return ET.tostring(pool_node, encoding="unicode")


def free_bytes(storage_pool: Any) -> int:
    with failing_as(f", reading the storage pool {storage_pool.name()}"):
        storage_pool.refresh(0)
        return int(storage_pool.info()[3])


def volume(storage_pool: Any, name: str) -> Any:
    """The volume `name` of the pool, or None."""
    return _unless_missing(lambda: storage_pool.storageVolLookupByName(name))


def _unless_missing(lookup: Callable[[], Any]) -> Any:
    """What a volume lookup finds, or None when libvirt says there is no such volume."""
    libvirt = libvirt_module()
    try:
        return lookup()
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise ComponentError(f"libvirt: {error.get_error_message()}") from error
    return None


def create_volume(storage_pool: Any, name: str, capacity: int, fmt: str = "raw") -> Any:
    """A new, empty (sparse) volume of `capacity` bytes."""
    xml = ET.Element("volume")
    ET.SubElement(xml, "name").text = name
    ET.SubElement(xml, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(xml, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(xml, "target")
    ET.SubElement(target, "format", type=fmt)
    with failing_as(f", making the volume {name} in {storage_pool.name()}"):
        return storage_pool.createXML(ET.tostring(xml, encoding="unicode"), 0)


def delete_volume(vol: Any) -> None:
    libvirt = libvirt_module()
    with contextlib.suppress(libvirt.libvirtError):
        vol.delete(0)


def capacity(vol: Any) -> int:
    with failing_as(f", reading the volume {vol.name()}"):
        return int(vol.info()[1])


def length(vol: Any) -> int:
    """The bytes of the volume as its host stores them (its file's size): what its
    streams read and write. The capacity for a raw volume; for a qcow2 one, the
    container holding its clusters."""
    libvirt = libvirt_module()
    with failing_as(f", reading the volume {vol.name()}"):
        return int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])


def allocation(vol: Any) -> int:
    """The bytes its host has allocated for the volume (what a copy of it fills)."""
    with failing_as(f", reading the volume {vol.name()}"):
        return int(vol.info()[2])


def identity(vol: Any) -> dict[str, Any]:
    """What tells whether a volume's data changed since it was last looked at: its
    sizes and its file's modification time (libvirt stats a file volume afresh each
    time it is asked; mtime is None where the pool keeps no file)."""
    with failing_as(f", reading the volume {vol.name()}"):
        root = ET.fromstring(vol.XMLDesc(0))
    return {
        "capacity": int(root.findtext("capacity") or 0),
        "allocation": int(root.findtext("allocation") or 0),
        "mtime": root.findtext("target/timestamps/mtime"),
    }


def format_of(vol: Any) -> str:
    """The volume's format as its host sees it (raw, qcow2, ...)."""
    with failing_as(f", reading the volume {vol.name()}"):
        found = ET.fromstring(vol.XMLDesc(0)).find("target/format")
    return found.get("type", "raw") if found is not None else "raw"


def durable_clone(vol: Any, name: str, mode: int | None = None) -> Any:
    """A copy of `vol` named `name` in its pool, made by the volume's host and synced
    to its disk: libvirt writes the clone of a raw volume byte for byte, then
    fdatasyncs and fsyncs it; another format goes through qemu-img convert, which
    flushes the new image when it closes it. No other libvirt call syncs a volume's
    data; streams (uploads) leave it in the host's page cache. `mode`: the new file's
    permissions (0o444: read-only), which libvirt sets only when it makes a file."""
    storage_pool = pool_of(vol)
    xml = ET.Element("volume")
    ET.SubElement(xml, "name").text = name
    ET.SubElement(xml, "capacity", unit="bytes").text = str(capacity(vol))
    ET.SubElement(xml, "allocation", unit="bytes").text = "0"
    target = ET.SubElement(xml, "target")
    ET.SubElement(target, "format", type=format_of(vol))
    if mode is not None:
        ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = f"{mode:04o}"
    with failing_as(f", making a synced copy of {vol.name()} as {name}"):
        return storage_pool.createXMLFrom(ET.tostring(xml, encoding="unicode"), vol, 0)


def create_overlay(storage_pool: Any, name: str, base: Any, size: int) -> Any:
    """A new qcow2 volume of `size` bytes that reads through to `base` (a qcow2 volume
    of the same host) until written: a linked clone's disk."""
    xml = ET.Element("volume")
    ET.SubElement(xml, "name").text = name
    ET.SubElement(xml, "capacity", unit="bytes").text = str(size)
    ET.SubElement(xml, "allocation", unit="bytes").text = "0"
    ET.SubElement(ET.SubElement(xml, "target"), "format", type="qcow2")
    backing_store = ET.SubElement(xml, "backingStore")
    ET.SubElement(backing_store, "path").text = path(base)
    ET.SubElement(backing_store, "format", type="qcow2")
    with failing_as(f", making the volume {name} over {base.name()}"):
        return storage_pool.createXML(ET.tostring(xml, encoding="unicode"), 0)


def backing(vol: Any) -> str | None:
    """The file a copy-on-write volume (a qcow2 overlay) reads through to, if any."""
    with failing_as(f", reading the volume {vol.name()}"):
        found = ET.fromstring(vol.XMLDesc(0)).findtext("backingStore/path")
    return found or None


def refresh_all(conn: Any) -> None:
    """Make the host look at its pools' directories again (another host, or a person,
    may have added or removed files): what lookups by path see afterwards is now."""
    libvirt = libvirt_module()
    with failing_as(", listing the storage pools"):
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    for each in pools:
        with contextlib.suppress(libvirt.libvirtError):  # one that fails keeps its old list
            each.refresh(0)


def refresh(storage_pool: Any) -> None:
    with failing_as(f", refreshing the storage pool {storage_pool.name()}"):
        storage_pool.refresh(0)


def pool_uuid(storage_pool: Any) -> str:
    with failing_as(", reading a storage pool"):
        return str(storage_pool.UUIDString())


def pool_name(storage_pool: Any) -> str:
    return str(storage_pool.name())


@contextlib.contextmanager
def directory_pool(conn: Any, directory: str, make: bool = False) -> Iterator[Any]:
    """A pool over `directory` of the connection's host for the time of the block: the
    one there is, else a transient one that vanishes afterwards (a file outside the
    pools, such as a UEFI variable store, then moves through libvirt like a volume).
    With `make`, a directory the host lacks is made."""
    found = pool_at(conn, directory)
    if found is not None:
        yield found
        return
    libvirt = libvirt_module()
    name = f"p2v-{os.getpid()}-{time.monotonic_ns()}"
    flags = libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD if make else 0
    with failing_as(f", opening {directory} as a storage pool"):
        made = conn.storagePoolCreateXML(_dir_pool_xml(name, directory), flags)
    try:
        yield made
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            made.destroy()


@contextlib.contextmanager
def file_volume(conn: Any, path: str) -> Iterator[Any]:
    """The file at `path` on the connection's host as a volume, or None when there is
    none, for the time of the block (through the pool over its directory, as
    directory_pool makes it)."""
    directory, name = posixpath.split(path)
    with directory_pool(conn, directory) as pool:
        refresh(pool)
        yield volume(pool, name)


def file_exists(conn: Any, path: str) -> bool:
    """Whether the connection's host has a file at `path` (its directory missing: no)."""
    try:
        with file_volume(conn, path) as vol:
            return vol is not None
    except ComponentError as error:
        if "No such file or directory" in str(error):
            return False
        raise


def volume_at(conn: Any, where: str) -> Any:
    """The volume at the path `where` on the connection's host, or None (no pool there
    holds that path)."""
    return _unless_missing(lambda: conn.storageVolLookupByPath(where))


def pool_of(vol: Any) -> Any:
    with failing_as(f", reading the volume {vol.name()}"):
        return vol.storagePoolLookupByVolume()


def pool_at(conn: Any, directory: str) -> Any:
    """The active pool whose target is `directory` on the connection's host, or None."""
    with failing_as(", listing the storage pools"):
        for candidate in conn.listAllStoragePools(0):
            if candidate.isActive() and pool_target(candidate) == directory.rstrip("/"):
                return candidate
    return None


def pool_target(storage_pool: Any) -> str:
    """The directory (or device) the pool keeps its volumes in."""
    return (ET.fromstring(storage_pool.XMLDesc(0)).findtext("target/path") or "").rstrip("/")


def same_storage(one: Any, other: Any) -> bool:
    """Whether two pools of two hosts are one storage (a shared file system): a volume
    made in `other` shows in `one`. The probe volume is removed again."""
    name = f".p2v-probe-{os.getpid()}-{time.monotonic_ns()}"
    probe = create_volume(other, name, 0)
    try:
        refresh(one)
        return volume(one, name) is not None
    finally:
        with failing_as(f", removing the probe volume {name} from {other.name()}"):
            probe.delete(0)
        with contextlib.suppress(Exception):
            one.refresh(0)


def path(vol: Any) -> str:
    """The volume's path on its own host (what a domain there names it by)."""
    with failing_as(f", reading the volume {vol.name()}"):
        return str(vol.path())


@contextlib.contextmanager
def _streaming(conn: Any, vol: Any, what: str, offset: int) -> Iterator[Any]:
    """A stream for one transfer; libvirt's failures, inside, become OSError (what
    the transfer engine's endpoints report), and the stream is aborted."""
    libvirt = libvirt_module()
    stream = conn.newStream(0)
    try:
        yield stream
        stream.finish()
    except libvirt.libvirtError as error:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        message = error.get_error_message()
        raise OSError(errno.EIO, f"{what} {vol.name()} at {offset}: {message}") from None


def write(conn: Any, vol: Any, offset: int, data: bytes | memoryview) -> None:
    """Write `data` into the volume at `offset`, through an upload stream."""
    with _streaming(conn, vol, "writing", offset) as stream:
        vol.upload(stream, offset, len(data), 0)
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            # The binding wants bytes; 4 MiB pieces keep the copy small.
            n = stream.send(bytes(view[sent : sent + _PIECE]))
            if n < 0:
                raise OSError(errno.EIO, f"the upload stream to {vol.name()} refused data")
            sent += n


def read(conn: Any, vol: Any, offset: int, length: int) -> bytes:
    """`length` bytes of the volume from `offset`, through a download stream."""
    chunks: list[bytes] = []
    with _streaming(conn, vol, "reading", offset) as stream:
        vol.download(stream, offset, length, 0)
        got = 0
        while got < length:
            data = stream.recv(min(_PIECE, length - got))
            if not data:
                break
            chunks.append(data)
            got += len(data)
    data = b"".join(chunks)
    if len(data) != length:
        came = f"{len(data)} of {length} bytes came"
        raise OSError(errno.EIO, f"reading {vol.name()} at {offset}: {came}")
    return data


def upload_file(conn: Any, vol: Any, source: str) -> None:
    """Fill the volume with a local raw file, sending its holes as holes."""
    libvirt = libvirt_module()
    fd = os.open(source, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        stream = conn.newStream(0)
        with failing_as(f", uploading {source} to {vol.name()}"):
            vol.upload(stream, 0, size, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            stream.sparseSendAll(_read_piece, _in_data, _skip, fd)
            stream.finish()
    finally:
        os.close(fd)


_PIECE = 4 << 20


def _read_piece(_stream: Any, nbytes: int, fd: int) -> bytes:
    return os.read(fd, min(nbytes, _PIECE))


def _in_data(_stream: Any, fd: int) -> tuple[bool, int]:
    """(in data, bytes until that data or hole ends), as sparseSendAll asks: False
    means a hole, sent as a hole and skipped. The file's position stays where it was."""
    here = os.lseek(fd, 0, os.SEEK_CUR)
    end = os.fstat(fd).st_size
    if here >= end:
        return False, 0
    try:
        data = os.lseek(fd, here, os.SEEK_DATA)
    except OSError:  # ENXIO: only a hole is left
        return False, end - here
    finally:
        os.lseek(fd, here, os.SEEK_SET)
    if data > here:
        return False, data - here
    hole = os.lseek(fd, here, os.SEEK_HOLE)
    os.lseek(fd, here, os.SEEK_SET)
    return True, hole - here


def _skip(_stream: Any, length: int, fd: int) -> int:
    os.lseek(fd, length, os.SEEK_CUR)
    return 0


def download_file(conn: Any, vol: Any, target: str) -> int:
    """Write the volume's whole file to the local file `target`; its size in bytes."""
    libvirt = libvirt_module()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stream = conn.newStream(0)
    try:
        vol.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        stream.sparseRecvAll(_write_piece, _make_hole, fd)
        stream.finish()
        size = os.lseek(fd, 0, os.SEEK_CUR)
        os.ftruncate(fd, size)  # a hole at the end leaves the size to set
        return size
    except libvirt.libvirtError as error:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        message = error.get_error_message()
        raise ComponentError(f"libvirt, downloading {vol.name()} to {target}: {message}") from None
    finally:
        os.close(fd)


def _write_piece(_stream: Any, data: bytes, fd: int) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return 0


def _make_hole(_stream: Any, length: int, fd: int) -> int:
    os.lseek(fd, length, os.SEEK_CUR)
    return 0
