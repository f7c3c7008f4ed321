"""A local file uploaded into a test host's volume and downloaded back: the same
bytes, and its holes stay holes both ways."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2v.host import virt
from p2v.host.virt import storage
from tests import hosts
from tests.conftest import require_root

MiB = 1 << 20


@pytest.fixture(scope="module")
def host() -> Iterator[hosts.TestHost]:
    require_root("test hosts are namespaces")
    with hosts.running(["p2vt-volfiles"]) as [made]:
        yield made


def _sparse_file(path: Path) -> Path:
    """64 MiB: a hole, 8 MiB of data, a hole, 4 MiB of data, a hole to the end."""
    with path.open("wb") as f:
        f.seek(4 * MiB)
        f.write(os.urandom(8 * MiB))
        f.seek(40 * MiB)
        f.write(os.urandom(4 * MiB))
        f.truncate(64 * MiB)
    return path


def test_upload_and_download_keep_bytes_and_holes(host: hosts.TestHost, tmp_path: Path) -> None:
    source = _sparse_file(tmp_path / "source.raw")
    back = tmp_path / "back.raw"
    with virt.connection(host.uri) as conn:
        pool = virt.pool(conn, hosts.POOL)
        vol = virt.create_volume(pool, "roundtrip.raw", 64 * MiB)
        try:
            storage.upload_file(conn, vol, str(source))
            pool.refresh(0)
            # The host stores only the data: 12 MiB, not 64.
            assert storage.volume(pool, "roundtrip.raw").info()[2] < 16 * MiB
            assert storage.download_file(conn, vol, str(back)) == 64 * MiB
        finally:
            storage.delete_volume(vol)
    assert back.read_bytes() == source.read_bytes()
    assert os.stat(back).st_blocks * 512 < 16 * MiB
