"""Local raw files and block devices, read and written with pread/pwrite.

Holes are found with SEEK_DATA/SEEK_HOLE and made with fallocate, so a sparse
source gives a sparse target. Sources are opened O_RDONLY: nothing in this module
can write to them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
from collections.abc import Iterator
from typing import Any

from p2v.jobs.owner import boot_id
from p2v.transfer.endpoints.base import Done, Endpoint, run_now
from p2v.transfer.extents import Extent, Kind

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_SYNC_FILE_RANGE_WRITE = 0x2
_SYNC_FILE_RANGE_WAIT_ALL = 0x1 | 0x2 | 0x4  # wait before, write, wait after
_DIRECT_ALIGN = 4096
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_BLKSSZGET = 0x1268
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64
]  # fmt: skip
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_MAP_FAILED = ctypes.c_void_p(-1).value
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Residency:
    """Which ranges of a file or block device the page cache holds, asked of
    mincore(2) about one read-only mapping of the whole of it that is never touched,
    so nothing is read. One mapping for the whole copy: mapping and unmapping each
    range would make every unmapping interrupt the other cores (TLB shootdowns)."""

    def __init__(self, fd: int, size: int) -> None:
        self._size = size
        self._address = None
        if size:
            address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if address not in (None, _MAP_FAILED):
                self._address = address

    def cached(self, offset: int, length: int) -> bool:
        """Whether all of [offset, offset + length) is in the page cache (`offset`
        page-aligned)."""
        if self._address is None or offset + length > self._size:
            return False
        pages = ctypes.create_string_buffer((length + _PAGE - 1) // _PAGE)
        if _libc.mincore(self._address + offset, length, pages) != 0:
            return False
        return b"\0" not in pages.raw  # one byte per page, 1 when resident

    def close(self) -> None:
        if self._address is not None:
            _libc.munmap(self._address, self._size)
            self._address = None


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Make [offset, offset + length) read as zeros and free its space.

    On a block device the kernel turns this into a zeroing discard.
    """
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def identity(path: str) -> dict[str, Any] | None:
    """What tells whether a file or block device changed since now; None when there
    is none at `path`. A file's writes change its modification time. A block device's
    node sees only the writes made through a node: what reaches the device another
    way (a file system mounted from it, a device mapper on top of it) shows in the
    sectors the kernel counts as written and discarded, which a reboot resets."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    found: dict[str, Any] = {
        "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "dev": st.st_dev,
    }  # fmt: skip
    if stat.S_ISBLK(st.st_mode):
        counted = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/stat"
        try:
            with open(counted) as f:
                fields = f.read().split()
        except OSError:
            return None  # nothing would tell writes by others
        found.update(boot=boot_id(), written=int(fields[6]),
                     discarded=int(fields[13]) if len(fields) > 13 else None)  # fmt: skip
    return found


def _logical_sector_size(fd: int) -> int:
    """A block device's logical sector size: the unit it reads and fails in."""
    try:
        raw = fcntl.ioctl(fd, _BLKSSZGET, struct.pack("i", 0))
    except OSError:
        return 512
    return max(512, struct.unpack("i", raw)[0])


