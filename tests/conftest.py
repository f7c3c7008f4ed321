"""Shared test set-up. A test that needs a missing component fails and names it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest


def require_programs(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.fail(f"missing component(s): {', '.join(missing)}; run `make setup`")


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"this test needs root: {why}")


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def attach_loop(image: Path, *options: str) -> str:
    """A loop device on `image`, writable unless --read-only is among `options`."""
    device = subprocess.run(
        ["losetup", "--find", "--show", *options, str(image)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if "--read-only" not in options:
        # An agent killed with SIGKILL cannot restore the kernel's read-only flag of a
        # device it served, and the flag outlives detaching a loop device.
        subprocess.run(["blockdev", "--setrw", device], check=True)
    return device


@pytest.fixture(autouse=True)
def _private_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test session gets its own P2V_HOME, never the user's real state."""
    monkeypatch.setenv("P2V_HOME", str(tmp_path_factory.getbasetemp() / "p2v-home"))


def fixture_image(name: str) -> Path:
    from tests.fixtures import builder

    require_programs("debootstrap", "sfdisk", "losetup", "qemu-system-x86_64")
    require_root("building fixtures uses loop devices")
    return builder.build(name)


@pytest.fixture(scope="session")
def vmguest_image() -> Path:
    """The test guest's image, built (or taken from the cache) once per session."""
    require_programs("qemu-img", "e2fsck", "debugfs", "extlinux", "gcc")
    return fixture_image("vmguest")
