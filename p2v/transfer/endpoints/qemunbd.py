"""Image formats (qcow2, vmdk, ...) reach the engine through a private qemu-nbd.

qemu-nbd listens on a Unix socket inside a directory only we can enter, so no
other local user can reach the unauthenticated export. The engine then talks NBD
to it like to any other server, with several connections when it allows them.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from p2v.errors import ComponentError
from p2v.qemu import find_program, image_info

_START_TIMEOUT = 15.0
_PR_SET_PDEATHSIG = 1
CONNECTIONS = 8


def image_format(path: str) -> str:
    """The format qemu-img sees in an image file (its own probe)."""
    return str(image_info(path)["format"])


def create_image(path: str, fmt: str, size: int) -> None:
    result = subprocess.run(
        [find_program("qemu-img"), "create", "-q", "-f", fmt, path, str(size)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ComponentError(f"qemu-img cannot create {path}: {_last_line(result.stderr)}")


class QemuNbdServer:
    """One qemu-nbd process serving one image until `stop()`."""

    def __init__(self, image: str, fmt: str, *, read_only: bool, bitmap: str | None = None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="p2v-nbd-"))  # mode 0700
        self.socket = str(self._dir / "nbd.sock")
        self._log = open(self._dir / "qemu-nbd.log", "w+b")  # noqa: SIM115 - kept until stop()
        argv = [
            find_program("qemu-nbd"),
            f"--socket={self.socket}",
            f"--format={fmt}",
            f"--shared={CONNECTIONS}",
            "--persistent",
        ]
        if read_only:
            # Direct I/O: reads skip the page cache, which costs CPU and memory.
            argv += ["--read-only", "--cache=none", "--aio=native"]
        else:
            argv += ["--cache=writeback", "--discard=unmap"]
        if bitmap:
            argv.append(f"--bitmap={bitmap}")
        self._proc = subprocess.Popen(
            [*argv, image],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready(image)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, image: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._log.seek(0)
                message = _last_line(self._log.read().decode(errors="replace"))
                raise ComponentError(f"qemu-nbd could not serve {image}: {message}")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(self.socket)
                return
            time.sleep(0.01)
        raise ComponentError(f"qemu-nbd did not start serving {image} in {_START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when we die, even by kill -9, so the image is let go."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