class FileEndpoint(Endpoint):
    def __init__(self, path: str, fd: int, *, zero: bool = False, owner: bool = True) -> None:
        self.name = path
        self.fd = fd
        self.size = os.lseek(fd, 0, os.SEEK_END)
        self.is_block = stat.S_ISBLK(os.fstat(fd).st_mode)
        if self.is_block:
            self.sector_size = _logical_sector_size(fd)
        self._zero = zero
        self._owner = owner
        self._zero_by_writing = False
        self._direct = -1  # a second descriptor for direct reads, past the page cache
        self._residency: Residency | None = None  # what the page cache holds, for reads
        self._written: tuple[int, int] | None = None  # this clone's last write
        self._flusher = _Flusher(fd)  # shared by clones, like the descriptor
        # Also shared: the kernel lets one buffered write into a regular file at a
        # time and makes the others spin on its inode lock, burning a core; waiting
        # here sleeps. (A block device takes several, but a write only copies into
        # the page cache: short next to the disk's own work.)
        self._write_lock = threading.Lock()

    @classmethod
    def open_source(cls, path: str) -> FileEndpoint:
        source = cls(path, os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        # Direct reads skip the page cache: less CPU, and a big copy does not push
        # everything else out of memory. tmpfs and a few others refuse them.
        with contextlib.suppress(OSError):
            source._direct = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
            source._residency = Residency(source.fd, source.size)
        return source

    @classmethod
    def open_target(cls, path: str) -> FileEndpoint:
        """An existing file or block device, opened for writing."""
        return cls(path, os.open(path, os.O_RDWR | os.O_CLOEXEC))

    @classmethod
    def create(cls, path: str, size: int) -> FileEndpoint:
        """A new sparse file of `size` bytes; it reads as zeros."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        return cls(path, fd, zero=True)

    def extents(self, start: int, length: int) -> Iterator[Extent]:
        end = start + length
        if self.is_block:
            yield Extent(start, length, Kind.DATA)
            return
        pos = start
        while pos < end:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole from here to the end
                    data = end
                elif e.errno == errno.EINVAL:  # no SEEK_DATA: say it is all data
                    yield Extent(pos, end - pos, Kind.DATA)
                    return
                else:
                    raise
            data = min(data, end)
            if data > pos:
                yield Extent(pos, data - pos, Kind.ZERO)
            if data >= end:
                return
            hole = min(os.lseek(self.fd, data, os.SEEK_HOLE), end)
            yield Extent(data, hole - data, Kind.DATA)
            pos = hole

    def known_zero(self) -> bool:
        # A block device reports one data extent, so it is never taken for zeros.
        return self._zero or super().known_zero()

    def clone(self) -> FileEndpoint:
        # pread/pwrite take the offset with each call, so clones share the descriptor.
        twin = FileEndpoint.__new__(FileEndpoint)
        twin.__dict__.update(self.__dict__)
        twin._owner = False
        twin._written = None
        return twin

    def start_read(self, view: memoryview, offset: int, done: Done) -> None:
        run_now(lambda: self._read(view, offset), done)

    def _read(self, view: memoryview, offset: int) -> None:
        fd = self.fd
        # Data already in the page cache (an image just written, a golden image copied
        # again and again) is copied from there; the rest is read past it, directly.
        aligned = (offset | len(view)) % _DIRECT_ALIGN == 0  # callers' buffers are too
        if self._direct >= 0 and aligned:
            assert self._residency is not None
            if not self._residency.cached(offset, len(view)):
                fd = self._direct
        pos = 0
        while pos < len(view):
            n = os.preadv(fd, [view[pos:]], offset + pos)
            if n == 0:
                raise OSError(errno.EIO, f"unexpected end of file at offset {offset + pos}")
            pos += n

    def start_write(self, view: memoryview, offset: int, done: Done) -> None:
        run_now(lambda: self._write(view, offset), done)

    def _write(self, view: memoryview, offset: int) -> None:
        pos = 0
        with self._write_lock:
            while pos < len(view):
                pos += os.pwritev(self.fd, [view[pos:]], offset + pos)
        # Start writeback at once, wait for this thread's previous write to reach the
        # disk and drop it from the page cache: the disk stays busy from the start,
        # the copy goes at the disk's pace instead of piling up dirty pages for the
        # final flush, and a big copy does not push everything else out of memory.
        _libc.sync_file_range(self.fd, offset, len(view), _SYNC_FILE_RANGE_WRITE)
        if self._written is not None:
            lo, length = self._written
            _libc.sync_file_range(self.fd, lo, length, _SYNC_FILE_RANGE_WAIT_ALL)
            os.posix_fadvise(self.fd, lo, length, os.POSIX_FADV_DONTNEED)
        self._written = (offset, len(view))

    def start_zero(self, offset: int, length: int, done: Done) -> None:
        run_now(lambda: self._zero_range(offset, length), done)

    def _zero_range(self, offset: int, length: int) -> None:
        if not self._zero_by_writing:
            try:
                punch_hole(self.fd, offset, length)
                return
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                    raise
                self._zero_by_writing = True
        zeros = memoryview(bytes(min(length, 1 << 20)))
        pos = offset
        while pos < offset + length:
            chunk = min(len(zeros), offset + length - pos)
            self._write(zeros[:chunk], pos)
            pos += chunk

    def start_flush(self, done: Done) -> None:
        self._flusher.request(done)

    def forget_cache(self) -> None:
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if self._owner and self.fd >= 0:
            self._flusher.close()
            os.close(self.fd)
            self.fd = -1
            if self._direct >= 0:
                os.close(self._direct)
                self._direct = -1
            if self._residency is not None:
                self._residency.close()


class _Flusher:
    """fdatasync in a thread of its own, so that workers go on copying meanwhile.

    Requests that arrive while a sync runs are all served by the next one. The
    callbacks run in this thread, so they only set flags and fill queues.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._cond = threading.Condition()
        self._waiting: list[Done] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def request(self, done: Done) -> None:
        with self._cond:
            self._waiting.append(done)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting:
                    return
                batch, self._waiting = self._waiting, []
            error: OSError | None = None
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                error = e
            for done in batch:
                done(error)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
