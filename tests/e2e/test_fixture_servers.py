"""The test physical servers are realistic: they do not boot on virtio-blk.

That each boots on SATA as itself is checked when it is built (builder._check_boots),
once per recipe, since the cached image is the one that was checked; that it does not
boot on virtio-blk, once per cached image too.
Slow: boots Debian guests under QEMU (TCG on hosts where KVM does not work).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import fixture_image
from tests.fixtures import boot, recipes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _state(path: os.PathLike[str]) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def test_no_fixture_boots_on_virtio_blk() -> None:
    """What conversion must fix: no virtio driver in the initramfs, root named sda.
    Booted once per cached image (its name holds its recipe's hash), as the SATA boot
    is checked once per build: a stamp beside the image records that it was refused.
    Those not checked yet boot at once: each spends most of its time in the initramfs,
    waiting for a root that never comes (rootdelay), which costs no CPU."""
    images = {name: fixture_image(name) for name in sorted(recipes.RECIPES)}
    names = [n for n, image in images.items() if not _stamp(image).exists()]
    before = {name: _state(images[name]) for name in names}
    with ThreadPoolExecutor(max(1, len(names))) as pool:
        results = dict(
            zip(
                names,
                pool.map(
                    lambda n: boot.boot(images[n], recipes.RECIPES[n].firmware, "virtio"), names
                ),
                strict=True,
            )
        )
    for name, result in results.items():
        assert not result.booted, f"{name} booted on virtio-blk: {result.fields}"
        assert result.root_not_found, (
            f"{name} on virtio-blk should stop in the initramfs for want of its root:\n"
            f"{result.tail()}"
        )
        assert _state(images[name]) == before[name], "booting must not write the cached fixture"
        _stamp(images[name]).write_text("stopped in the initramfs on virtio-blk\n")


def _stamp(image: os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(image)}.virtio-refused")
