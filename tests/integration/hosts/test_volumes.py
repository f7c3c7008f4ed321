"""A test host's storage volumes, filled and read through the libvirt connection:
copies (`volume:POOL/NAME@URI`), and whole files whose holes stay holes both ways."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2v.host import virt
from p2v.host.virt import storage
from tests import hosts
from tests.conftest import require_root
from tests.integration.transfer.disks import digest, p2v

MiB = 1 << 20


@pytest.fixture(scope="module")
def host() -> Iterator[hosts.TestHost]:
    require_root("test hosts are namespaces")
    with hosts.running(["p2vt-volumes"]) as [made]:
        yield made


def _image(path: Path) -> Path:
    """64 MiB: data, a hole, data."""
    with path.open("wb") as f:
        f.write(os.urandom(8 << 20))
        f.seek(48 << 20)
        f.write(os.urandom(16 << 20))
    return path


def test_a_file_copied_into_a_volume_and_back_keeps_its_digest(
    host: hosts.TestHost, tmp_path: Path
) -> None:
    source = _image(tmp_path / "disk.raw")
    volume = f"volume:default/copied.img@{host.uri}"
    p2v("copy", str(source), volume)
    assert digest(volume) == digest(source)
    back = tmp_path / "back.raw"
    p2v("copy", volume, str(back))
    assert back.read_bytes() == source.read_bytes()

    again = p2v("copy", str(source), volume, check=False)
    assert again.returncode == 2 and "exists; add --overwrite" in again.stderr
    p2v("copy", "--overwrite", "null:64M", volume)
    assert digest(volume) == digest("null:64M")


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("volume:nope/x.img@{uri}", "no storage pool 'nope'; its pools: default"),
        ("volume:default@{uri}", "a volume is named volume:POOL/NAME@URI"),
        ("volume:default/x.img@qemu+tcp://10.253.0.254/system", "did not answer within 3 s"),
    ],
)
def test_a_bad_volume_is_refused_in_one_line(
    host: hosts.TestHost, tmp_path: Path, target: str, says: str
) -> None:
    source = _image(tmp_path / "disk.raw")
    done = p2v("copy", "--connect-timeout", "3", str(source), target.format(uri=host.uri),
               check=False)  # fmt: skip
    assert done.returncode in (2, 4) and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


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
