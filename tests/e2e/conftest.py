from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def out() -> Iterator[Path]:
    """An output directory libvirt's QEMU user can reach (pytest's own are private)."""
    path = Path(tempfile.mkdtemp(prefix="p2v-convert-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)
