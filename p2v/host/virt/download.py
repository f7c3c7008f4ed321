"""A volume's file copied to this host through the libvirt connection, as its host
stores it (a qcow2 volume stays qcow2), its holes kept as holes."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from p2v.errors import ComponentError
from p2v.host.virt.connection import libvirt_module


def download_file(conn: Any, vol: Any, target: str) -> int:
    """Write the volume's whole file to the local file `target`; its size in bytes."""
    libvirt = libvirt_module()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stream = conn.newStream(0)
    try:
        vol.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        stream.sparseRecvAll(_write, _hole, fd)
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


def _write(_stream: Any, data: bytes, fd: int) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return 0


def _hole(_stream: Any, length: int, fd: int) -> int:
    os.lseek(fd, length, os.SEEK_CUR)
    return 0
