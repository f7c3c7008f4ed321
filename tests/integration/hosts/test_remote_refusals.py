"""A conversion onto another host refuses, before anything is recorded or copied, a
pool the host does not have and a name the host already uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2v.host import virt
from tests import hosts
from tests.conftest import require_root
from tests.integration.transfer.disks import MiB, make_disk, p2v

TAKEN = """<domain type='qemu'><name>taken</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os></domain>"""


@pytest.fixture(scope="module")
def host() -> Iterator[hosts.TestHost]:
    require_root("test hosts are namespaces")
    with hosts.running(["p2vt-refusals"]) as [made]:
        with virt.connection(made.uri) as conn:
            virt.define(conn, TAKEN)
        yield made


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--name", "web", "--pool", "nope"], "no storage pool 'nope'; its pools: default"),
        (["--name", "taken"], "already has a domain 'taken'"),
    ],
)
def test_refused_before_anything_is_recorded(
    host: hosts.TestHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    extra: list[str], says: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("P2V_HOME", str(tmp_path / "state"))
    disk = tmp_path / "disk.raw"
    make_disk(disk, 16 * MiB, [])
    done = p2v("convert", "--disk", str(disk), "--target", "kvm", "-c", host.uri, *extra,
               check=False)  # fmt: skip
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert (
        "no jobs" in p2v("history").stdout.lower() or len(p2v("history").stdout.splitlines()) <= 1
    )
    with virt.connection(host.uri) as conn:
        assert [v.name() for v in virt.pool(conn, "default").listAllVolumes()] == []
